"""Gaussian-splat export (render/splat.py): file layout, geometry against analytic scenes, cuts, stage wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh
from plyfile import PlyData
from scipy.spatial.transform import Rotation
from test_render_support import scene_sdf

from immersivedepth import sphere
from immersivedepth.config import from_mapping
from immersivedepth.depth.normals import normals_from_distance
from immersivedepth.errors import ConfigError, InputError
from immersivedepth.render.config import SplatExport
from immersivedepth.render.splat import (
    SH_C0,
    SPLAT_PROPERTIES,
    SplatOptions,
    export_splat,
    splats_from_distance,
    write_splat_ply,
)
from immersivedepth.render.stage import export_depth_products
from immersivedepth.scenes.synthetic import make_scene

H, W = 64, 128


@pytest.fixture(scope="module")
def scene():
    return make_scene("living_room")


@pytest.fixture(scope="module")
def pano(scene):
    return scene.render_panorama(128, 256)


def _covariances(quats_wxyz: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """3DGS covariance ``R diag(s)^2 R^T`` ``(N, 3, 3)`` from the file's quaternions and (linear) scales."""
    rot = Rotation.from_quat(np.concatenate([quats_wxyz[:, 1:], quats_wxyz[:, :1]], axis=1)).as_matrix()
    return np.einsum("nij,nj,nkj->nik", rot, scales**2, rot)


