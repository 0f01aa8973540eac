"""Scalar maps -> colour images for previews (turbo by default)."""

from __future__ import annotations

import math

import cv2
import numpy as np


def colorize(values: np.ndarray, valid: np.ndarray | None = None, cmap: str = "turbo", vmin: float | None = None,
             vmax: float | None = None, log: bool = False, percentiles: tuple[float, float] = (2.0, 98.0),
             ) -> np.ndarray:
    """Scalar map ``(H,W)`` -> uint8 RGB ``(H,W,3)``.

    ``valid`` (H,W) bool defaults to finite values (and > 0 when ``log``); invalid pixels are black.
    The range defaults to the given ``percentiles`` of the valid values; ``log`` maps log(values).
    ``cmap`` is an OpenCV colormap name (``turbo``, ``viridis``, ``inferno``, ``jet``, ...).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"colorize expects a (H,W) map, got shape {values.shape}")
    code = getattr(cv2, f"COLORMAP_{cmap.upper()}", None)
    if code is None:
        names = sorted(n[9:].lower() for n in dir(cv2) if n.startswith("COLORMAP_"))
        raise ValueError(f"unknown colormap {cmap!r}; valid names: {', '.join(names)}")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (values > 0 if log else True)
    valid = ok if valid is None else ok & np.asarray(valid, dtype=bool)
    out = np.zeros(values.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(values) if log else values
    lo_p, hi_p = np.percentile(v[valid], percentiles)
    if log and ((vmin is not None and vmin <= 0) or (vmax is not None and vmax <= 0)):
        raise ValueError(f"colorize(log=True) needs vmin, vmax > 0, got vmin={vmin}, vmax={vmax}")
    lo = lo_p if vmin is None else (math.log(vmin) if log else vmin)
    hi = hi_p if vmax is None else (math.log(vmax) if log else vmax)
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full(v.shape, 0.5)
    t = np.where(valid, t, 0.0)
    rgb = cv2.applyColorMap(np.round(t * 255).astype(np.uint8), code)[..., ::-1]
    out[valid] = rgb[valid]
    return out
