"""Distance completion for inpainted pixels (pluggable like the inpainters).

A completer is a callable ``completer(rgb, mask, distance) -> distance``: ``rgb`` ``(H, W, 3)`` the *inpainted*
panorama, ``mask`` ``(H, W)`` bool the filled pixels, ``distance`` ``(H, W)`` the rendered distance (trusted only
outside the mask) -> ``(H, W)`` float32 world units, equal to ``distance`` outside the mask.

* :class:`LaplaceDistanceCompletion` (default, weight-free): harmonic fill of log-distance on the sphere whose
  boundary values come only from the far side of each hole edge; the hidden background continues smoothly behind
  the occluder instead of bending toward it.
* :class:`DepthModelCompletion`: a monocular 360 estimate of the inpainted panorama (any ``estimator(rgb) ->
  distance``, by default the project's depth pipeline with ``depth.models``) aligned to the known distances: one
  global scale on log-distance, then the remaining log-ratio to the known far side is spread harmonically over
  the hole, so the estimate's shape is kept and it meets the known surface without a step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from immersivedepth.depth.pipeline import estimate_distance
from immersivedepth.depth.registry import build_depth_models
from immersivedepth.inpaint.inpainters import FarSideFill
from immersivedepth.inpaint.laplace import harmonic_fill

__all__ = ["LaplaceDistanceCompletion", "DepthModelCompletion", "pipeline_estimator"]


class LaplaceDistanceCompletion(FarSideFill):
    """Harmonic log-distance fill from the far side (``depth_ratio``: see :func:`holes.hole_sides`)."""

    def __init__(self, depth_ratio: float = 1.15):
        self.depth_ratio = float(depth_ratio)

    def unchanged(self, rgb, distance):
        return distance

    def fill(self, rgb, mask, distance, sides):
        known = ~mask & np.isfinite(distance) & (distance > 0)
        logd = np.log(np.where(known, distance, 1.0))
        orphan = float(np.median(logd[known])) if known.any() else 0.0
        filled = np.exp(harmonic_fill(logd, mask, sides.source, orphan_value=orphan))
        return np.where(mask, filled, distance)


def pipeline_estimator(models: Sequence, depth_cfg: Mapping, *, checkpoint_dir=None, device: str = "cpu") -> Callable:
    """``rgb -> distance`` through the project's 360 depth pipeline (``depth.models`` presets or configs)."""
    built = build_depth_models(models, checkpoint_dir=checkpoint_dir, device=device)

    def estimate(rgb: np.ndarray) -> np.ndarray:
        return estimate_distance(rgb, built, depth_cfg).distance

    return estimate


class DepthModelCompletion(FarSideFill):
    """Monocular estimate of the inpainted panorama aligned to the known distances (module docstring).

    ``estimator``: a callable ``rgb (H,W,3) -> distance (H,W)`` (relative units are fine), or ``None`` to build the
    depth pipeline from ``models`` / ``depth_cfg`` (``checkpoint_dir``, ``device``) on first use.
    """

    def __init__(self, estimator: Callable | None = None, *, models: Sequence = (), depth_cfg: Mapping | None = None,
                 checkpoint_dir=None, device: str = "cpu", depth_ratio: float = 1.15):
        self.estimator = estimator
        self.models, self.depth_cfg = list(models), dict(depth_cfg or {})
        self.checkpoint_dir, self.device = checkpoint_dir, device
        self.depth_ratio = float(depth_ratio)

    def unchanged(self, rgb, distance):
        return distance

    def fill(self, rgb, mask, distance, sides):
        if self.estimator is None:
            self.estimator = pipeline_estimator(self.models, self.depth_cfg, checkpoint_dir=self.checkpoint_dir,
                                                device=self.device)
        est = np.asarray(self.estimator(rgb.astype(np.float32)), np.float64)
        if est.shape != mask.shape:
            raise ValueError(f"DepthModelCompletion: the estimator returned {est.shape}, expected {mask.shape}")
        known = ~mask & np.isfinite(distance) & (distance > 0) & np.isfinite(est) & (est > 0)
        if not known.any():
            raise ValueError("DepthModelCompletion: no pixel has both a known and an estimated distance")
        log_est = np.log(np.where(est > 0, est, 1.0))
        scale = float(np.median(np.log(distance[known]) - log_est[known]))  # one global scale on log-distance
        resid = np.zeros(mask.shape)
        resid[known] = np.log(distance[known]) - log_est[known] - scale
        corr = harmonic_fill(resid, mask, sides.source & known, orphan_value=0.0)
        filled = np.exp(log_est + scale + corr)
        return np.where(mask, filled, distance)