def test_sphere_gives_every_pixel_with_analytic_footprint():
    """On a sphere of radius R around the centre nothing is cut: one Gaussian per strided pixel, on the sphere,
    normal -ray (up to the one-sided differences of the distance map's normals: within a pixel's angle), in-plane
    standard deviations 0.5 * R * (cos(lat) dlon, dlat), thickness 2 % of the smaller."""
    R = 2.5
    for stride in (1, 2, 4):
        sp = splats_from_distance(None, np.full((H, W), R), SplatOptions(stride=stride))
        h, w = H // stride, W // stride
        assert len(sp) == h * w and sp.grid == (h, w)
        np.testing.assert_allclose(np.linalg.norm(sp.means, axis=1), R, rtol=1e-6)
        rays = sp.means / R
        pixel_angle = math.pi / h
        assert np.all(np.einsum("ij,ij->i", sp.normals, -rays) >= math.cos(pixel_angle))
        lat = math.pi / 2 - (sp.pixel[:, 0] * stride + stride // 2 + 0.5) / H * math.pi  # the block's centre pixel
        ext = np.stack([R * np.cos(lat) * 2 * math.pi / w, np.full_like(lat, R * math.pi / h)], axis=1)
        # a normal tilted by up to a pixel's angle stretches the footprint by up to 1 / cos(that angle)
        tilt = 1.0 / math.cos(pixel_angle) - 1.0
        np.testing.assert_allclose(sp.scales[:, 0], 0.5 * ext.max(1), rtol=tilt)
        np.testing.assert_allclose(sp.scales[:, 1], 0.5 * ext.min(1), rtol=tilt)
        np.testing.assert_allclose(sp.scales[:, 2], 0.02 * sp.scales[:, 1], rtol=1e-5)


def test_centres_lie_on_the_distance_maps_rays_at_block_centres(pano):
    d, s = pano["distance"], 2
    sp = splats_from_distance(pano["rgb"], d, SplatOptions(stride=s))
    rows, cols = sp.pixel[:, 0] * s + s // 2, sp.pixel[:, 1] * s + s // 2
    dirs = sphere.erp_directions(*d.shape, np.float64)[rows, cols]
    np.testing.assert_allclose(sp.means, dirs * d[rows, cols, None], atol=2e-6)
    # colour = block average of the panorama
    block = pano["rgb"].reshape(64, 2, 128, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(sp.colors, block[sp.pixel[:, 0], sp.pixel[:, 1]], atol=1e-6)


def test_centres_on_the_true_surfaces_and_normals_from_the_distance_map(scene, pano):
    sp = splats_from_distance(pano["rgb"], pano["distance"], SplatOptions(stride=2))
    off = np.abs(scene_sdf(scene, sp.means.astype(np.float64)))
    assert np.percentile(off, 99) < 0.01 and off.max() < 0.05
    d2 = pano["distance"][1::2, 1::2]
    expect = normals_from_distance(d2)[sp.pixel[:, 0], sp.pixel[:, 1]]
    np.testing.assert_allclose(sp.normals, expect, atol=1e-6)
    # the normal is the Gaussian's thin axis: third column of its rotation
    rot = Rotation.from_quat(np.concatenate([sp.quats[:, 1:], sp.quats[:, :1]], axis=1)).as_matrix()
    np.testing.assert_allclose(rot[:, :, 2], sp.normals, atol=1e-5)
    # and it agrees with the scene's analytic normals (toward the centre) on almost every Gaussian
    true_n = pano["normal"][1::2, 1::2][sp.pixel[:, 0], sp.pixel[:, 1]]
    true_n = true_n * -np.sign(np.einsum("ij,ij->i", true_n, sp.means))[:, None]
    cos = np.einsum("ij,ij->i", true_n, sp.normals)
    assert np.mean(cos > math.cos(math.radians(5))) > 0.9 and np.median(cos) > math.cos(math.radians(1))


def test_y_up_axes():
    """A floor 1.5 below the centre (bottom half) and a ceiling 1 above it (top half): the floor's Gaussians
    have y = -1.5 and normal +y, the ceiling's y = +1 and normal -y; the centre column looks along -z."""
    lat = math.pi / 2 - (np.arange(H) + 0.5) / H * math.pi
    d = np.where(lat < 0, 1.5 / np.maximum(-np.sin(lat), 1e-9), 1.0 / np.maximum(np.sin(lat), 1e-9))
    d = np.repeat(d[:, None], W, axis=1)
    d = np.minimum(d, 50.0)  # keep the horizon rows finite (they are grazing and cut anyway)
    sp = splats_from_distance(None, d, SplatOptions(stride=1))
    floor, ceil = sp.means[:, 1] < 0, sp.means[:, 1] > 0
    assert floor.sum() > 0 and ceil.sum() > 0
    np.testing.assert_allclose(sp.means[floor, 1], -1.5, rtol=1e-5)
    np.testing.assert_allclose(sp.means[ceil, 1], 1.0, rtol=1e-5)
    np.testing.assert_allclose(sp.normals[floor], np.tile([0, 1, 0], (floor.sum(), 1)), atol=1e-4)
    np.testing.assert_allclose(sp.normals[ceil], np.tile([0, -1, 0], (ceil.sum(), 1)), atol=1e-4)
    centre = (sp.pixel[:, 1] == W // 2 - 1) | (sp.pixel[:, 1] == W // 2)
    assert np.all(sp.means[centre & floor, 2] < 0)


def test_oblique_footprint_matches_finite_differences_on_a_plane():
    """Floor plane y = -1.5: each Gaussian's in-plane covariance equals 0.25 (a a^T + b b^T) where a and b are the
    floor points one pixel apart in longitude / latitude (intersections of the neighbouring rays)."""
    h, w = 256, 512
    lat = math.pi / 2 - (np.arange(h) + 0.5) / h * math.pi
    d = np.where(lat < 0, 1.5 / np.maximum(-np.sin(lat), 1e-9), 0.0)
    d = np.repeat(d[:, None], w, axis=1)
    sp = splats_from_distance(None, d, SplatOptions(stride=1, max_grazing_deg=80.0))
    assert len(sp) > 0
    lon_c = (sp.pixel[:, 1] + 0.5) / w * 2 * math.pi - math.pi
    lat_c = math.pi / 2 - (sp.pixel[:, 0] + 0.5) / h * math.pi

    def on_floor(lon, la):
        dirs = sphere.lonlat_to_dir(lon, la)
        return dirs * (1.5 / -dirs[:, 1:2])

    dl, dt = 2 * math.pi / w, math.pi / h
    a = on_floor(lon_c + dl / 2, lat_c) - on_floor(lon_c - dl / 2, lat_c)
    b = on_floor(lon_c, lat_c + dt / 2) - on_floor(lon_c, lat_c - dt / 2)
    expect = 0.25 * (np.einsum("ni,nj->nij", a, a) + np.einsum("ni,nj->nij", b, b))
    cov = _covariances(sp.quats.astype(np.float64), sp.scales.astype(np.float64))
    # drop the (tiny) normal-direction variance before comparing
    n = sp.normals.astype(np.float64)
    proj = np.eye(3) - np.einsum("ni,nj->nij", n, n)
    cov_plane = proj @ cov @ proj
    scale = np.linalg.norm(expect, axis=(1, 2))
    err = np.linalg.norm(cov_plane - expect, axis=(1, 2)) / scale
    assert np.percentile(err, 99) < 3e-3 and err.max() < 1e-2


def test_discontinuities_and_grazing_surfaces_are_cut():
    d = np.full((H, W), 3.0)
    d[20:40, 40:60] = 1.0          # a box in front of the wall: both sides of its edge keep their Gaussians
    d[10, 10] = 0.5                # a flying pixel: no continuous neighbour at all -> cut
    d[50, 100] = 0.0               # invalid -> cut
    sp = splats_from_distance(None, d, SplatOptions(stride=1))
    kept = np.zeros((H, W), bool)
    kept[sp.pixel[:, 0], sp.pixel[:, 1]] = True
    assert not kept[10, 10] and not kept[50, 100]
    assert kept[20:40, 40:60].all()
    wall = np.ones((H, W), bool)
    wall[20:40, 40:60] = wall[10, 10] = wall[50, 100] = False
    assert kept[wall].all()
    assert len(sp) == H * W - 2
    # a surface seen edge-on: a floor's rows near the horizon are grazing
    lat = math.pi / 2 - (np.arange(H) + 0.5) / H * math.pi
    floor = np.repeat(np.where(lat < 0, 1.5 / np.maximum(-np.sin(lat), 1e-9), 0.0)[:, None], W, axis=1)
    sp = splats_from_distance(None, floor, SplatOptions(stride=1, max_grazing_deg=60.0))
    cos_view = np.abs(np.einsum("ij,ij->i", sp.normals, sp.means / np.linalg.norm(sp.means, axis=1, keepdims=True)))
    assert len(sp) > 0 and cos_view.min() >= math.cos(math.radians(60.0)) - 1e-6
    assert np.all(np.abs(lat[sp.pixel[:, 0]]) >= math.radians(30.0) - math.pi / H)


def test_ply_layout_round_trip_plyfile_and_trimesh(tmp_path, pano):
    sp = splats_from_distance(pano["rgb"], pano["distance"], SplatOptions(stride=4))
    path = write_splat_ply(tmp_path / "scene_splat.ply", sp)
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    v = ply["vertex"]
    assert tuple(p.name for p in v.properties) == SPLAT_PROPERTIES
    assert all(v[name].dtype == np.float32 for name in SPLAT_PROPERTIES)
    assert len(v.data) == len(sp)
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    np.testing.assert_array_equal(xyz, sp.means)
    rgb = 0.5 + SH_C0 * np.stack([v[f"f_dc_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(rgb, sp.colors, atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-v["opacity"])), 0.95, atol=1e-6)
    np.testing.assert_allclose(np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], 1)), sp.scales, rtol=1e-5)
    q = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.stack([v["nx"], v["ny"], v["nz"]], 1), sp.normals)
    cloud = trimesh.load(str(path))
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == len(sp)
    np.testing.assert_allclose(cloud.vertices, sp.means, atol=1e-6)
    assert not list(tmp_path.glob(".tmp-*"))


def test_export_depth_products_writes_the_splat_by_default(tmp_path, pano):
    res = export_depth_products(tmp_path, pano["rgb"], pano["distance"], mesh=False, points=False)
    ply = PlyData.read(str(tmp_path / "scene_splat.ply"))
    assert res["n_splats"] == len(ply["vertex"].data) > 0.9 * 64 * 128  # stride 2 of 128x256, few cuts
    off = tmp_path / "off"
    res = export_depth_products(off, pano["rgb"], pano["distance"], mesh=False, points=False, splat=False)
    assert "n_splats" not in res and not (off / "scene_splat.ply").exists()


def test_bad_options_and_empty_splat_are_one_line_errors(tmp_path):
    with pytest.warns(UserWarning, match=r"render\.export\.splat\.stride=3 does not divide the panorama size "
                                         r"128x64; using stride 2"):
        sp = splats_from_distance(None, np.ones((H, W)), SplatOptions(stride=3))
    assert sp.grid == (H // 2, W // 2) and len(sp) == H * W // 4
    with pytest.raises(ConfigError, match=r"render\.export\.splat\.stride must be > 0, got 0"):
        SplatOptions(stride=0)
    with pytest.raises(ConfigError, match=r"unknown key render\.export\.splat\.sigma; valid keys under "
                                          r"render\.export\.splat: enabled, max_depth_ratio"):
        from_mapping(SplatExport, {"sigma": 1.0}, "render.export.splat")
    with pytest.raises(ConfigError, match=r"render\.export\.splat\.opacity must be in \(0, 1\)"):
        from_mapping(SplatExport, {"opacity": 1.0}, "render.export.splat")
    with pytest.raises(InputError, match="Gaussian splat is empty"):
        export_splat(tmp_path / "s.ply", None, np.zeros((H, W)))
    assert not (tmp_path / "s.ply").exists()
