"""Analytic tests of the spherical conventions in ``immersivedepth.sphere``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from immersivedepth import sphere as S


def test_pixel_dir_pixel_round_trip_numpy():
    rng = np.random.default_rng(1)
    w, h = 2048, 1024
    u = rng.uniform(-0.5, w - 0.5, 20000)
    v = rng.uniform(-0.49, h - 0.51, 20000)
    uu, vv = S.dir_to_pixel(S.pixel_to_dir(u, v, w, h), w, h)
    assert np.abs(uu - u).max() < 1e-6
    assert np.abs(vv - v).max() < 1e-6


def test_pixel_dir_pixel_round_trip_torch():
    w, h = 1024, 512
    u = torch.rand(5000, dtype=torch.float64) * w - 0.5
    v = torch.rand(5000, dtype=torch.float64) * (h - 0.02) - 0.49
    d = S.pixel_to_dir(u, v, w, h)
    assert isinstance(d, torch.Tensor) and d.shape == (5000, 3)
    uu, vv = S.dir_to_pixel(d, w, h)
    assert torch.allclose(uu, u, atol=1e-6) and torch.allclose(vv, v, atol=1e-6)


def test_convention_landmarks():
    # centre column looks along -z, a quarter turn right is +x, row 0 is near the zenith
    w, h = 8, 4
    d = S.lonlat_to_dir(np.array([0.0, math.pi / 2, 0.0]), np.array([0.0, 0.0, math.pi / 2]))
    np.testing.assert_allclose(d, [[0, 0, -1], [1, 0, 0], [0, 1, 0]], atol=1e-12)
    lon, lat = S.pixel_to_lonlat(np.array([w / 2 - 0.5]), np.array([0.0]), w, h)
    assert abs(lon[0]) < 1e-12 and lat[0] == pytest.approx(math.pi / 2 - math.pi / 8)
    # directions are unit and the grid is right-handed: x cross y = z
    dirs = S.erp_directions(16, 32)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.cross([1, 0, 0], [0, 1, 0]), [0, 0, 1])


def test_solid_angle_and_cos_weights():
    sa = S.pixel_solid_angle(64, 128)
    assert sa.sum() == pytest.approx(4 * math.pi, rel=1e-12)
    w = S.cos_lat_weights(64, 128)
    # cos(lat) * dlon * dlat approximates the exact solid angle to second order
    approx = w * (2 * math.pi / 128) * (math.pi / 64)
    np.testing.assert_allclose(approx, sa, rtol=2e-3)


def test_icosahedron_geometry():
    v, f = S.icosahedron()
    assert v.shape == (12, 3) and f.shape == (20, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
    # every edge has the same length and every face is equilateral (all angles 60 degrees)
    edges = {tuple(sorted((a, b))) for tri in f for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0]))}
    assert len(edges) == 30
    lengths = np.array([np.linalg.norm(v[a] - v[b]) for a, b in edges])
    edge = 4 / math.sqrt(10 + 2 * math.sqrt(5))  # edge of an icosahedron of circumradius 1
    np.testing.assert_allclose(lengths, edge, rtol=1e-12)
    for tri in f:
        p = v[tri]
        for k in range(3):
            a, b = p[(k + 1) % 3] - p[k], p[(k + 2) % 3] - p[k]
            ang = math.degrees(math.acos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
            assert ang == pytest.approx(60.0, abs=1e-9)
        # counter-clockwise seen from outside: the face normal points away from the centre
        assert np.cross(p[1] - p[0], p[2] - p[0]) @ p.mean(0) > 0
    # face centres (before normalisation) all lie at the inradius
    c = v[f].mean(axis=1)
    inradius = math.sqrt(3) / 12 * (3 + math.sqrt(5)) * edge
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), inradius, rtol=1e-12)
    centres = S.icosahedron_face_centers()
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-12)
    # neighbouring face centres are 41.81 degrees apart (the icosahedron's dihedral supplement)
    cosines = centres @ centres.T
    np.fill_diagonal(cosines, -1)
    nearest = np.degrees(np.arccos(cosines.max(axis=1)))
    np.testing.assert_allclose(nearest, math.degrees(math.acos(math.sqrt(5) / 3)), atol=1e-9)


def test_subdivision_counts():
    for level, (nv, nf) in enumerate([(12, 20), (42, 80), (162, 320)]):
        v, f = S.subdivided_icosahedron(level)
        assert v.shape == (nv, 3) and f.shape == (nf, 3)
        assert nv - (nv + nf - 2) + nf == 2  # Euler: V - E + F = 2 with E = V + F - 2
    with pytest.raises(ValueError, match="subdivision level must be >= 0"):
        S.subdivided_icosahedron(-1)


@pytest.mark.parametrize("level", [0, 1])
def test_tangent_tiles_cover_the_sphere(level):
    cams = S.tangent_cameras(64, level=level, padding=0.0 if level else 0.3)
    h, w = 90, 180
    seen = np.zeros((h, w), dtype=int)
    for cam in cams:
        mask, _, _ = cam.erp_footprint(h, w)
        seen += mask
    assert seen.min() >= 1, "some ERP pixel is seen by no tile"
    if level == 0:
        # with padding 0.3 every direction near a shared edge is seen twice: overlaps exist everywhere
        assert (seen >= 2).mean() > 0.5


def test_tangent_camera_fov_and_axes():
    cams = S.tangent_cameras(100, padding=0.3)
    fx, _ = cams[0].fov_deg
    expected = math.degrees(2 * math.atan(S.face_half_extent() * 1.3))
    assert fx == pytest.approx(expected)
    # level-0 face's vertex seen from its centre: tan(37.377 deg) = 0.7639
    assert S.face_half_extent() == pytest.approx(math.tan(math.radians(37.37736814)), rel=1e-6)
    for cam in cams:
        r = cam.R
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        # the centre pixel ray is the face centre
        rays = cam.rays()
        mid = 0.25 * (rays[49, 49] + rays[49, 50] + rays[50, 49] + rays[50, 50])
        np.testing.assert_allclose(mid / np.linalg.norm(mid), cam.forward, atol=1e-4)
    cam = S.tangent_cameras(32, fov_deg=90.0)[0]
    assert cam.fov_deg == pytest.approx((90.0, 90.0))
    with pytest.raises(ValueError, match="fov_deg must lie in"):
        S.tangent_cameras(32, fov_deg=180.0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        S.tangent_cameras(32, padding=-0.1)


def test_camera_project_inverts_rays():
    cam = S.tangent_cameras((48, 64), fov_deg=80.0)[7]
    x, y, valid = cam.project(cam.rays())
    jj, ii = np.meshgrid(np.arange(64), np.arange(48))
    assert valid.all()
    np.testing.assert_allclose(x, jj, atol=1e-9)
    np.testing.assert_allclose(y, ii, atol=1e-9)
    # behind the camera: invalid
    _, _, v2 = cam.project(-cam.rays())
    assert not v2.any()


def test_look_at_is_opencv_and_upright():
    r = S.look_at_rotation([0, 0, -1])
    np.testing.assert_allclose(r, [[1, 0, 0], [0, -1, 0], [0, 0, -1]], atol=1e-12)
    # straight up falls back to a valid rotation
    r = S.look_at_rotation([0, 1, 0])
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(r[:, 2], [0, 1, 0], atol=1e-12)
    r = S.yaw_pitch_roll(math.pi / 2)
    np.testing.assert_allclose(r[:, 2], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(S.rotation_about_axis([0, 1, 0], math.pi / 2) @ [0, 0, -1], [-1, 0, 0], atol=1e-12)


def _pattern(d):
    """A smooth function on the sphere (band-limited so bilinear sampling is accurate)."""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return np.stack([0.5 + 0.4 * np.sin(3 * x + 1) * np.cos(2 * z), 0.5 + 0.4 * y * x, 0.5 + 0.3 * np.cos(4 * y)], -1)


def test_tangent_image_from_erp_matches_analytic_view():
    h, w = 512, 1024
    erp = _pattern(S.erp_directions(h, w, np.float64))
    for cam in S.tangent_cameras(64, padding=0.3)[::4]:
        view = S.tangent_image_from_erp(erp, cam)
        exact = _pattern(cam.rays())
        # bilinear interpolation error of a smooth pattern: second order in the pixel size (~6e-3 rad)
        assert np.abs(view - exact).max() < 2e-3
        aa = S.tangent_image_from_erp(erp, cam, supersample=2)
        assert np.abs(aa - exact).max() < 2e-3
    with pytest.raises(ValueError, match="supersample must be >= 1"):
        S.tangent_image_from_erp(erp, cam, supersample=0)


def test_erp_sample_wraps_longitude_and_crosses_poles():
    h, w = 8, 16
    img = np.arange(h * w, dtype=np.float64).reshape(h, w)
    # exactly at pixel centres: the pixel itself
    assert S.erp_sample(img, np.array([3.0]), np.array([5.0]))[0] == img[5, 3]
    # half way across the seam: mean of the last and first column
    assert S.erp_sample(img, np.array([w - 0.5]), np.array([2.0]))[0] == pytest.approx(0.5 * (img[2, -1] + img[2, 0]))
    # half a pixel above row 0: mean of row 0 here and row 0 half a turn away
    val = S.erp_sample(img, np.array([1.0]), np.array([-0.5]))[0]
    assert val == pytest.approx(0.5 * (img[0, 1] + img[0, 1 + w // 2]))
    val = S.erp_sample(img, np.array([1.0]), np.array([h - 0.5]))[0]
    assert val == pytest.approx(0.5 * (img[-1, 1] + img[-1, 1 + w // 2]))
    # torch, channel-first
    t = torch.from_numpy(np.stack([img, 2 * img]))
    out = S.erp_sample(t, torch.tensor([w - 0.5]), torch.tensor([2.0]))
    assert out.shape == (2, 1)
    assert out[1, 0].item() == pytest.approx(img[2, -1] + img[2, 0])


def test_erp_sample_continuous_across_pole():
    """A smooth function sampled through the pole has no jump."""
    h, w = 256, 512
    erp = _pattern(S.erp_directions(h, w, np.float64))[..., 0]
    lat = np.linspace(math.radians(80), math.radians(89.99), 200)
    for lon in (0.3, 0.3 + math.pi):
        d = S.lonlat_to_dir(np.full_like(lat, lon), lat)
        vals = S.erp_sample_dirs(erp, d)
        exact = _pattern(d)[..., 0]
        assert np.abs(vals - exact).max() < 2e-3


def test_planar_depth_to_distance():
    cam = S.tangent_cameras(32, fov_deg=90.0)[0]
    depth = np.full((32, 32), 2.0, dtype=np.float32)
    dist = S.planar_depth_to_distance(depth, cam)
    # corner pixel centre ray: x = y = (15.5/16) -> factor sqrt(1 + 2 * 0.96875^2)
    assert dist[0, 0] == pytest.approx(2.0 * math.sqrt(1 + 2 * (15.5 / 16) ** 2), rel=1e-6)
    assert dist.dtype == np.float32
    td = S.planar_depth_to_distance(torch.from_numpy(depth), cam)
    np.testing.assert_allclose(td.numpy(), dist, rtol=1e-6)
