"""The one visibility rule of novel-view scoring (``mode=evaluate`` and ``benchmarks/bench_train.py``).

A novel-view pixel is **visible** from the training position (the panorama centre, origin) when its ground-truth
hit point ``P = position + d * dir`` is the first surface the centre sees in the direction ``P / |P|``:

    | |P| - D0(P / |P|) |  <=  rel_tol * |P|        (config ``evaluate.visibility.rel_tol``)

with ``D0`` the centre's distance in that direction (the exact ray cast of a synthetic scene, or the reference
distance map sampled bilinearly). The rule is symmetric: a point well in front of ``D0`` is not the surface the
centre saw either (bilinear samples across a depth edge land there), so it is not counted as seen. Pixels without a
valid ground-truth distance are neither visible nor disoccluded; **disoccluded** = valid and not visible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from immersivedepth import sphere


def hit_points(position, distance_at_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth hit points of a panorama at ``position`` ``(3,)`` with distance ``(h, w)``.

    Returns ``(valid (h,w) bool, radius |P| (h,w), direction P/|P| (h,w,3))``; invalid pixels get radius 0
    and the pixel's own ray direction.
    """
    d = np.asarray(distance_at_pose, np.float64)
    h, w = d.shape
    dirs = sphere.erp_directions(h, w, np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0)
    p = np.asarray(position, np.float64)[None, None, :] + dirs * np.where(valid, d, 0.0)[..., None]
    r = np.linalg.norm(p, axis=-1)
    u = np.where((r > 0)[..., None], p / np.maximum(r, np.finfo(np.float64).tiny)[..., None], dirs)
    return valid, np.where(valid, r, 0.0), u


def visible_mask(position, distance_at_pose: np.ndarray, centre_distance: Callable[[np.ndarray], np.ndarray],
                 rel_tol: float) -> np.ndarray:
    """``(h, w)`` bool: pixels of the panorama at ``position`` whose surface the centre also sees (module rule).

    ``centre_distance(u)`` maps unit directions ``(h, w, 3)`` to the centre's distance ``(h, w)`` along them
    (``<= 0`` or non-finite = unknown, never visible).
    """
    if not rel_tol >= 0:
        raise ValueError(f"evaluate.visibility.rel_tol must be >= 0, got {rel_tol}")
    valid, r, u = hit_points(position, distance_at_pose)
    d0 = np.asarray(centre_distance(u), np.float64)
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(d0) & (d0 > 0)
        return valid & seen & (np.abs(r - np.where(seen, d0, 0.0)) <= rel_tol * r)


def centre_map_sampler(centre_distance: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A ``centre_distance`` callable for :func:`visible_mask` from an ERP distance map ``(H, W)`` (bilinear)."""
    dist = np.asarray(centre_distance, np.float64)
    return lambda u: sphere.erp_sample_dirs(dist, u)
