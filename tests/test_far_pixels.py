"""Pixels without a distance through the depth stage: encoding (0 = unknown, +inf = far), confidence, point clouds,
meshes, the log line, and the errors for maps with nothing valid."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from immersivedepth import io, sphere
from immersivedepth.depth.normals import normals_from_distance
from immersivedepth.depth.oracle import OracleDepthModel
from immersivedepth.depth.outputs import far_fractions, write_depth_outputs
from immersivedepth.depth.pipeline import DepthConfig, estimate_distance, far_regions
from immersivedepth.depth.registry import DepthModelError
from immersivedepth.render.depth_mesh import depth_mesh
from immersivedepth.scenes.synthetic import make_scene
from immersivedepth.train.dataset import PanoramaRays

H, W = 64, 128


def test_far_regions_marks_no_value_and_beyond_the_ratio():
    d = np.full((4, 8), 2.0)
    d[0, 0] = 0.0  # no valid tile value
    d[0, 1] = np.nan
    d[1, 2] = 2.0 * 50.0 + 1e-6  # just beyond far_ratio x median
    d[1, 3] = 2.0 * 50.0  # exactly at the limit: still a distance
    out, far = far_regions(d, 50.0)
    assert far.sum() == 3 and far[0, 0] and far[0, 1] and far[1, 2] and not far[1, 3]
    assert np.all(out[far] == 0) and np.all(out[~far] == d[~far])
    with pytest.raises(ValueError, match=r"depth.far_ratio must be > 1"):
        DepthConfig.from_mapping({"far_ratio": 1.0})


def test_far_fractions_count_unknown_and_far_separately():
    d = np.ones((10, 20), np.float32)
    d[:2] = np.inf
    d[5, :10] = 0.0
    d[6, 0] = np.nan
    assert far_fractions(d) == pytest.approx({"unknown": 11 / 200, "far": 40 / 200, "no_distance": 51 / 200})


@pytest.fixture(scope="module")
def open_room():
    return make_scene("open_room").render_panorama(H, W)


def test_sky_from_the_networks_is_far_not_a_wall(open_room):
    """The oracle network sees the open door / window as disparity ~ 0 (then an unknown affine map, as real networks
    do): the output stores +inf there, confidence 0, and the depth mesh has no triangle beyond the room."""
    gt_far = np.isinf(open_room["distance"])
    assert gt_far.mean() > 0.01
    model = OracleDepthModel(scene="open_room", input_size=64, seed=3)
    cfg = DepthConfig.from_mapping({"progress": False, "models": [], "align": {"samples": 4000}})
    res = estimate_distance(open_room["rgb"], [("o", model)], cfg, reference=open_room["distance"])
    far = np.isposinf(res.distance)
    assert res.info["far_fraction"] == pytest.approx(far.mean())
    # the far region is the openings (tile resampling may move its border by a pixel)
    assert (far & gt_far).sum() >= 0.8 * gt_far.sum() and (far & ~gt_far).sum() <= 0.2 * gt_far.sum()
    assert np.all(res.confidence[far] == 0)
    assert np.all(np.isfinite(res.distance[~far]) & (res.distance[~far] > 0))
    lo, hi = make_scene("open_room").bounds
    mesh = depth_mesh(open_room["rgb"], res.distance)
    assert np.all(np.abs(mesh.vertices) <= np.maximum(-lo, hi).max() * 1.1)  # nothing pushed to a far "wall"


def test_depth_outputs_with_a_hemisphere_of_sky(tmp_path, open_room, caplog):
    """Half the panorama has no distance: handled, one log line says how much, confidence 0 and no points there."""
    dist = open_room["distance"].astype(np.float32)
    dist[np.isinf(dist)] = 0.0  # the openings: unknown (sensor style)
    dist[: H // 2] = np.inf  # the upper hemisphere: far (sky)
    normals = normals_from_distance(dist)
    with caplog.at_level(logging.INFO, logger="immersivedepth.depth"):
        paths = write_depth_outputs(tmp_path, open_room["rgb"], dist, normals, np.ones((H, W), np.float32),
                                    point_stride=1)
    lines = [r.getMessage() for r in caplog.records if "no distance" in r.getMessage()]
    fr = far_fractions(dist)
    assert len(lines) == 1 and f"{100 * fr['no_distance']:.1f}% of the panorama has no distance" in lines[0]
    assert f"{100 * fr['far']:.1f}% far = +inf" in lines[0] and fr["far"] == 0.5
    stored = np.load(paths["distance.npy"])
    np.testing.assert_array_equal(stored, dist)  # 0 and +inf kept as they are
    conf = np.load(paths["confidence.npy"])
    valid = np.isfinite(dist) & (dist > 0)
    assert np.all(conf[~valid] == 0) and np.all(conf[valid] == 1)
    pts = io.read_ply(paths["points.ply"])["points"]
    assert len(pts) == int(valid.sum()) and np.isfinite(pts).all()
    # training accepts it: the sky and the openings become colour-only far rays
    rays = PanoramaRays(open_room["rgb"], dist)
    assert len(rays) == int(valid.sum()) and len(rays.far_rgb) == H * W - int(valid.sum())
    far_dirs = rays.far_dirs.numpy()
    np.testing.assert_allclose(far_dirs, sphere.erp_directions(H, W)[~valid], atol=0)


def test_maps_without_any_distance_keep_their_clear_errors(open_room):
    dist = np.full((H, W), np.inf, np.float32)
    with pytest.raises(ValueError, match=r"only 0.0% of the distance map is valid .*field.masks.min_valid_fraction"):
        PanoramaRays(open_room["rgb"], dist)
    model = OracleDepthModel(scene="open_room", input_size=64)
    cfg = DepthConfig.from_mapping({"progress": False, "models": [], "align": {"samples": 2000},
                                    "min_valid_fraction": 0.999})
    with pytest.raises(DepthModelError, match=r"has a finite distance \(depth.min_valid_fraction=0.999\)"):
        estimate_distance(open_room["rgb"], [("o", model)], cfg)
