"""Camera paths and poses files (render/paths.py, render/poses.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from immersivedepth import sphere
from immersivedepth.render.paths import (
    FreeSpace,
    PathViolationError,
    headings_from_positions,
    make_path,
    validate_positions,
)
from immersivedepth.render.poses import (
    CameraPose,
    load_poses_file,
    pose_rays,
    save_poses_file,
)
from immersivedepth.scenes.synthetic import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene("living_room")


@pytest.fixture(scope="module")
def pano(scene):
    return scene.render_panorama(64, 128)


@pytest.fixture(scope="module")
def free(pano, scene):
    return FreeSpace(pano["distance"], margin=0.15, max_fraction=0.8, bounds=scene.bounds)


def _clearance(scene, pts):
    """Distance from each point to the nearest surface of the scene (positive in free space)."""
    from test_render_support import scene_sdf

    return scene_sdf(scene, pts)


@pytest.mark.parametrize("kind", ["tour", "circle", "spiral", "forward"])
def test_paths_stay_in_free_space(kind, free, scene):
    spec = {"kind": kind, "n_frames": 60, "type": "perspective" if kind == "forward" else "erp"}
    poses, fps = make_path(spec, free, on_violation="error")  # generators never need clamping
    assert fps == 30 and len(poses) == 60
    pos = np.stack([p.position for p in poses])
    assert not scene.occupancy(pos).any()
    # the margin from the distance map holds against the true geometry too (0.15 m, small slack for erosion)
    assert _clearance(scene, pos).min() > 0.1
    # smooth: no jump larger than 4x the median step
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert steps.max() < 4 * np.median(steps) + 1e-9
    assert np.linalg.norm(pos, axis=1).max() > 0.3  # it actually moves away from the centre


def test_tour_visits_several_rings(free):
    poses, _ = make_path({"kind": "tour", "n_frames": 240, "fractions": [0.2, 0.6]}, free)
    pos = np.stack([p.position for p in poses])
    az = np.arctan2(pos[:, 0], -pos[:, 2])
    rmax = free.horizontal_radius(az)
    frac = np.linalg.norm(pos[:, [0, 2]], axis=1) / rmax
    assert frac.min() < 0.3 and frac.max() > 0.5
    # closed loop: last frame is as close to the first as consecutive frames are to each other
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert np.linalg.norm(pos[-1] - pos[0]) < 2 * steps.mean()


def test_headings_follow_motion_and_are_smooth():
    a = np.linspace(0, 2 * np.pi, 100, endpoint=False)
    pos = np.stack([np.sin(a), np.zeros_like(a), -np.cos(a)], 1)  # counter-... moving toward +x first
    yaw = headings_from_positions(pos, closed=True, smooth_frames=2.0)
    # tangent of the circle at angle a points at yaw a + pi/2
    err = np.angle(np.exp(1j * (yaw - (a + np.pi / 2))))
    assert np.abs(err).max() < 0.05
    assert np.abs(np.diff(yaw)).max() < 0.1


def test_perspective_motion_heading_looks_forward(free):
    poses, _ = make_path({"kind": "circle", "n_frames": 40, "type": "perspective", "heading": "motion",
                          "radius_fraction": 0.4}, free)
    for k in (5, 20):
        fwd = poses[k].rotation[:, 2]
        vel = poses[k + 1].position - poses[k - 1].position
        assert np.dot(fwd, vel / np.linalg.norm(vel)) > 0.98
        # image "down" is world -y (upright camera)
        assert poses[k].rotation[1, 1] < -0.99


def test_violations_clamped_with_warning_or_rejected(free, pano):
    bad = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -50.0], [0.2, 0.0, 0.1]])
    with pytest.warns(UserWarning, match=r"1 of 3 poses .*pose p1 at \[0.0, 0.0, -50.0\]"):
        q = validate_positions(bad, free, names=["p0", "p1", "p2"])
    np.testing.assert_allclose(q[[0, 2]], bad[[0, 2]])
    # clamped radially to the safe radius along -z
    d_wall = float(sphere.erp_sample_dirs(free.eroded, np.array([0.0, 0.0, -1.0])))
    assert q[1, 2] == pytest.approx(-min(0.8 * d_wall, d_wall - 0.15), rel=1e-6)
    with pytest.raises(PathViolationError, match=r"pose p1 at \[0.0, 0.0, -50.0\].*on_violation=clamp"):
        validate_positions(bad, free, names=["p0", "p1", "p2"], on_violation="error")


def test_bounds_violation(scene, pano):
    lo, hi = scene.bounds
    fs = FreeSpace(np.full_like(pano["distance"], 100.0), margin=0.1, bounds=(lo, hi))
    with pytest.raises(PathViolationError, match="leave the scene bounds"):
        validate_positions(np.array([[0.0, hi[1] + 1.0, 0.0]]), fs, on_violation="error")
    with pytest.warns(UserWarning, match="clamped"):
        q = validate_positions(np.array([[0.0, 0.0, lo[2] - 3.0]]), fs, on_violation="clamp")
    assert q[0, 2] == pytest.approx(lo[2] + 0.1)


def test_erp_pose_rays_rotation():
    r = sphere.rotation_about_axis((0, 1, 0), -math.pi / 2)  # centre column turned toward +x
    p = CameraPose(position=[1, 2, 3], rotation=r, width=8, height=4)
    o, d = pose_rays(p)
    assert o.shape == (4, 8, 3) and np.allclose(o, [1, 2, 3])
    # every pixel looks where the world-aligned panorama's pixel at longitude + 90 deg looks
    lon, lat = sphere.erp_lonlat_grid(4, 8)
    np.testing.assert_allclose(d, sphere.lonlat_to_dir(lon + math.pi / 2, lat), atol=1e-6)


def test_poses_file_roundtrip(tmp_path):
    poses = [CameraPose(position=[0.1, 0.2, -0.3], name="a"),
             CameraPose(position=[0, 0, 0], rotation=sphere.yaw_pitch_roll(0.3, 0.1), type="perspective",
                        width=64, height=48, fov_deg=70.0, name="b")]
    path = save_poses_file(tmp_path / "poses.json", poses, fps=24)
    back, fps = load_poses_file(path)
    assert fps == 24
    for p, q in zip(poses, back):
        assert (p.name, p.type, p.width, p.height) == (q.name, q.type, q.width, q.height)
        np.testing.assert_allclose(p.position, q.position)
        np.testing.assert_allclose(p.rotation, q.rotation, atol=1e-12)
    assert back[1].fov_deg == 70.0


def test_nerfstudio_camera_path_import(tmp_path):
    c2w = np.eye(4)
    c2w[:3, 3] = [0.5, 0.1, -0.2]
    data = {"camera_type": "perspective", "render_height": 100, "render_width": 200, "fps": 24, "seconds": 1,
            "camera_path": [{"camera_to_world": c2w.reshape(-1).tolist(), "fov": 60.0, "aspect": 2.0}]}
    f = tmp_path / "camera_path.json"
    f.write_text(json.dumps(data))
    poses, fps = load_poses_file(f)
    assert fps == 24 and len(poses) == 1
    p = poses[0]
    np.testing.assert_allclose(p.position, [0.5, 0.1, -0.2])
    # OpenGL identity looks along world -z with +y up: OpenCV forward = -z, image down = -y
    np.testing.assert_allclose(p.rotation[:, 2], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(p.rotation[:, 1], [0, -1, 0], atol=1e-12)
    # vertical fov 60 deg -> horizontal fov for a 2:1 image
    assert p.fov_deg == pytest.approx(math.degrees(2 * math.atan(math.tan(math.radians(30)) * 2)))
    _, d = pose_rays(p)
    assert d[0, 100, 1] > 0  # top row looks up
    top_angle = math.degrees(math.atan2(d[0, 100, 1], -d[0, 100, 2]))
    assert top_angle == pytest.approx(30.0 * 99 / 100, abs=0.5)
    # equirectangular nerfstudio paths keep the rotation (same panorama frame as ours)
    yaw = sphere.rotation_about_axis((0, 1, 0), 0.4)
    c2w[:3, :3] = yaw
    data.update(camera_type="equirectangular", camera_path=[{"camera_to_world": c2w.reshape(-1).tolist()}])
    f.write_text(json.dumps(data))
    (q,), _ = load_poses_file(f)
    assert q.type == "equirectangular"
    np.testing.assert_allclose(q.rotation, yaw, atol=1e-12)


@pytest.mark.parametrize("payload, match", [
    ({"poses": [{"name": "a"}]}, r"pose #0 has no 'position'"),
    ({"poses": [{"name": "a", "position": [0, 0]}]}, r"'position' must be 3 finite numbers"),
    ({"poses": [{"name": "a", "position": [0, 0, 0], "rotation": [[2, 0, 0], [0, 1, 0], [0, 0, 1]]}]},
     r"not a proper rotation"),
    ({"poses": [{"name": "a", "position": [0, 0, 0], "type": "fisheye"}]}, r"unknown camera type 'fisheye'"),
    ({"poses": [{"name": "a", "position": [0, 0, 0]}, {"name": "a", "position": [1, 0, 0]}]}, r"duplicate name"),
    ({"poses": [{"name": "../x", "position": [0, 0, 0]}]}, r"plain file stem"),
    ({"cameras": []}, r"expected a JSON object with a 'poses' list"),
    ({"camera_path": [{"camera_to_world": [1, 0, 0]}], "render_width": 4, "render_height": 2},
     r"camera_path\[0\]: 'camera_to_world' must be a flattened 4x4"),
])
def test_bad_poses_files(tmp_path, payload, match):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=match):
        load_poses_file(f)


def test_missing_and_broken_poses_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json does not exist; pass render.poses_file"):
        load_poses_file(tmp_path / "nope.json")
    f = tmp_path / "broken.json"
    f.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        load_poses_file(f)


def test_bad_path_specs(free):
    with pytest.raises(ValueError, match=r"render path 'zigzag': kind must be one of tour, circle, spiral, forward"):
        make_path({"kind": "zigzag"}, free)
    with pytest.raises(ValueError, match=r"render path 'file': file is needed for kind file \(our poses JSON"):
        make_path({"kind": "file"}, free)
    with pytest.raises(ValueError, match=r"unknown key render path.radius_fractio; valid keys under render path: "):
        make_path({"kind": "spiral", "radius_fractio": [0.1, 0.5]}, free)
    with pytest.raises(ValueError, match=r"needs the distance map"):
        make_path({"kind": "tour"}, None)
    with pytest.raises(ValueError, match="distance map has no valid pixel"):
        FreeSpace(np.zeros((8, 16)))
