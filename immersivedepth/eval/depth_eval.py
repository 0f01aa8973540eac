"""Depth (distance) evaluation of one panorama under a declared alignment and declared masks.

Mask (usual 360-depth conventions): GT finite, ``> 0``, ``<= max_distance``, and, with ``pole_cap_deg > 0``,
latitude within ``90 - pole_cap_deg`` degrees of the equator (ERP rows near the poles are heavily stretched and
often hold the camera mount). The alignment is fitted on that mask, then the metrics are taken on it:

- ``none``: the prediction as it is (metric predictions, e.g. from a reference or a metric model);
- ``median_scale``: ``s * pred``, ``s = median(gt) / median(pred)``;
- ``lsq_depth``: least-squares ``s * pred + t ~ gt``;
- ``lsq_disparity``: least-squares ``s / pred + t ~ 1 / gt`` (the MiDaS / 360MonoDepth protocol), capped at the
  largest valid GT distance.

Numbers under different alignments are not comparable, so every result names its alignment and mask.
"""

from __future__ import annotations

import math

import numpy as np

from immersivedepth import sphere
from immersivedepth.eval.config import ALIGNMENTS
from immersivedepth.eval.metrics import align_scale, align_scale_shift, depth_metrics, valid_mask


def pole_cap_mask(height: int, width: int, pole_cap_deg: float) -> np.ndarray:
    """``(H, W)`` bool: pixel centres with ``|latitude| <= 90 - pole_cap_deg`` degrees (all True for 0)."""
    _, lat = sphere.erp_lonlat_grid(height, width)
    return np.abs(lat) <= math.radians(90.0 - pole_cap_deg) + 1e-12


def evaluation_mask(gt: np.ndarray, max_distance: float, pole_cap_deg: float) -> np.ndarray:
    """``(H, W)`` bool: the module's mask (valid GT, ``<= max_distance``, outside the pole caps)."""
    return valid_mask(gt, max_depth=max_distance) & pole_cap_mask(*gt.shape, pole_cap_deg)


def align(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, alignment: str) -> tuple[np.ndarray, dict]:
    """Apply ``alignment`` (module docstring) fitted on ``mask``; ``(H, W)`` -> aligned ``(H, W)``, fit parameters."""
    if alignment == "none":
        return np.asarray(pred, np.float64), {}
    if alignment == "median_scale":
        aligned, s = align_scale(pred, gt, valid=mask, method="median")
        return aligned, {"scale": s}
    if alignment in ("lsq_depth", "lsq_disparity"):
        aligned, s, t = align_scale_shift(pred, gt, valid=mask, space=alignment.removeprefix("lsq_"))
        return aligned, {"scale": s, "shift": t}
    raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {alignment!r}")


def evaluate_depth(pred: np.ndarray, gt: np.ndarray, *, alignment: str, max_distance: float,
                   pole_cap_deg: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of ``pred`` ``(H, W)`` against ``gt`` ``(H, W)`` (same units).

    Returns ``(result, aligned (H, W), mask (H, W))``; ``result`` holds ``alignment``, its ``fit`` parameters,
    the ``mask`` rule, the fraction of pixels it keeps and the metrics of :func:`depth_metrics`.
    """
    mask = evaluation_mask(gt, max_distance, pole_cap_deg)
    if not mask.any():
        raise ValueError(f"no ground-truth pixel is valid (finite, > 0, <= evaluate.max_distance={max_distance} m, "
                         f"outside evaluate.pole_cap_deg={pole_cap_deg}); check the GT format and units")
    aligned, fit = align(pred, gt, mask, alignment)
    metrics = depth_metrics(aligned, gt, valid=mask)
    result = {
        "alignment": alignment,
        "fit": fit,
        "mask": {"max_distance_m": max_distance, "pole_cap_deg": pole_cap_deg, "fraction": float(mask.mean())},
        **metrics,
    }
    return result, aligned, mask
