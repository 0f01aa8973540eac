"""Checks on what a pluggable inpainter or distance completer returned (it may be user code)."""

from __future__ import annotations

import numpy as np

from immersivedepth.errors import RunError

__all__ = ["InpainterOutputError", "check_rgb_output", "check_distance_output"]


class InpainterOutputError(RunError):
    """An inpainter or distance completer returned something unusable (shape, NaN, range)."""


def _what(name: str, anchor: str) -> str:
    return f"inpainter {name} at anchor {anchor}"


def check_rgb_output(out, shape: tuple[int, int], *, name: str, anchor: str) -> np.ndarray:
    """``out`` must be a finite ``(H, W, 3)`` array in [0, 1] for ``shape`` ``(H, W)`` -> float32 copy."""
    try:
        a = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InpainterOutputError(f"{_what(name, anchor)} returned {type(out).__name__}, not an (H,W,3) array; "
                                   "fix the inpainter (inpaint.inpainter) to return RGB floats in [0, 1]") from exc
    if a.shape != (*shape, 3):
        raise InpainterOutputError(f"{_what(name, anchor)} returned shape {a.shape}, expected {(*shape, 3)}; fix the "
                                   "inpainter (inpaint.inpainter) to return the panorama's RGB")
    if not np.isfinite(a).all():
        raise InpainterOutputError(f"{_what(name, anchor)} returned {int((~np.isfinite(a)).sum())} NaN/inf values; "
                                   "fix the inpainter (inpaint.inpainter)")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise InpainterOutputError(f"{_what(name, anchor)} returned values in [{lo:.3g}, {hi:.3g}], outside [0, 1]; "
                                   "fix the inpainter (inpaint.inpainter) to return RGB floats in [0, 1]")
    return a.astype(np.float32)


def check_distance_output(out, shape: tuple[int, int], mask: np.ndarray, *, name: str, anchor: str) -> np.ndarray:
    """``out`` must be ``(H, W)`` with finite, positive values on ``mask`` -> float32 copy."""
    try:
        a = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InpainterOutputError(f"distance completer {name} at anchor {anchor} returned {type(out).__name__}; "
                                   "fix inpaint.completion to return an (H,W) distance array") from exc
    if a.shape != tuple(shape):
        raise InpainterOutputError(f"distance completer {name} at anchor {anchor} returned shape {a.shape}, expected "
                                   f"{tuple(shape)}; fix inpaint.completion")
    bad = mask & ~(np.isfinite(a) & (a > 0))
    if bad.any():
        raise InpainterOutputError(f"distance completer {name} at anchor {anchor} returned {int(bad.sum())} "
                                   "non-finite or non-positive distances inside the hole; fix inpaint.completion")
    return a.astype(np.float32)
