"""Which pixels of an anchor panorama were already seen, and which filled pixels contradict what was seen.

A *view* is a world-aligned supervision panorama: its ``position`` ``(3,)`` and ``distance`` ``(H, W)``. Every
pixel of the anchor panorama at ``position`` with distance ``d`` has the 3D point ``x = position + d dir``.

* ``x`` was **seen** by a view when it is no farther from the view's centre than what the view saw in that
  direction: ``r <= seen (1 + rel_tol) + abs_tol`` (:func:`sphere.panorama_depth_test`). A pixel is **unseen**
  when no view saw its point, or when the field put nothing there (opacity below ``min_opacity``).
* A filled pixel **conflicts** (PERF's check) when its point would sit clearly in front of a surface an earlier
  view saw through that spot: ``r < seen (1 - rel_tol) - abs_tol``; the view would have seen it, so it is erased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from immersivedepth import sphere

__all__ = ["View", "unseen_mask", "conflict_mask"]


@dataclass(frozen=True)
class View:
    """A world-aligned panorama that supervises the field: ``position`` ``(3,)``, ``distance`` ``(H, W)``."""

    position: np.ndarray
    distance: np.ndarray


def unseen_mask(position, distance: np.ndarray, views: Sequence[View], *, rel_tol: float, abs_tol: float,
                opacity: np.ndarray | None = None, min_opacity: float = 0.5) -> np.ndarray:
    """Pixels of the panorama at ``position`` (rendered ``distance`` ``(H, W)``, optional ``opacity`` ``(H, W)``)
    that no view in ``views`` saw -> ``(H, W)`` bool."""
    d = np.asarray(distance, np.float64)
    valid = np.isfinite(d) & (d > 0)
    if opacity is not None:
        valid &= np.asarray(opacity) >= min_opacity
    pts = sphere.erp_points(position, d)
    seen = np.zeros(d.shape, bool)
    for v in views:
        todo = valid & ~seen
        if not todo.any():
            break
        r, s = sphere.panorama_depth_test(pts[todo], v.position, v.distance)
        seen[todo] = (s > 0) & (r <= s * (1.0 + rel_tol) + abs_tol)
    return ~(valid & seen)


def conflict_mask(position, distance: np.ndarray, mask: np.ndarray, views: Sequence[View], *, rel_tol: float,
                  abs_tol: float) -> np.ndarray:
    """Filled pixels (``mask`` ``(H, W)``) of the panorama at ``position`` with completed ``distance`` ``(H, W)``
    whose points sit in front of a surface some view saw -> ``(H, W)`` bool (a subset of ``mask``)."""
    m = np.asarray(mask, bool)
    out = np.zeros(m.shape, bool)
    if not m.any():
        return out
    d = np.asarray(distance, np.float64)
    pts = sphere.erp_points(position, d)[m]
    hit = np.zeros(pts.shape[0], bool)
    for v in views:
        r, s = sphere.panorama_depth_test(pts, v.position, v.distance)
        hit |= (s > 0) & (r < s * (1.0 - rel_tol) - abs_tol)
    out[m] = hit | ~(np.isfinite(d[m]) & (d[m] > 0))
    return out
