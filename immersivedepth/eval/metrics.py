"""Evaluation metrics: depth/distance errors, image PSNR, scale(/shift) alignment, Chamfer distance.

Conventions (those of the 360 depth literature, e.g. 360MonoDepth): a ground-truth pixel is valid when it is
finite, ``> 0`` and, if ``max_depth`` is given, ``<= max_depth``. Errors are means over valid pixels, optionally
weighted per pixel (e.g. the ERP solid angle :func:`immersivedepth.sphere.pixel_solid_angle`, so that
the poles do not count more than the equator). Say which alignment was used when reporting numbers:
none, :func:`align_scale` (median or least squares) or :func:`align_scale_shift` (least squares in
depth or in disparity space) -- numbers under different alignments are not comparable.

All functions take numpy arrays (or CPU torch tensors, converted) and compute in float64.
"""

from __future__ import annotations

import numpy as np

from immersivedepth import sphere

__all__ = [
    "depth_metrics", "psnr", "ws_psnr", "ssim", "align_scale", "align_scale_shift", "chamfer", "valid_mask",
]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "mae", "d1", "d2", "d3")


def _np(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a numeric array, got dtype {a.dtype}")
    return a.astype(np.float64)


def _same_shape(pred: np.ndarray, gt: np.ndarray, fn: str) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{fn}: pred shape {pred.shape} differs from gt shape {gt.shape}; resample one to the other")


def _mask(x, shape, name: str, fn: str) -> np.ndarray:
    if x is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    try:
        return np.broadcast_to(m.astype(bool), shape)
    except ValueError as exc:
        raise ValueError(f"{fn}: {name} shape {m.shape} does not broadcast to {shape}") from exc


def _weights(w, shape, fn: str) -> np.ndarray:
    if w is None:
        return np.ones(shape, dtype=np.float64)
    a = _np(w, "weights")
    try:
        a = np.broadcast_to(a, shape)
    except ValueError as exc:
        raise ValueError(f"{fn}: weights shape {a.shape} does not broadcast to {shape}") from exc
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{fn}: weights must be finite and >= 0")
    return a


def valid_mask(gt, valid=None, max_depth: float | None = None) -> np.ndarray:
    """Boolean mask of valid ground truth (same shape as ``gt``): finite, ``> 0``, ``<= max_depth``, and ``valid``."""
    g = _np(gt, "gt")
    with np.errstate(invalid="ignore"):
        m = np.isfinite(g) & (g > 0)
        if max_depth is not None:
            if not max_depth > 0:
                raise ValueError(f"max_depth must be > 0 (or None), got {max_depth}")
            m &= g <= max_depth
    return m & _mask(valid, g.shape, "valid", "valid_mask")


def _wmean(x: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(x * w) / np.sum(w))


def depth_metrics(pred, gt, valid=None, max_depth: float | None = None, weights=None, *,
                  min_pred: float = 1e-3) -> dict:
    """Standard depth errors of ``pred`` against ``gt`` (same shape, e.g. ``(H,W)``, same units).

    ``valid``: optional extra mask (broadcastable); ``max_depth``: ignore GT beyond it; ``weights``: optional
    non-negative per-pixel weights (broadcastable), e.g. ERP solid angles. Predictions are clipped below at
    ``min_pred`` (so log and ratio errors stay finite); non-finite predictions at valid pixels are an error.

    Returns ``abs_rel`` mean(|p-g|/g), ``sq_rel`` mean((p-g)^2/g), ``rmse`` sqrt(mean((p-g)^2)), ``rmse_log``
    sqrt(mean((ln p - ln g)^2)), ``mae`` mean(|p-g|), ``d1``/``d2``/``d3`` fraction with max(p/g, g/p) < 1.25^k,
    and ``n_valid`` (pixel count). Means are weighted means when ``weights`` is given.
    """
    p, g = _np(pred, "pred"), _np(gt, "gt")
    _same_shape(p, g, "depth_metrics")
    m = valid_mask(g, valid, max_depth)
    w = _weights(weights, g.shape, "depth_metrics")
    m &= w > 0
    if not m.any():
        raise ValueError("depth_metrics: no valid ground-truth pixels (finite, > 0"
                         + (f", <= max_depth={max_depth}" if max_depth is not None else "")
                         + ", inside `valid`, weight > 0); check the GT units, its invalid encoding and max_depth")
    bad = ~np.isfinite(p[m])
    if bad.any():
        raise ValueError(f"depth_metrics: pred has {int(bad.sum())} non-finite values at valid ground-truth pixels; "
                         "exclude them with `valid=` or fill them")
    p, g, w = np.maximum(p[m], min_pred), g[m], w[m]
    diff = p - g
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": _wmean(np.abs(diff) / g, w),
        "sq_rel": _wmean(diff**2 / g, w),
        "rmse": float(np.sqrt(_wmean(diff**2, w))),
        "rmse_log": float(np.sqrt(_wmean((np.log(p) - np.log(g)) ** 2, w))),
        "mae": _wmean(np.abs(diff), w),
        "d1": _wmean((ratio < 1.25).astype(np.float64), w),
        "d2": _wmean((ratio < 1.25**2).astype(np.float64), w),
        "d3": _wmean((ratio < 1.25**3).astype(np.float64), w),
        "n_valid": int(m.sum()),
    }


