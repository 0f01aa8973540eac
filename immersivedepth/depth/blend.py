"""Blend aligned tiles into one ERP distance map, measure seams.

Each aligned tile gives an inverse planar depth ``q_k`` ``(h, w)``; its ray distance is
``r_k = ray_norm_factor / q_k``. Every ERP pixel takes the weighted mean of ``T(r_k)`` over the tiles that
see it (``T`` = log, inverse or identity: ``blend.space``) with the weight
:func:`~immersivedepth.depth.tiles.border_weight` of the tile pixel it lands on, which is 1 at the tile
centre and falls continuously to 0 at the tile border, so no tile edge can leave a jump.

``blend.mode = gradient`` additionally solves a screened Poisson problem on the ERP grid (longitude
wraps): the log-distance whose finite differences best match the weighted mean of the tiles' own
differences, screened towards the weighted blend with weight ``screen``. Residual disagreements then
spread smoothly over the overlaps instead of following the weight ramps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from immersivedepth import sphere
from immersivedepth.depth.tiles import border_weight, tile_erp_window

__all__ = ["BlendConfig", "BlendResult", "blend_tiles", "tile_footprint_boundaries", "seam_metric"]


@dataclass
class BlendConfig:
    """Parameters of :func:`blend_tiles` (the ``depth.blend`` config group)."""

    mode: str = "weighted"  # weighted | gradient (screened Poisson on log distance)
    space: str = "log"  # log | disparity | distance: what is averaged
    power: float = 2.0  # border-falloff exponent of the tile weights (0: uniform weights = plain averaging)
    confidence_tau: float = 0.05  # log-distance spread at which confidence = exp(-1/2)
    single_view_confidence: float = 0.5  # confidence of pixels seen by one tile only (no cross-check)
    screen: float = 0.05  # gradient mode: weight of the blended values against the blended gradients
    cg_tol: float = 1e-6  # gradient mode: conjugate-gradient tolerance
    cg_maxiter: int = 400  # gradient mode: conjugate-gradient iteration limit

    def __post_init__(self) -> None:
        if self.mode not in ("weighted", "gradient"):
            raise ValueError(f"depth.blend.mode must be weighted or gradient, got {self.mode!r}")
        if self.space not in ("log", "disparity", "distance"):
            raise ValueError(f"depth.blend.space must be log, disparity or distance, got {self.space!r}")
        if self.power < 0:
            raise ValueError(f"depth.blend.power must be >= 0, got {self.power}")
        if self.confidence_tau <= 0:
            raise ValueError(f"depth.blend.confidence_tau must be > 0, got {self.confidence_tau}")


@dataclass
class BlendResult:
    """``distance`` ``(H, W)`` float32 (0 where no tile has a valid value), ``confidence`` ``(H, W)`` in
    [0, 1], ``views`` ``(H, W)`` int number of tiles with a positive weight, ``info`` timings."""

    distance: np.ndarray
    confidence: np.ndarray
    views: np.ndarray
    info: dict = field(default_factory=dict)


_FORWARD = {
    "log": lambda r: np.log(r),
    "disparity": lambda r: 1.0 / r,
    "distance": lambda r: r,
}
_INVERSE = {
    "log": lambda t: np.exp(t),
    "disparity": lambda t: 1.0 / t,
    "distance": lambda t: t,
}


def _segments(cols: np.ndarray) -> list[np.ndarray]:
    """Split wrapped column indices into runs of consecutive columns (at most two for a window)."""
    cuts = np.flatnonzero(np.diff(cols) != 1) + 1
    return np.split(cols, cuts)


def _project_block(cam: sphere.TangentCamera, lat: np.ndarray, lon: np.ndarray):
    """Tile pixel coords (float32 maps for cv2.remap) of the ERP block ``lat (h',) x lon (w',)``.

    Uses the separable form ``dir = (cos lat sin lon, sin lat, -cos lat cos lon)`` (no 3-D array).
    """
    cla, sla = np.cos(lat).astype(np.float32)[:, None], np.sin(lat).astype(np.float32)[:, None]
    sl, cl = np.sin(lon).astype(np.float32)[None, :], np.cos(lon).astype(np.float32)[None, :]
    r = cam.R.astype(np.float32)

    def comp(j):  # world direction . camera axis j
        return r[0, j] * (cla * sl) + r[1, j] * sla - r[2, j] * (cla * cl)

    z = comp(2)
    front = z > 1e-6
    inv = np.where(front, 1.0 / np.where(front, z, 1.0), 0.0).astype(np.float32)
    x = cam.K[0, 0] * comp(0) * inv + np.float32(cam.K[0, 2] - 0.5)
    y = cam.K[1, 1] * comp(1) * inv + np.float32(cam.K[1, 2] - 0.5)
    x[~front] = -1e4
    y[~front] = -1e4
    return x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)


def _ray_norm(cam: sphere.TangentCamera) -> np.ndarray:
    """``sqrt(x^2 + y^2 + 1)`` ``(h, w)`` float32 of a tile's normalised pixel-centre coordinates."""
    x = ((np.arange(cam.width) + 0.5 - cam.K[0, 2]) / cam.K[0, 0]).astype(np.float32)
    y = ((np.arange(cam.height) + 0.5 - cam.K[1, 2]) / cam.K[1, 1]).astype(np.float32)
    return np.sqrt(y[:, None] ** 2 + x[None, :] ** 2 + 1.0)


