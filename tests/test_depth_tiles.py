"""Tangent tiles: cameras, ERP windows, weights, anti-aliased extraction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from immersivedepth import sphere
from immersivedepth.depth.tiles import (
    antialias_factor,
    border_weight,
    extract_tiles,
    fibonacci_sphere,
    make_tile_cameras,
    tile_erp_window,
)


def test_tile_counts_and_indices():
    assert len(make_tile_cameras(64)) == 20
    assert len(make_tile_cameras(64, level=1)) == 80
    multi = make_tile_cameras((48, 64), fov_deg=[80.0, 100.0])
    assert len(multi) == 40
    assert [c.index for c in multi] == list(range(40))
    assert multi[0].height == 48 and multi[0].width == 64
    assert multi[0].fov_deg[0] == pytest.approx(80.0)
    assert multi[20].fov_deg[0] == pytest.approx(100.0)
    # every direction of the sphere is seen by at least one default tile
    dirs = fibonacci_sphere(5000)
    seen = np.zeros(len(dirs), bool)
    for cam in make_tile_cameras(64):
        seen |= cam.project(dirs)[2]
    assert seen.all()


def test_bad_tile_arguments():
    with pytest.raises(ValueError, match="at least 8x8"):
        make_tile_cameras(4)
    with pytest.raises(ValueError, match="empty list"):
        make_tile_cameras(64, fov_deg=[])


@pytest.mark.parametrize(("level", "fov"), [(0, None), (1, None), (0, [60.0, 120.0])])
def test_erp_window_contains_the_whole_footprint(level, fov):
    h, w = 64, 128
    for cam in make_tile_cameras(32, level=level, fov_deg=fov):
        mask, _, _ = cam.erp_footprint(h, w)
        (r0, r1), cols = tile_erp_window(cam, h, w)
        inside = np.zeros((h, w), bool)
        inside[r0:r1][:, cols] = True
        assert not (mask & ~inside).any(), f"tile {cam.index} footprint leaves its window"
        assert len(np.unique(cols)) == len(cols)


def test_border_weight_shape():
    wgt = border_weight(10, 20, power=2.0)
    assert wgt.shape == (10, 20)
    assert wgt.max() <= 1.0 and wgt.min() > 0.0
    # symmetric, largest in the middle, edge pixels ~ (1/W * 1)^2 small
    np.testing.assert_allclose(wgt, wgt[::-1, ::-1], rtol=1e-6)
    assert wgt[5, 10] == pytest.approx((0.9 * 0.95) ** 2, rel=1e-5)
    assert wgt[0, 10] == pytest.approx((0.1 * 0.95) ** 2, rel=1e-5)
    np.testing.assert_array_equal(border_weight(4, 4, power=0), np.ones((4, 4)))


def test_antialias_factor_and_extraction():
    cam = make_tile_cameras(32)[0]
    # a 32 px tile over ~90 deg: one tile pixel ~ 2.8 deg; a 1024-wide ERP pixel ~ 0.35 deg
    assert antialias_factor(cam, 512, 1024) == 4
    assert antialias_factor(cam, 512, 1024, max_factor=2) == 2
    assert antialias_factor(make_tile_cameras(512)[0], 64, 128) == 1
    # constant image -> constant tiles
    erp = np.full((64, 128, 3), 0.25, np.float32)
    t = extract_tiles(erp, make_tile_cameras(16))
    assert t.shape == (20, 16, 16, 3)
    np.testing.assert_allclose(t, 0.25, atol=1e-6)
    # 1-pixel vertical stripes: anti-aliasing averages them towards 0.5
    stripes = np.zeros((256, 512, 3), np.float32)
    stripes[:, ::2] = 1.0
    cams = make_tile_cameras(24)[:3]
    aa = extract_tiles(stripes, cams, antialias=True)
    raw = extract_tiles(stripes, cams, antialias=False)
    assert np.abs(aa - 0.5).mean() < 0.5 * np.abs(raw - 0.5).mean()


def test_extract_tiles_matches_projection():
    """A tile pixel shows the ERP colour of the direction its centre ray points to."""
    h, w = 64, 128
    lon, lat = sphere.erp_lonlat_grid(h, w)
    erp = np.stack([np.sin(lon) * 0.5 + 0.5, np.cos(lon) * 0.5 + 0.5, np.sin(lat) * 0.5 + 0.5], -1).astype(np.float32)
    cam = make_tile_cameras(16)[7]
    tile = extract_tiles(erp, [cam], antialias=False)[0]
    d = cam.rays()
    lo, la = sphere.dir_to_lonlat(d)
    expect = np.stack([np.sin(lo) * 0.5 + 0.5, np.cos(lo) * 0.5 + 0.5, np.sin(la) * 0.5 + 0.5], -1)
    assert np.abs(tile - expect).max() < 0.03


def test_fibonacci_sphere_uniform():
    d = fibonacci_sphere(4000)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    assert np.abs(d.mean(axis=0)).max() < 2e-3
    # fraction in the polar cap |y| > 0.5 equals its area fraction 1/2
    assert np.mean(np.abs(d[:, 1]) > 0.5) == pytest.approx(0.5, abs=2e-3)
    assert math.isclose(len(d), 4000)
    with pytest.raises(ValueError, match="sphere samples"):
        fibonacci_sphere(0)
