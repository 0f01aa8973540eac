"""Fusion of several models' tile disparities: common frame, mean / weighted / multiband."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from immersivedepth.depth.fuse import FuseConfig, fit_affine, fuse_disparities


def _truth(n=3, h=64, w=64, seed=0):
    """Piecewise-smooth disparities with sharp edges (boxes in front of a slanted plane)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / w
    out = []
    for _ in range(n):
        d = 0.5 + 0.3 * x + 0.2 * y
        for _ in range(4):
            x0, y0 = rng.integers(0, w - 16, 2)
            d[y0:y0 + 14, x0:x0 + 14] = rng.uniform(1.2, 2.0)
        out.append(d)
    return np.stack(out)


def _rel_err_after_affine(est, truth):
    errs = []
    for e, t in zip(est, truth):
        a, b = fit_affine(e.ravel(), t.ravel(), iterations=1)
        errs.append(np.mean(np.abs(a * e + b - t) / t))
    return float(np.mean(errs))


def test_fit_affine_exact_and_robust():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 1, 2000)
    dst = 2.5 * src - 0.7
    a, b = fit_affine(src, dst)
    assert a == pytest.approx(2.5, abs=1e-10) and b == pytest.approx(-0.7, abs=1e-10)
    dst_bad = dst.copy()
    dst_bad[:100] += 5.0  # 5% gross outliers
    a, b = fit_affine(src, dst_bad, iterations=10)
    assert a == pytest.approx(2.5, abs=1e-2) and b == pytest.approx(-0.7, abs=1e-2)
    with pytest.raises(ValueError, match="at least 2"):
        fit_affine(np.ones(1), np.ones(1))


def test_models_are_brought_into_one_frame():
    t = _truth()
    other = 3.0 * t + 0.4  # same information, different affine frame
    fused, info = fuse_disparities([t, other], ["a", "b"], "mean")
    np.testing.assert_allclose(fused, t, rtol=1e-5)
    np.testing.assert_allclose(info["fusion_affine"]["b"], [[1 / 3.0, -0.4 / 3.0]] * 3, rtol=1e-6)
    fused, _ = fuse_disparities([t, other], ["a", "b"], "weighted", FuseConfig(weights={"a": 1.0, "b": 3.0}))
    np.testing.assert_allclose(fused, t, rtol=1e-5)


def test_weighted_rule_is_the_normalised_weighted_mean():
    t = _truth(1)
    a, b = t, t * 1.0
    b = b + 0.1 * np.sin(np.arange(64) / 5.0)[None, None, :]  # b differs, but has the same frame on average
    fused, info = fuse_disparities([a, b], ["a", "b"], "weighted", FuseConfig(weights=[0.25, 0.75], reference=0))
    ca, cb = info["fusion_affine"]["b"][0]
    np.testing.assert_allclose(fused, (0.25 * a + 0.75 * (ca * b + cb)), rtol=1e-5)


def test_multiband_beats_both_complementary_models():
    """A: right edges, wrong low frequencies (smooth warp); B: right layout, blurred edges."""
    t = _truth()
    h, w = t.shape[1:]
    y, x = np.mgrid[0:h, 0:w] / w
    warp = 1.0 + 0.25 * np.cos(2 * np.pi * (0.8 * x + 0.5 * y))
    model_a = 2.0 * t * warp + 0.3
    model_b = 0.5 * np.stack([cv2.GaussianBlur(d, (0, 0), 3.0) for d in t])
    err_a = _rel_err_after_affine(model_a, t)
    err_b = _rel_err_after_affine(model_b, t)
    fused, info = fuse_disparities([model_a, model_b], ["A", "B"], "multiband",
                                   FuseConfig(base="B", detail="A", band_sigma=0.05))
    err_f = _rel_err_after_affine(fused, t)
    assert info["fusion_base"] == "B" and info["fusion_detail"] == "A"
    assert err_f < 0.75 * min(err_a, err_b)
    mean, _ = fuse_disparities([model_a, model_b], ["A", "B"], "mean")
    assert err_f < _rel_err_after_affine(mean, t)


def test_invalid_pixels_are_left_out_of_the_mean():
    t = _truth(1)
    b = t.copy()
    b[0, :10] = 0.0
    fused, _ = fuse_disparities([t, b], ["a", "b"], "mean")
    np.testing.assert_allclose(fused, t, rtol=1e-5)


def test_fusion_errors():
    t = _truth(1)
    with pytest.raises(ValueError, match="not a fusion rule"):
        fuse_disparities([t, t], ["a", "b"], "median")
    with pytest.raises(ValueError, match="weights has 3 entries for 2 models"):
        fuse_disparities([t, t], ["a", "b"], "weighted", FuseConfig(weights=[1, 1, 1]))
    with pytest.raises(ValueError, match="not models"):
        fuse_disparities([t, t], ["a", "b"], "weighted", FuseConfig(weights={"c": 1.0}))
    with pytest.raises(ValueError, match="base='zz' is not one of the models"):
        fuse_disparities([t, t], ["a", "b"], "multiband", FuseConfig(base="zz"))
    with pytest.raises(ValueError, match="model 'b' gave tiles of shape"):
        fuse_disparities([t, t[:, :32]], ["a", "b"], "mean")
    single, info = fuse_disparities([t], ["a"], "multiband")
    np.testing.assert_array_equal(single, t.astype(np.float32))


@pytest.mark.slow
def test_fused_pipeline_beats_both_models_on_the_synthetic_room():
    """End to end on the bundled scene: A = oracle with strong smooth warps, B = edge-blurred oracle."""
    from immersivedepth.depth.oracle import OracleDepthModel
    from immersivedepth.depth.pipeline import DepthConfig, estimate_distance
    from immersivedepth.scenes import synthetic

    scene = synthetic.make_scene("living_room")
    pano = scene.render_panorama(256, 512)
    gt = pano["distance"]
    ts = 192
    a = OracleDepthModel(scene=scene, input_size=ts, seed=0, warp_amplitude=0.25, warp_frequency=1.0, noise=0.005)
    b = OracleDepthModel(scene=scene, input_size=ts, seed=1, blur_sigma=ts / 40, noise=0.005)

    def err(models, fusion):
        cfg = DepthConfig.from_mapping({"progress": False, "models": [], "fusion": fusion,
                                        "fuse": {"base": "B", "detail": "A"}})
        d = estimate_distance(pano["rgb"], models, cfg, reference=gt).distance
        ok = (d > 0) & (gt > 0)
        return float(np.mean(np.abs(d[ok] - gt[ok]) / gt[ok]))

    e_a, e_b = err([("A", a)], "mean"), err([("B", b)], "mean")
    e_f = err([("A", a), ("B", b)], "multiband")
    assert e_f < 0.8 * min(e_a, e_b)
