"""Poses files and nerfstudio camera paths with non-numbers: one line naming the file, the pose and the key."""

from __future__ import annotations

import pytest

from immersivedepth.errors import InputError
from immersivedepth.render.poses import parse_nerfstudio_camera_path, parse_poses


@pytest.mark.parametrize("pose,key", [
    ({"position": "abc"}, "position"), ({"position": [1, "a", 3]}, "position"),
    ({"position": [0, 0, 0], "width": "wide"}, "width"), ({"position": [0, 0, 0], "height": [2]}, "height"),
    ({"position": [0, 0, 0], "fov_deg": "ninety"}, "fov_deg"),
])
def test_pose_non_numbers_named(pose, key):
    with pytest.raises(InputError) as info:
        parse_poses({"poses": [{"name": "p0", **pose}]}, source="poses.json")
    msg = str(info.value)
    assert msg.startswith(f"poses.json: pose #0 ('p0'): '{key}' must be ") and "fix the poses file" in msg


@pytest.mark.parametrize("data,words", [
    ({"camera_path": [5], "render_width": 4, "render_height": 2}, "camera_path[0] must be an object"),
    ({"camera_path": [{"camera_to_world": "x"}], "render_width": 4, "render_height": 2},
     "camera_path[0]: 'camera_to_world' must be 16 (or 12) numbers"),
    ({"camera_path": [{"camera_to_world": [0] * 16}], "render_width": "a", "render_height": 2},
     "'render_width' must be a whole number of pixels"),
    ({"camera_path": [{"camera_to_world": [0] * 16}], "render_width": 4, "render_height": 2, "fps": "fast"},
     "'fps' must be a number"),
])
def test_nerfstudio_malformed_entries_named(data, words):
    with pytest.raises(InputError, match=r"^path\.json") as info:
        parse_nerfstudio_camera_path(data, source="path.json")
    assert words in str(info.value)
