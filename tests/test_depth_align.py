"""Global alignment and blending against the analytic box room (exact answers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from immersivedepth import sphere
from immersivedepth.depth.align import AlignConfig, align_tiles, apply_alignment, bilinear_sample, grid_basis
from immersivedepth.depth.blend import BlendConfig, blend_tiles, seam_metric, tile_footprint_boundaries
from immersivedepth.depth.oracle import BoxRoomScene, OracleDepthModel
from immersivedepth.depth.pipeline import naive_distance
from immersivedepth.depth.tiles import make_tile_cameras

H, W = 128, 256


@pytest.fixture(scope="module")
def room():
    scene = BoxRoomScene()
    return scene, scene.render_panorama(H, W)["distance"].astype(np.float64)


def oracle_tiles(cams, **kw):
    model = OracleDepthModel(scene="box", check_input=False, **kw)  # placeholder tiles: only their shape is used
    K = torch.from_numpy(np.stack([c.K for c in cams]))
    R = torch.from_numpy(np.stack([c.R for c in cams]))
    return model, model(torch.zeros(len(cams), 3, cams[0].height, cams[0].width), K=K, R=R).numpy()


def abs_rel(pred, gt):
    ok = (pred > 0) & (gt > 0)
    s = np.median(gt[ok] / pred[ok])
    return float(np.mean(np.abs(s * pred[ok] - gt[ok]) / gt[ok]))


def test_grid_basis_and_bilinear_sample():
    i0, i1, f = grid_basis(np.array([-0.5, 31.5, 63.5]), 64, 3)
    np.testing.assert_array_equal(i0, [0, 1, 1])  # the image edges map to the first/last node
    np.testing.assert_allclose(f, [0.0, 0.0, 1.0])
    img = np.add.outer(np.arange(5.0) * 10, np.arange(7.0))
    np.testing.assert_allclose(bilinear_sample(img, np.array([2.5, 0.0]), np.array([1.25, 4.0])), [15.0, 40.0])


def test_affine_alignment_recovers_inverse_depth_exactly(room):
    """Per-tile affine (G=1) on exact oracle disparities: q_k * z_true is the same constant for all tiles."""
    scene, _ = room
    cams = make_tile_cameras(48)
    model, disp = oracle_tiles(cams, scale_range=(0.3, 3.0), shift_range=(0.0, 1.0), seed=3)
    res = align_tiles(cams, disp, AlignConfig(grid=1, samples=4000))
    q = apply_alignment(disp, res)
    z = np.stack([scene.render_camera(c)["depth"] for c in cams])
    prod = q * z
    assert np.std(prod) / np.mean(prod) < 1e-4
    assert res.info["align_residual_after"] < 1e-5
    assert res.info["align_residual_before"] > 0.05
    assert res.info["tiles_without_overlap"] == []
    assert np.mean(res.scale) == pytest.approx(1.0, abs=1e-9)  # the gauge


def test_deformable_alignment_and_blend_beat_naive(room):
    scene, gt = room
    cams = make_tile_cameras(64)
    _, disp = oracle_tiles(cams, noise=0.01, warp_amplitude=0.1, seed=1)
    res = align_tiles(cams, disp, AlignConfig(grid=4, samples=4000))
    bl = blend_tiles(cams, apply_alignment(disp, res), H, W)
    ours = abs_rel(bl.distance, gt)
    naive = abs_rel(naive_distance(cams, disp, H, W), gt)
    assert ours < 0.03
    assert naive > 3 * ours
    assert (bl.distance > 0).all()
    seam = seam_metric(bl.distance, cams, gt)
    assert seam["ratio"] < 1.5
    assert seam_metric(naive_distance(cams, disp, H, W), cams, gt)["ratio"] > 2.0
    assert 0.0 <= bl.confidence.min() and bl.confidence.max() <= 1.0


def test_robust_loss_ignores_a_corrupted_patch(room):
    scene, gt = room
    cams = make_tile_cameras(48)
    _, disp = oracle_tiles(cams, seed=2)
    bad = disp.copy()
    bad[5, :16, :16] *= 3.0  # gross outliers on a corner (an overlap region) of one tile
    robust = align_tiles(cams, bad, AlignConfig(grid=1, samples=4000, robust="cauchy"))
    plain = align_tiles(cams, bad, AlignConfig(grid=1, samples=4000, robust="none"))
    errs = []
    for res in (robust, plain):
        q = apply_alignment(bad, res)
        q[5, :16, :16] = 0.0  # judge the corrections, not the corrupted pixels themselves
        errs.append(abs_rel(blend_tiles(cams, q, H, W).distance, gt))
    assert errs[0] < 2e-3  # = the error without corruption at this tile size (interpolation at room edges)
    assert errs[1] > 10 * errs[0]


def test_tiles_without_overlap_are_reported():
    cams = [sphere.TangentCamera(R=sphere.look_at_rotation(f), K=make_tile_cameras(32, fov_deg=40.0)[0].K,
                                 height=32, width=32, index=i)
            for i, f in enumerate([(0, 0, -1), (0, 0, 1), (1, 0, 0), (1, 0, -0.2)])]
    disp = np.random.default_rng(0).uniform(1.0, 2.0, (4, 32, 32))
    res = align_tiles(cams, disp, AlignConfig(grid=2, samples=3000))
    assert res.info["tiles_without_overlap"] == [0, 1]
    # isolated tiles keep their median normalisation: scale 1, shift 0
    np.testing.assert_allclose(res.scale[0], 1.0, atol=1e-3)
    np.testing.assert_allclose(res.shift[1], 0.0, atol=1e-3)


def test_positivity_penalty_keeps_disparity_positive(room):
    cams = make_tile_cameras(48)
    _, disp = oracle_tiles(cams, seed=4, noise=0.05, warp_amplitude=0.3, warp_frequency=1.5)
    res = align_tiles(cams, disp, AlignConfig(grid=4, samples=3000))
    q = apply_alignment(disp, res)
    assert (q > 0).mean() > 0.999


def test_align_bad_input_messages():
    cams = make_tile_cameras(16)
    with pytest.raises(ValueError, match=r"expected \(20, h, w\)"):
        align_tiles(cams, np.ones((19, 16, 16)))
    d = np.ones((20, 16, 16))
    d[3] = 0.0
    with pytest.raises(ValueError, match="tile 3 has no positive disparity"):
        align_tiles(cams, d)
    with pytest.raises(ValueError, match="robust"):
        AlignConfig(robust="l7")
    with pytest.raises(ValueError, match="grid"):
        AlignConfig(grid=0)


def test_blend_exact_tiles_reproduces_distance(room):
    """Blending exact inverse depths gives the true distance in every space and mode."""
    scene, gt = room
    cams = make_tile_cameras(64)
    q = np.stack([1.0 / scene.render_camera(c)["depth"] for c in cams])
    for cfg in (BlendConfig(space="log"), BlendConfig(space="disparity"), BlendConfig(mode="gradient")):
        d = blend_tiles(cams, q, H, W, cfg).distance
        assert abs_rel(d, gt) < 0.01, cfg
        s = np.median(gt / d)
        assert s == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="mode"):
        BlendConfig(mode="poisson!")


def test_seam_metric_detects_a_jump():
    cams = make_tile_cameras(32)
    h, w = 64, 128
    gt = np.full((h, w), 2.0)
    _, lat = sphere.erp_lonlat_grid(h, w)
    smooth = gt * np.exp(0.1 * lat)  # log error 0.1 * lat: |grad e| = 0.1 per radian everywhere
    m = seam_metric(smooth, cams, gt)
    assert m["border"] == pytest.approx(0.1, rel=1e-6) and m["inside"] == pytest.approx(0.1, rel=1e-6)
    assert m["ratio"] == pytest.approx(1.0, rel=1e-6)
    # a map that changes value exactly at tile-footprint boundaries
    jumpy = gt.copy()
    mask, _, _ = cams[0].erp_footprint(h, w)
    jumpy[mask] *= 1.05
    assert seam_metric(jumpy, cams, gt)["ratio"] > 3.0
    assert tile_footprint_boundaries(cams, h, w).any()


def test_sparse_normal_equations_match_dense(monkeypatch):
    """Large problems switch to sparse normal equations; the solution is the same."""
    import immersivedepth.depth.align as align_mod

    cams = make_tile_cameras(32)
    _, disp = oracle_tiles(cams, noise=0.01, warp_amplitude=0.1, seed=6)
    cfg = AlignConfig(grid=3, samples=2000)
    dense = align_tiles(cams, disp, cfg)
    monkeypatch.setattr(align_mod, "_DENSE_LIMIT", 0)
    sparse = align_tiles(cams, disp, cfg)
    np.testing.assert_allclose(sparse.scale, dense.scale, atol=1e-8)
    np.testing.assert_allclose(sparse.shift, dense.shift, atol=1e-8)
