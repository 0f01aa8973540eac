"""WS-PSNR and SSIM against hand-computed values and a reference implementation (scikit-image); LPIPS wiring."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from immersivedepth.eval.lpips_metric import BACKBONE_FILES, lpips_scorer
from immersivedepth.eval.metrics import SSIM_RADIUS, psnr, ssim, ssim_map, ws_psnr
from immersivedepth.eval.novel_view import image_metrics


def test_ws_psnr_hand_computed():
    # 4 rows: latitudes +-67.5 deg (weight cos 67.5 = sin 22.5) and +-22.5 deg; an error of 0.1 in the top row only.
    gt = np.full((4, 8, 3), 0.5)
    pred = gt.copy()
    pred[0] += 0.1
    w_top, w_mid = math.cos(math.radians(67.5)), math.cos(math.radians(22.5))
    wmse = 0.01 * w_top / (2 * (w_top + w_mid))  # = 0.01 sin^2(22.5 deg)
    assert ws_psnr(pred, gt) == pytest.approx(10 * math.log10(1 / wmse), abs=1e-9)
    assert ws_psnr(pred, gt) == pytest.approx(10 * math.log10(1 / (0.01 * math.sin(math.pi / 8) ** 2)), abs=1e-9)
    # plain PSNR counts the pole row as much as the equator: mse = 0.01 / 4
    assert psnr(pred, gt) == pytest.approx(10 * math.log10(400), abs=1e-9)
    # a uniform error weighs the same everywhere: WS-PSNR == PSNR
    assert ws_psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)
    assert ws_psnr(gt, gt) == float("inf")
    # a mask keeping the top row only: WMSE = 0.01
    mask = np.zeros((4, 8), bool)
    mask[0] = True
    assert ws_psnr(pred, gt, mask=mask) == pytest.approx(20.0, abs=1e-9)
    assert ws_psnr(pred, gt, mask=~mask) == float("inf")
    with pytest.raises(ValueError, match="ws_psnr: mask selects no pixels"):
        ws_psnr(pred, gt, mask=np.zeros((4, 8), bool))
    with pytest.raises(ValueError, match=r"ws_psnr: expects an \(H,W\) or \(H,W,C\) panorama"):
        ws_psnr(np.ones(3), np.ones(3))


def test_ssim_of_constant_images_is_the_luminance_term():
    # variances and covariance vanish: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01)^2
    a, b, c1 = 0.5, 0.25, 0.01**2
    x, y = np.full((16, 32), a), np.full((16, 32), b)
    assert ssim(x, y) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim_map(x, y).shape == (16, 32)


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(4)
    gt = rng.uniform(0, 1, (40, 64, 3))
    pred = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1)
    _, ref = structural_similarity(pred, gt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                   data_range=1.0, channel_axis=2, full=True)
    r = SSIM_RADIUS
    inner = (slice(r, -r), slice(r, -r))
    np.testing.assert_allclose(ssim_map(pred, gt)[inner], ref.mean(axis=2)[inner], rtol=0, atol=1e-10)
    # the masked mean is the mean of the map over the mask
    mask = np.zeros((40, 64), bool)
    mask[10:30, 10:50] = True
    assert ssim(pred, gt, mask=mask) == pytest.approx(ref.mean(axis=2)[mask].mean(), abs=1e-10)
    with pytest.raises(ValueError, match="ssim: mask selects no pixels"):
        ssim(pred, gt, mask=np.zeros((40, 64), bool))
    with pytest.raises(ValueError, match="larger than 11x11"):
        ssim(np.ones((8, 8)), np.ones((8, 8)))


def test_image_metrics_names_masks_and_clips():
    gt = np.full((16, 32, 3), 0.5)
    pred = gt + 0.1
    pred[0, 0] = 7.0  # an overshooting render is clipped to 1 before scoring
    vis = np.ones((16, 32), bool)
    vis[0, 0] = False
    out = image_metrics(pred, gt, {"all": None, "visible": vis, "disoccluded": np.zeros((16, 32), bool)})
    assert set(out) == {f"{m}_{k}" for m in ("psnr", "ws_psnr", "ssim") for k in ("all", "visible", "disoccluded")}
    assert out["psnr_visible"] == pytest.approx(20.0, abs=1e-9)
    assert out["psnr_all"] == pytest.approx(psnr(np.clip(pred, 0, 1), gt), abs=1e-12)
    assert out["psnr_disoccluded"] is None and out["ssim_disoccluded"] is None


def test_lpips_needs_local_weights_and_feeds_minus_one_to_one(tmp_path, monkeypatch):
    """No backbone file: the reason names where to put it (nothing is downloaded). With the file present the scorer
    gives the lpips model (N,3,H,W) tensors in [-1, 1] (a stand-in model here: the real weights are not available)."""
    seen = {}

    class FakeLPIPS(torch.nn.Module):
        def __init__(self, net, verbose):
            super().__init__()
            seen["net"] = net

        def forward(self, a, b):
            seen["shape"], seen["range"] = tuple(a.shape), (float(a.min()), float(a.max()))
            return (a - b).abs().mean().reshape(1, 1, 1, 1)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    scorer, why = lpips_scorer("alex")
    assert scorer is None
    assert why == (f"LPIPS (alex) needs the torchvision backbone weights at {tmp_path}/checkpoints/"
                   f"{BACKBONE_FILES['alex']}; nothing is downloaded: copy the file there (or set TORCH_HOME) to "
                   "enable evaluate.lpips")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / BACKBONE_FILES["alex"]).write_bytes(b"weights")
    scorer, why = lpips_scorer("alex")
    gt = np.zeros((8, 16, 3))
    assert why is None and scorer(np.ones((8, 16, 3)), gt) == pytest.approx(2.0)  # 1 -> +1, 0 -> -1
    assert seen == {"net": "alex", "shape": (1, 3, 8, 16), "range": (1.0, 1.0)}
