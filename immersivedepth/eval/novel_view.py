"""Image metrics of one rendered novel view against its ground-truth panorama, on named pixel masks.

The one scoring function of novel views, shared by ``mode=evaluate`` and ``benchmarks/bench_train.py``: PSNR,
WS-PSNR and SSIM of images clipped to [0, 1], on the whole image and on the visible / disoccluded masks of
:mod:`immersivedepth.eval.visibility`.
"""

from __future__ import annotations

import numpy as np

from immersivedepth.eval.metrics import psnr, ssim, ws_psnr

IMAGE_METRICS = {"psnr": psnr, "ws_psnr": ws_psnr, "ssim": ssim}


def image_metrics(pred: np.ndarray, gt: np.ndarray, masks: dict[str, np.ndarray | None]) -> dict[str, float | None]:
    """``{f"{metric}_{mask}": value}`` for every metric of :data:`IMAGE_METRICS` and named mask.

    ``pred``, ``gt``: ``(H, W, 3)`` in [0, 1] (clipped here: renders may overshoot); ``masks``: name -> ``(H, W)``
    bool (``None`` = all pixels). A mask that selects no pixel gives ``None`` (e.g. nothing disoccluded).
    """
    p, g = np.clip(pred, 0.0, 1.0), np.clip(gt, 0.0, 1.0)
    out: dict[str, float | None] = {}
    for mname, mask in masks.items():
        empty = mask is not None and not np.any(mask)
        for name, fn in IMAGE_METRICS.items():
            out[f"{name}_{mname}"] = None if empty else fn(p, g, mask=mask)
    return out