def blend_tiles(
    cameras: Sequence[sphere.TangentCamera],
    inv_depth: np.ndarray,
    height: int,
    width: int,
    cfg: BlendConfig | None = None,
) -> BlendResult:
    """Blend aligned tiles (inverse planar depth ``(N, h, w)``, <= 0 = invalid) into an ERP ``(H, W)``."""
    cfg = cfg or BlendConfig()
    t0 = time.perf_counter()
    n = len(cameras)
    q = np.asarray(inv_depth, np.float32)
    if q.ndim != 3 or q.shape[0] != n:
        raise ValueError(f"blend_tiles: inv_depth has shape {q.shape}; expected ({n}, h, w)")
    fwd = _FORWARD[cfg.space]
    lon_all, _ = sphere.pixel_to_lonlat(np.arange(width, dtype=np.float64), 0.0, width, height)
    _, lat_all = sphere.pixel_to_lonlat(0.0, np.arange(height, dtype=np.float64), width, height)
    sw = np.zeros((height, width), np.float32)
    swt = np.zeros((height, width), np.float32)
    swl = np.zeros((height, width), np.float32)
    swl2 = np.zeros((height, width), np.float32)
    views = np.zeros((height, width), np.int32)
    gradient = cfg.mode == "gradient"
    if gradient:
        gx_num = np.zeros((height, width), np.float64)
        gx_den = np.zeros((height, width), np.float64)
        gy_num = np.zeros((height, width), np.float64)
        gy_den = np.zeros((height, width), np.float64)
    for k, cam in enumerate(cameras):
        h, w = cam.height, cam.width
        qk = q[k]
        valid = np.isfinite(qk) & (qk > 0)
        all_valid = bool(valid.all())
        r = _ray_norm(cam) / (qk if all_valid else np.where(valid, qk, 1.0))
        t = fwd(r).astype(np.float32)
        logr = t if cfg.space == "log" else np.log(r).astype(np.float32)
        if not all_valid:  # invalid pixels get a neutral value (their weight is 0)
            t = np.where(valid, t, float(np.median(t[valid])) if valid.any() else 0.0).astype(np.float32)
            logr = np.where(valid, logr, float(np.median(logr[valid])) if valid.any() else 0.0).astype(np.float32)
        wk = (border_weight(h, w, cfg.power) * valid).astype(np.float32)
        (r0, r1), cols = tile_erp_window(cam, height, width)
        for seg in _segments(cols):
            c0, c1 = int(seg[0]), int(seg[-1]) + 1
            full = c1 - c0 == width
            mx, my = _project_block(cam, lat_all[r0:r1], lon_all[c0:c1])
            tw = cv2.remap(wk, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            np.maximum(tw, 0.0, out=tw)
            tv = cv2.remap(t, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            tl = tv if cfg.space == "log" else cv2.remap(logr, mx, my, cv2.INTER_LINEAR,
                                                          borderMode=cv2.BORDER_REPLICATE)
            wl = tw * tl
            sw[r0:r1, c0:c1] += tw
            swt[r0:r1, c0:c1] += wl if cfg.space == "log" else tw * tv
            swl[r0:r1, c0:c1] += wl
            swl2[r0:r1, c0:c1] += wl * tl
            views[r0:r1, c0:c1] += tw > 0
            if gradient:
                # differences of this tile's log distance between ERP neighbours both inside the tile
                dx = (np.roll(tl, -1, axis=1) - tl) if full else np.diff(tl, axis=1, append=tl[:, -1:])
                nxt = np.roll(tw, -1, axis=1) if full else np.concatenate([tw[:, 1:], np.zeros_like(tw[:, :1])], 1)
                wx = np.minimum(tw, nxt)
                dy = np.diff(tl, axis=0, append=tl[-1:])
                wy = np.minimum(tw, np.concatenate([tw[1:], np.zeros_like(tw[:1])], axis=0))
                gx_num[r0:r1, c0:c1] += wx * dx
                gx_den[r0:r1, c0:c1] += wx
                gy_num[r0:r1, c0:c1] += wy * dy
                gy_den[r0:r1, c0:c1] += wy
    covered = sw > 1e-12
    mean_t = np.where(covered, swt / np.where(covered, sw, 1.0), np.nan)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dist = _INVERSE[cfg.space](mean_t)
    mean_l = np.where(covered, swl / np.where(covered, sw, 1.0), 0.0)
    var = np.maximum(np.where(covered, swl2 / np.where(covered, sw, 1.0), 0.0) - mean_l**2, 0.0)
    conf = np.exp(-0.5 * var / cfg.confidence_tau**2)
    conf = np.where(views == 1, np.minimum(conf, cfg.single_view_confidence), conf)
    info: dict = {}
    if gradient:
        tp = time.perf_counter()
        base = np.where(covered & np.isfinite(dist) & (dist > 0), np.log(np.where(dist > 0, dist, 1.0)), 0.0)
        gx = np.where(gx_den > 1e-12, gx_num / np.maximum(gx_den, 1e-12), 0.0)
        gy = np.where(gy_den > 1e-12, gy_num / np.maximum(gy_den, 1e-12), 0.0)
        logd, it = _screened_poisson(base, gx, gy, (gx_den > 1e-12), (gy_den > 1e-12) & (np.arange(height) <
                                     height - 1)[:, None], covered, cfg)
        dist = np.where(covered, np.exp(logd), 0.0)
        info["poisson_time"] = time.perf_counter() - tp
        info["poisson_iterations"] = it
    dist = np.where(covered & np.isfinite(dist) & (dist > 0), dist, 0.0).astype(np.float32)
    conf = np.where(dist > 0, conf, 0.0).astype(np.float32)
    info["blend_time"] = time.perf_counter() - t0
    info["blend_uncovered_pixels"] = int((~covered).sum())
    return BlendResult(distance=dist, confidence=conf, views=views, info=info)


def _screened_poisson(base, gx, gy, mx, my, covered, cfg: BlendConfig):
    """argmin_L sum mx (L[u+1]-L[u]-gx)^2 + my (L[v+1]-L[v]-gy)^2 + screen * covered * (L - base)^2.

    Longitude wraps; solved by conjugate gradients from ``base``. Returns (L, iterations).
    """
    h, w = base.shape
    n = h * w
    idx = np.arange(n).reshape(h, w)
    right = np.roll(idx, -1, axis=1)
    down = np.concatenate([idx[1:], idx[-1:]], axis=0)
    wx = mx.ravel().astype(np.float64)
    wy = my.ravel().astype(np.float64)
    dx = sp.csr_matrix((np.concatenate([-wx, wx]), (np.tile(np.arange(n), 2), np.concatenate([idx.ravel(),
                        right.ravel()]))), shape=(n, n))
    dy = sp.csr_matrix((np.concatenate([-wy, wy]), (np.tile(np.arange(n), 2), np.concatenate([idx.ravel(),
                        down.ravel()]))), shape=(n, n))
    s = cfg.screen * covered.ravel().astype(np.float64)
    a = (dx.T @ dx + dy.T @ dy + sp.diags(s + 1e-9)).tocsr()
    b = dx.T @ (wx * gx.ravel()) + dy.T @ (wy * gy.ravel()) + s * base.ravel()
    count = [0]

    def cb(_):
        count[0] += 1

    diag = a.diagonal()
    pre = sp.diags(1.0 / np.maximum(diag, 1e-12))
    sol, _ = spla.cg(a, b, x0=base.ravel(), rtol=cfg.cg_tol, maxiter=int(cfg.cg_maxiter), M=pre, callback=cb)
    return sol.reshape(h, w), count[0]


def tile_footprint_boundaries(cameras: Sequence[sphere.TangentCamera], height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool: ERP pixels on the border of some tile's footprint (inside it, next to a pixel outside)."""
    dirs = sphere.erp_directions(height, width, np.float64)
    out = np.zeros((height, width), bool)
    for cam in cameras:
        _, _, m = cam.project(dirs)
        inner = m.copy()
        inner &= np.roll(m, 1, axis=1) & np.roll(m, -1, axis=1)
        inner[1:] &= m[:-1]
        inner[:-1] &= m[1:]
        out |= m & ~inner
    return out


def _dilate_wrap(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask.copy()
    pad = np.concatenate([mask[:, -radius:], mask, mask[:, :radius]], axis=1).astype(np.uint8)
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(pad, ker)[:, radius:-radius].astype(bool)


def seam_metric(
    distance: np.ndarray,
    cameras: Sequence[sphere.TangentCamera],
    reference: np.ndarray | None = None,
    *,
    band_px: int = 1,
    inside_margin_px: int = 4,
    max_abs_lat_deg: float = 80.0,
) -> dict[str, float]:
    """Seam strength of a blended ERP distance map.

    Field: ``e = log(distance)`` or, with a ``reference`` ``(H, W)``, the log error
    ``e = log(distance) - log(reference) - median(...)`` (scene edges cancel, only estimation error stays).
    Its angular gradient magnitude ``|grad e|`` (per radian: forward differences, the longitude one divided
    by ``cos(lat) * 2*pi/W``, the latitude one by ``pi/H``; longitude wraps) is averaged with ``cos(lat)``
    area weights over

    - ``border``: pixels within ``band_px`` of a tile footprint's boundary,
    - ``inside``: pixels farther than ``inside_margin_px`` from every footprint boundary,

    both restricted to valid pixels with ``|lat| <= max_abs_lat_deg``. Returns ``border``, ``inside`` and
    ``ratio = border / inside`` (1 = no seam; a jump at tile borders makes it large).
    """
    d = np.asarray(distance, np.float64)
    h, w = d.shape
    valid = np.isfinite(d) & (d > 0)
    e = np.log(np.where(valid, d, 1.0))
    if reference is not None:
        ref = np.asarray(reference, np.float64)
        if ref.shape != d.shape:
            raise ValueError(f"seam_metric: reference shape {ref.shape} differs from distance {d.shape}")
        valid &= np.isfinite(ref) & (ref > 0)
        e = e - np.log(np.where(valid, ref, 1.0))
        e -= np.median(e[valid])
    _, lat = sphere.erp_lonlat_grid(h, w)
    gx = (np.roll(e, -1, axis=1) - e) / (np.cos(lat) * 2 * math.pi / w)
    gy = np.zeros_like(e)
    gy[:-1] = (e[1:] - e[:-1]) / (math.pi / h)
    ok = valid & np.roll(valid, -1, axis=1)
    ok[:-1] &= valid[1:]
    ok[-1] = False
    ok &= np.abs(np.degrees(lat)) <= max_abs_lat_deg
    g = np.sqrt(gx * gx + gy * gy)
    bnd = tile_footprint_boundaries(cameras, h, w)
    border = _dilate_wrap(bnd, band_px) & ok
    inside = ~_dilate_wrap(bnd, inside_margin_px) & ok
    area = np.cos(lat)

    def wmean(m):
        return float((g[m] * area[m]).sum() / max(area[m].sum(), 1e-12))

    b, i = wmean(border), wmean(inside)
    return {"border": b, "inside": i, "ratio": b / max(i, 1e-12)}
