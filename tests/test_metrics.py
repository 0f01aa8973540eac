"""Metrics against hand-computed values, exact recovery of known alignments, Chamfer of known sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from immersivedepth import sphere
from immersivedepth.eval.metrics import (
    align_scale,
    align_scale_shift,
    chamfer,
    depth_metrics,
    psnr,
    valid_mask,
    ws_psnr,
)

# four valid pixels + invalid GT of every kind (0, negative, NaN, inf, beyond max_depth 10)
PRED = np.array([[1.0, 2.0, 4.0, 2.4], [7.0, 7.0, 7.0, 7.0], [7.0, 7.0, 7.0, 7.0]])
GT = np.array([[2.0, 2.0, 2.0, 2.0], [0.0, -1.0, np.nan, np.inf], [12.0, 12.0, 12.0, 12.0]])


def test_depth_metrics_hand_computed():
    m = depth_metrics(PRED, GT, max_depth=10.0)
    # valid: the first row only. diffs -1, 0, 2, 0.4 ; ratios 2, 1, 2, 1.2
    assert m["n_valid"] == 4
    assert m["abs_rel"] == pytest.approx((0.5 + 0 + 1 + 0.2) / 4, abs=1e-15)
    assert m["sq_rel"] == pytest.approx((0.5 + 0 + 2 + 0.08) / 4, abs=1e-15)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4 + 0.16) / 4), abs=1e-15)
    assert m["mae"] == pytest.approx((1 + 0 + 2 + 0.4) / 4, abs=1e-15)
    ln2, l12 = math.log(2.0), math.log(1.2)
    assert m["rmse_log"] == pytest.approx(math.sqrt((ln2**2 + 0 + ln2**2 + l12**2) / 4), abs=1e-15)
    assert (m["d1"], m["d2"], m["d3"]) == (0.5, 0.5, 0.5)  # 2 > 1.25^3 = 1.953
    # without max_depth the 12 m pixels count: pred 7 vs gt 12 -> ratio 1.714 (inside 1.25^3 only)
    m2 = depth_metrics(PRED, GT)
    assert m2["n_valid"] == 8
    assert m2["d3"] == pytest.approx(6 / 8) and m2["d2"] == pytest.approx(2 / 8)
    assert m2["mae"] == pytest.approx((3.4 + 4 * 5.0) / 8)


def test_depth_metrics_weights_and_valid():
    w = np.array([[3.0, 1.0, 0.0, 0.0]] + [[1.0] * 4] * 2)
    m = depth_metrics(PRED, GT, max_depth=10.0, weights=w)
    assert m["n_valid"] == 2
    assert m["abs_rel"] == pytest.approx((3 * 0.5 + 1 * 0.0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(3 * 1.0 / 4))
    assert m["d1"] == pytest.approx(0.25)
    valid = np.array([[False, True, True, True]] + [[True] * 4] * 2)
    m = depth_metrics(PRED, GT, valid=valid, max_depth=10.0)
    assert m["n_valid"] == 3 and m["mae"] == pytest.approx(2.4 / 3)
    # torch tensors give the same numbers
    mt = depth_metrics(torch.tensor(PRED), torch.tensor(GT), max_depth=10.0)
    assert mt == depth_metrics(PRED, GT, max_depth=10.0)
    np.testing.assert_array_equal(valid_mask(GT, max_depth=10.0), [[True] * 4, [False] * 4, [False] * 4])


def test_depth_metrics_scaled_panorama_with_solid_angle_weights():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 6.0, size=(16, 32))
    w = sphere.pixel_solid_angle(16, 32)
    m = depth_metrics(1.1 * gt, gt, weights=w)
    assert m["abs_rel"] == pytest.approx(0.1, rel=1e-12)
    assert m["rmse_log"] == pytest.approx(math.log(1.1), rel=1e-12)
    assert m["rmse"] == pytest.approx(0.1 * math.sqrt(np.sum(w * gt**2) / np.sum(w)), rel=1e-12)
    assert m["d1"] == 1.0
    # non-positive predictions are clipped to min_pred, keeping the log finite
    m = depth_metrics(np.zeros_like(gt), gt, min_pred=1e-3)
    assert m["rmse_log"] == pytest.approx(np.sqrt(np.mean(np.log(1e-3 / gt) ** 2)), rel=1e-12)


def test_depth_metrics_errors():
    with pytest.raises(ValueError, match=r"pred shape \(2,\) differs from gt shape \(3,\)"):
        depth_metrics(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match=r"no valid ground-truth pixels.*max_depth=1.0"):
        depth_metrics(np.ones(3), np.array([0.0, np.nan, 5.0]), max_depth=1.0)
    with pytest.raises(ValueError, match="pred has 1 non-finite values at valid ground-truth pixels"):
        depth_metrics(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        depth_metrics(np.ones(2), np.ones(2), weights=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="does not broadcast"):
        depth_metrics(np.ones(2), np.ones(2), valid=np.ones(3, bool))
    with pytest.raises(ValueError, match="max_depth must be > 0"):
        depth_metrics(np.ones(2), np.ones(2), max_depth=0.0)


def test_psnr_known_values():
    gt = np.random.default_rng(1).uniform(0.2, 0.8, size=(8, 8, 3))
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)  # mse 0.01
    assert psnr(gt + 0.01, gt) == pytest.approx(40.0, abs=1e-9)
    assert psnr(255 * (gt + 0.1), 255 * gt, max_val=255.0) == pytest.approx(20.0, abs=1e-9)
    assert psnr(gt, gt) == float("inf")
    pred = gt.copy()
    pred[0, 0] += 0.5
    mask = np.ones((8, 8), bool)
    mask[0, 0] = False
    assert psnr(pred, gt, mask=mask) == float("inf")
    # one wrong pixel out of 64 (all 3 channels): mse = 0.25 / 64
    assert psnr(pred, gt) == pytest.approx(10 * math.log10(64 / 0.25), abs=1e-9)
    with pytest.raises(ValueError, match="mask selects no pixels"):
        psnr(pred, gt, mask=np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"psnr: pred shape \(8, 8, 3\) differs"):
        psnr(pred, gt[..., :2])
    with pytest.raises(ValueError, match="max_val must be > 0"):
        psnr(pred, gt, max_val=0)


def test_align_scale():
    gt = np.array([1.0, 2.0, 3.0, 5.0, 0.0])
    aligned, s = align_scale(gt / 3.0, gt)
    assert s == pytest.approx(3.0, rel=1e-15)
    np.testing.assert_allclose(aligned, gt, rtol=1e-15)
    # median: median(gt valid) = 2.5, median(pred) = 1.5 (the 0-GT pixel is excluded)
    _, s = align_scale(np.array([1.0, 1.0, 2.0, 9.0, 100.0]), gt)
    assert s == pytest.approx(2.5 / 1.5)
    # least squares: s = sum(p g) / sum(p^2) = (2 + 6) / (1 + 4)
    _, s = align_scale(np.array([1.0, 2.0]), np.array([2.0, 3.0]), method="lsq")
    assert s == pytest.approx(1.6, rel=1e-15)
    _, s = align_scale(np.array([1.0, 2.0]), np.array([2.0, 3.0]), method="lsq", weights=np.array([1.0, 0.0]))
    assert s == pytest.approx(2.0)
    with pytest.raises(ValueError, match="method must be 'median' or 'lsq', got 'mean'"):
        align_scale(gt, gt, method="mean")
    with pytest.raises(ValueError, match="no pixels to fit"):
        align_scale(np.ones(2), np.zeros(2))
    with pytest.raises(ValueError, match="prediction is zero over the valid pixels"):
        align_scale(np.zeros(2), np.ones(2), method="lsq")
    with pytest.raises(ValueError, match="pred must be a numeric array"):
        align_scale(np.array(["a", "b"]), np.ones(2))


def test_align_scale_shift_recovers_known_parameters():
    gt = np.random.default_rng(2).uniform(0.5, 8.0, size=(12, 24))
    s_true, t_true = 2.5, 0.3
    aligned, s, t = align_scale_shift((gt - t_true) / s_true, gt, space="depth")
    assert (s, t) == (pytest.approx(s_true, rel=1e-12), pytest.approx(t_true, rel=1e-10))
    np.testing.assert_allclose(aligned, gt, rtol=1e-12)
    # disparity space, prediction given as disparity (a monocular model's output)
    disp = (1.0 / gt - 0.05) / 4.0
    aligned, s, t = align_scale_shift(disp, gt, space="disparity", pred_is_disparity=True)
    assert (s, t) == (pytest.approx(4.0, rel=1e-12), pytest.approx(0.05, rel=1e-10))
    np.testing.assert_allclose(aligned, gt, rtol=1e-10)
    # disparity space, prediction given as depth
    aligned, s, t = align_scale_shift(1.0 / disp, gt, space="disparity")
    assert (s, t) == (pytest.approx(4.0, rel=1e-12), pytest.approx(0.05, rel=1e-10))
    np.testing.assert_allclose(aligned, gt, rtol=1e-10)
    # invalid GT pixels are ignored by the fit but still aligned
    gt2 = gt.copy()
    gt2[0, :5] = 0.0
    pred = (gt - t_true) / s_true
    pred[0, :5] = 123.0
    aligned, s, t = align_scale_shift(pred, gt2)
    assert s == pytest.approx(s_true, rel=1e-12)
    np.testing.assert_allclose(aligned[0, :5], s_true * 123.0 + t_true, rtol=1e-12)


def test_align_scale_shift_disparity_cap_and_errors():
    gt = np.array([1.0, 2.0, 4.0])
    disp = np.array([1.0, 0.5, 0.25])
    # extrapolating to a disparity <= 0 is capped at depth_cap (default: the largest valid GT)
    aligned, _, _ = align_scale_shift(np.array([1.0, 0.5, 0.25, -2.0]), np.append(gt, 0.0), space="disparity",
                                      pred_is_disparity=True)
    assert aligned[3] == pytest.approx(4.0)
    aligned, _, _ = align_scale_shift(np.append(disp, -2.0), np.append(gt, 0.0), space="disparity",
                                      pred_is_disparity=True, depth_cap=10.0)
    assert aligned[3] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="prediction is constant over the valid pixels"):
        align_scale_shift(np.ones(3), gt)
    with pytest.raises(ValueError, match="space must be 'depth' or 'disparity', got 'log'"):
        align_scale_shift(disp, gt, space="log")
    with pytest.raises(ValueError, match="pred_is_disparity=True needs space='disparity'"):
        align_scale_shift(disp, gt, pred_is_disparity=True)
    with pytest.raises(ValueError, match="depth_cap must be > 0"):
        align_scale_shift(disp, gt, space="disparity", pred_is_disparity=True, depth_cap=-1.0)
    with pytest.raises(ValueError, match="all weights are zero"):
        align_scale_shift(disp, gt, weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"weights shape \(2,\) does not broadcast to \(3,\)"):
        align_scale_shift(disp, gt, weights=np.ones(2))


def test_chamfer():
    g = np.stack(np.meshgrid(np.arange(5.0), np.arange(4.0), np.arange(3.0), indexing="ij"), -1).reshape(-1, 3)
    c = chamfer(g, g)
    assert c == {"a_to_b": 0.0, "b_to_a": 0.0, "chamfer": 0.0}
    c = chamfer(g, g + [0.1, 0.0, 0.0])  # shift below half the spacing: every nearest neighbour is the twin
    assert c["a_to_b"] == pytest.approx(0.1) and c["b_to_a"] == pytest.approx(0.1)
    assert c["chamfer"] == pytest.approx(0.1)
    c = chamfer(g, g + [0.1, 0.0, 0.0], threshold=0.2)
    assert (c["precision"], c["recall"], c["fscore"]) == (1.0, 1.0, 1.0)
    assert chamfer(g, g + 0.1, threshold=0.05)["fscore"] == 0.0
    # asymmetric sets: a = {0}, b = {0, 10}
    c = chamfer(np.zeros((1, 3)), np.array([[0.0, 0, 0], [10.0, 0, 0]]), threshold=1.0)
    assert (c["a_to_b"], c["b_to_a"], c["chamfer"]) == (0.0, 5.0, 2.5)
    assert (c["precision"], c["recall"]) == (1.0, 0.5)
    assert c["fscore"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="points_a has dimension 3 but points_b has 2"):
        chamfer(g, g[:, :2])
    with pytest.raises(ValueError, match=r"points_b must be a non-empty \(N,D\) array"):
        chamfer(g, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="threshold must be > 0"):
        chamfer(g, g, threshold=0.0)
    with pytest.raises(ValueError, match="points_a contains non-finite"):
        chamfer(np.full((2, 3), np.nan), g)


def test_ws_psnr_weights_rows_by_cos_latitude():
    h, w = 4, 8
    gt = np.zeros((h, w, 3))
    pred = gt.copy()
    pred[0] = 0.1  # error only in the top row (latitude 67.5 deg)
    cos = np.cos(np.pi / 2 - (np.arange(h) + 0.5) / h * np.pi)
    want = 10 * np.log10(1.0 / (0.01 * cos[0] / cos.sum()))
    assert ws_psnr(pred, gt) == pytest.approx(want, rel=1e-12)
    assert ws_psnr(pred, gt) > psnr(pred, gt)  # polar error counts less than in plain PSNR
    m = np.zeros((h, w), bool)
    m[0] = True
    assert ws_psnr(pred, gt, m) == pytest.approx(20.0)
    assert ws_psnr(gt, gt) == float("inf")
    with pytest.raises(ValueError, match="mask selects no pixels"):
        ws_psnr(pred, gt, np.zeros((h, w), bool))
