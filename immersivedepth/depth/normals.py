"""Surface normals of an ERP distance map.

Each pixel's 3-D point is ``P = distance * dir(lon, lat)``. Tangents come from neighbouring points: along
the row (longitude wraps around the seam) and along the column (the neighbour beyond a pole is the pixel
of the same row half a turn away, so the pole rows are handled like any other). Of the two one-sided
differences in each direction the one with the smaller distance change is used, so normals do not bend
across depth discontinuities. ``n = t_lon x t_lat`` is normalised and oriented towards the panorama centre
(``n . P < 0``): the floor's normal is +y.
"""

from __future__ import annotations

import numpy as np

from immersivedepth import sphere

__all__ = ["normals_from_distance", "distance_to_points"]


def distance_to_points(distance: np.ndarray) -> np.ndarray:
    """ERP distance ``(H, W)`` -> world points ``(H, W, 3)`` (float64) along each pixel's ray."""
    d = np.asarray(distance, np.float64)
    if d.ndim != 2:
        raise ValueError(f"distance must be an (H, W) map, got shape {d.shape}")
    return d[..., None] * sphere.erp_directions(d.shape[0], d.shape[1], np.float64)


def _vertical_neighbours(a: np.ndarray, step: int) -> np.ndarray:
    """Row ``v + step`` of ``a`` (H, W, ...) for every pixel, continuing across the poles."""
    h, w = a.shape[:2]
    rows = np.arange(h) + step
    over = (rows < 0) | (rows > h - 1)
    rows = np.where(rows < 0, -1 - rows, rows)
    rows = np.where(rows > h - 1, 2 * h - 1 - rows, rows)
    out = a[rows]
    if over.any():
        out[over] = np.roll(out[over], w // 2, axis=1)
    return out


def _one_sided(p, r, ok, p_plus, r_plus, ok_plus, p_minus, r_minus, ok_minus):
    """Tangent (H, W, 3) and its validity: the valid one-sided difference with the smaller |dr|."""
    fwd = p_plus - p
    bwd = p - p_minus
    use_fwd = ok_plus & (~ok_minus | (np.abs(r_plus - r) <= np.abs(r - r_minus)))
    t = np.where(use_fwd[..., None], fwd, bwd)
    return t, ok & (ok_plus | ok_minus)


def normals_from_distance(distance: np.ndarray) -> np.ndarray:
    """Unit world-frame normals ``(H, W, 3)`` float32 of an ERP distance map ``(H, W)``, facing the centre.

    Invalid pixels (non-finite or <= 0 distance, or without a valid neighbour in either direction) -> 0.
    """
    r = np.asarray(distance, np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 3:
        raise ValueError(f"normals_from_distance expects an (H, W) map with H >= 2, W >= 3, got shape {r.shape}")
    ok = np.isfinite(r) & (r > 0)
    r = np.where(ok, r, 0.0)
    p = distance_to_points(r)
    tu, oku = _one_sided(
        p, r, ok,
        np.roll(p, -1, axis=1), np.roll(r, -1, axis=1), np.roll(ok, -1, axis=1),
        np.roll(p, 1, axis=1), np.roll(r, 1, axis=1), np.roll(ok, 1, axis=1),
    )
    tv, okv = _one_sided(
        p, r, ok,
        _vertical_neighbours(p, 1), _vertical_neighbours(r, 1), _vertical_neighbours(ok, 1),
        _vertical_neighbours(p, -1), _vertical_neighbours(r, -1), _vertical_neighbours(ok, -1),
    )
    n = np.cross(tu, tv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    good = oku & okv & (norm[..., 0] > 1e-12)
    n = n / np.where(norm > 1e-12, norm, 1.0)
    flip = np.sum(n * p, axis=-1) > 0
    n = np.where(flip[..., None], -n, n)
    return np.where(good[..., None], n, 0.0).astype(np.float32)