def psnr(pred, gt, mask=None, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(max_val^2 / MSE)`` in dB; ``inf`` for identical images.

    ``pred``, ``gt``: same shape, ``(H,W)`` or ``(H,W,C)``; ``mask`` ``(H,W)`` (or broadcastable) selects pixels
    (all channels of a selected pixel count).
    """
    p, g = _np(pred, "pred"), _np(gt, "gt")
    _same_shape(p, g, "psnr")
    if not max_val > 0:
        raise ValueError(f"psnr: max_val must be > 0, got {max_val}")
    if mask is not None:
        m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask).astype(bool)
        if p.ndim == m.ndim + 1:
            m = m[..., None]
        try:
            m = np.broadcast_to(m, p.shape)
        except ValueError as exc:
            raise ValueError(f"psnr: mask shape {np.shape(mask)} does not match image shape {p.shape}") from exc
        if not m.any():
            raise ValueError("psnr: mask selects no pixels")
        p, g = p[m], g[m]
    mse = float(np.mean((p - g) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max_val**2 / mse))


def ws_psnr(pred, gt, mask=None, max_val: float = 1.0) -> float:
    """WS-PSNR of equirectangular images: PSNR of the ``cos(latitude)``-weighted MSE, in dB.

    Sun, Lu & Yu, "Weighted-to-spherically-uniform quality evaluation for omnidirectional video" (2017):
    ``WMSE = sum w (p - g)^2 / sum w`` with ``w(row) = cos(lat(row))`` (the ERP pixel's share of the
    sphere), ``WS-PSNR = 10 log10(max_val^2 / WMSE)``; ``inf`` for identical images. ``pred``, ``gt``:
    ``(H,W)`` or ``(H,W,C)`` ERP images (row 0 = zenith); ``mask`` ``(H,W)`` selects pixels.
    """
    p, g = _np(pred, "pred"), _np(gt, "gt")
    _same_shape(p, g, "ws_psnr")
    if p.ndim not in (2, 3):
        raise ValueError(f"ws_psnr: expects an (H,W) or (H,W,C) panorama, got shape {p.shape}")
    if not max_val > 0:
        raise ValueError(f"ws_psnr: max_val must be > 0, got {max_val}")
    h, w = p.shape[:2]
    wts = sphere.cos_lat_weights(h, w, np.float64) * _mask(mask, (h, w), "mask", "ws_psnr")
    if not np.any(wts > 0):
        raise ValueError("ws_psnr: mask selects no pixels")
    err = (p - g) ** 2
    if err.ndim == 3:
        err = err.mean(axis=2)  # every channel of a pixel counts once, as in psnr()
    wmse = float(np.sum(wts * err) / np.sum(wts))
    if wmse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max_val**2 / wmse))


# SSIM constants of Wang, Bovik, Sheikh & Simoncelli (2004): K1, K2 and the 11x11 Gaussian window, sigma 1.5.
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_RADIUS = 0.01, 0.03, 1.5, 5


def _gaussian_blur(x: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Separable Gaussian filter of an ``(H,W)`` map, ``valid`` region only: ``(H-2r, W-2r)``."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    rows = sum(k[i] * x[i : x.shape[0] - 2 * radius + i] for i in range(2 * radius + 1))
    return sum(k[j] * rows[:, j : x.shape[1] - 2 * radius + j] for j in range(2 * radius + 1))


def ssim_map(pred, gt, max_val: float = 1.0) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004, Gaussian 11x11 window, sigma 1.5, K1 0.01, K2 0.03).

    ``pred``, ``gt`` ``(H,W)`` or ``(H,W,C)`` (channels averaged) -> ``(H,W)``. Windows do not cross the image
    border: the ``r = 5`` pixels along each edge copy their nearest interior value (so masks keep their shape).
    """
    p, g = _np(pred, "pred"), _np(gt, "gt")
    _same_shape(p, g, "ssim")
    if p.ndim == 2:
        p, g = p[..., None], g[..., None]
    r = SSIM_RADIUS
    if p.ndim != 3 or min(p.shape[:2]) <= 2 * r:
        raise ValueError(f"ssim: expects (H,W) or (H,W,C) images larger than {2 * r + 1}x{2 * r + 1}, got {p.shape}")
    c1, c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
    maps = []
    for c in range(p.shape[2]):
        x, y = p[..., c], g[..., c]
        blur = lambda a: _gaussian_blur(a, SSIM_SIGMA, r)
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        maps.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    inner = np.mean(maps, axis=0)
    return np.pad(inner, r, mode="edge")


def ssim(pred, gt, mask=None, max_val: float = 1.0) -> float:
    """Mean SSIM (:func:`ssim_map`) over the pixels selected by ``mask`` ``(H,W)`` (all when ``None``)."""
    smap = ssim_map(pred, gt, max_val)
    m = _mask(mask, smap.shape, "mask", "ssim")
    if not m.any():
        raise ValueError("ssim: mask selects no pixels")
    return float(smap[m].mean())


def _fit_mask(p: np.ndarray, g: np.ndarray, valid, fn: str, positive_pred: bool) -> np.ndarray:
    m = valid_mask(g, valid)
    with np.errstate(invalid="ignore"):
        m &= np.isfinite(p)
        if positive_pred:
            m &= p > 0
    if not m.any():
        raise ValueError(f"{fn}: no pixels to fit (need GT finite and > 0, pred finite"
                         + (" and > 0" if positive_pred else "") + ", inside `valid`)")
    return m


def align_scale(pred, gt, valid=None, method: str = "median", weights=None):
    """Scale-only alignment ``s * pred ~ gt`` over valid pixels.

    ``method``: ``"median"`` (``s = median(gt) / median(pred)``) or ``"lsq"`` (least squares,
    ``s = sum w p g / sum w p^2``; ``weights`` optional). Returns ``(aligned (same shape as pred), s)``;
    ``aligned = s * pred`` everywhere (also at invalid pixels).
    """
    p, g = _np(pred, "pred"), _np(gt, "gt")
    _same_shape(p, g, "align_scale")
    m = _fit_mask(p, g, valid, "align_scale", positive_pred=(method == "median"))
    if method == "median":
        s = float(np.median(g[m]) / np.median(p[m]))
    elif method == "lsq":
        w = _weights(weights, g.shape, "align_scale")[m]
        den = np.sum(w * p[m] ** 2)
        if den == 0:
            raise ValueError("align_scale: prediction is zero over the valid pixels; cannot fit a scale")
        s = float(np.sum(w * p[m] * g[m]) / den)
    else:
        raise ValueError(f"align_scale: method must be 'median' or 'lsq', got {method!r}")
    return s * p, s


def _lsq_affine(x: np.ndarray, y: np.ndarray, w: np.ndarray, fn: str) -> tuple[float, float]:
    """Weighted least squares ``y ~ s x + t`` (closed form on centred data)."""
    sw = np.sum(w)
    if sw <= 0:
        raise ValueError(f"{fn}: all weights are zero over the valid pixels")
    mx, my = np.sum(w * x) / sw, np.sum(w * y) / sw
    xc, yc = x - mx, y - my
    var = np.sum(w * xc * xc)
    if var <= 1e-300 or var <= 1e-24 * sw * max(mx * mx, 1e-300):
        raise ValueError(f"{fn}: prediction is constant over the valid pixels; cannot fit scale and shift")
    s = float(np.sum(w * xc * yc) / var)
    return s, float(my - s * mx)


def align_scale_shift(pred, gt, valid=None, space: str = "depth", *, pred_is_disparity: bool = False,
                      weights=None, depth_cap: float | None = None):
    """Least-squares scale and shift alignment of ``pred`` to ``gt`` (depth/distance, same shape).

    ``space="depth"``: fit ``s * pred + t ~ gt``; ``aligned = s * pred + t``.
    ``space="disparity"``: fit ``s * q + t ~ 1 / gt`` with ``q = pred`` if ``pred_is_disparity`` (e.g. a
    monocular model's output) else ``q = 1 / pred``; ``aligned = 1 / max(s * q + t, 1 / depth_cap)`` (depth),
    where ``depth_cap`` defaults to the largest valid GT value (as MiDaS's evaluation caps disparity).
    (``pred_is_disparity`` requires ``space="disparity"``.)
    ``weights``: optional per-pixel weights of the fit. Returns ``(aligned (same shape as pred), s, t)``.
    """
    p, g = _np(pred, "pred"), _np(gt, "gt")
    _same_shape(p, g, "align_scale_shift")
    if space not in ("depth", "disparity"):
        raise ValueError(f"align_scale_shift: space must be 'depth' or 'disparity', got {space!r}")
    if space == "depth" and pred_is_disparity:
        raise ValueError("align_scale_shift: pred_is_disparity=True needs space='disparity' "
                         "(an affine fit of disparity to depth is not meaningful)")
    need_pos = space == "disparity" and not pred_is_disparity
    m = _fit_mask(p, g, valid, "align_scale_shift", positive_pred=need_pos)
    w = _weights(weights, g.shape, "align_scale_shift")[m]
    if space == "depth":
        s, t = _lsq_affine(p[m], g[m], w, "align_scale_shift")
        return s * p + t, s, t
    with np.errstate(divide="ignore", invalid="ignore"):
        q = p if pred_is_disparity else 1.0 / p
    s, t = _lsq_affine(q[m], 1.0 / g[m], w, "align_scale_shift")
    cap = float(np.max(g[m])) if depth_cap is None else float(depth_cap)
    if not cap > 0:
        raise ValueError(f"align_scale_shift: depth_cap must be > 0, got {depth_cap}")
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.maximum(s * q + t, 1.0 / cap)
        aligned = 1.0 / disp
    return aligned, s, t


def chamfer(points_a, points_b, threshold: float | None = None, *, workers: int = 1) -> dict:
    """Chamfer distance between point sets ``points_a`` ``(N,3)`` and ``points_b`` ``(M,3)`` (any dimension D).

    Returns ``a_to_b`` = mean over a of the distance to the nearest point of b, ``b_to_a`` likewise, and
    ``chamfer`` = their average (Euclidean, not squared). With ``threshold`` also ``precision`` (fraction
    of a within it of b), ``recall`` (fraction of b within it of a) and their harmonic mean ``fscore``.
    """
    from scipy.spatial import cKDTree

    a, b = _np(points_a, "points_a"), _np(points_b, "points_b")
    for name, x in (("points_a", a), ("points_b", b)):
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"chamfer: {name} must be a non-empty (N,D) array, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"chamfer: {name} contains non-finite coordinates")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"chamfer: points_a has dimension {a.shape[1]} but points_b has {b.shape[1]}")
    dab, _ = cKDTree(b).query(a, k=1, workers=workers)
    dba, _ = cKDTree(a).query(b, k=1, workers=workers)
    out = {"a_to_b": float(dab.mean()), "b_to_a": float(dba.mean())}
    out["chamfer"] = 0.5 * (out["a_to_b"] + out["b_to_a"])
    if threshold is not None:
        if not threshold > 0:
            raise ValueError(f"chamfer: threshold must be > 0, got {threshold}")
        prec = float(np.mean(dab <= threshold))
        rec = float(np.mean(dba <= threshold))
        out.update(precision=prec, recall=rec, fscore=0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    return out
