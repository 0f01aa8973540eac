"""Fusing the disparities of several depth models, tile by tile, before the global alignment.

1. Common frame: every model's tile disparity is mapped onto the *reference* model's tile by a robust
   per-tile affine fit ``a * d_m + b ~ d_ref`` (Huber IRLS on a pixel subsample). Disparities of
   different networks differ by exactly such an unknown affine map, so afterwards they are comparable.
2. Rule (``depth.fusion``):

   - ``mean``: per-pixel mean of the models' (aligned) disparities;
   - ``weighted``: ``sum_m w_m d_m / sum_m w_m`` with ``depth.fuse.weights`` (list in model order or a
     ``{name: weight}`` mapping);
   - ``multiband``: ``exp(G_sigma * log d_base + (log d_detail - G_sigma * log d_detail))``: the low band
     (global structure) of the ``base`` model plus the high band (fine detail, edges) of the ``detail``
     model, split in log disparity so that a slowly varying scale error of the detail model cancels
     (``band_space: linear`` splits the disparity itself). ``G_sigma`` is a Gaussian of
     ``band_sigma * tile width`` pixels. Default base = the last model, detail = the first,
     i.e. for ``[dav2_vitl, midas_beit_l512]`` the layout from MiDaS and the edges from Depth Anything V2.

Pixels a model marks invalid (disparity 0) are left out of ``mean``/``weighted``; ``multiband`` falls back
to the base model where the detail model is invalid. The fused disparity goes to :mod:`.align`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["FUSION_RULES", "FuseConfig", "fit_affine", "fuse_disparities"]

FUSION_RULES = ("mean", "weighted", "multiband")


@dataclass
class FuseConfig:
    """Parameters of :func:`fuse_disparities` (the ``depth.fuse`` config group)."""

    weights: Any = None  # weighted: per-model weights (list in model order or {name: w})
    reference: str | int | None = None  # frame all models are fitted to; None: the multiband base, else model 0
    base: str | int | None = None  # multiband low band; None: the last model
    detail: str | int | None = None  # multiband high band; None: the first model
    band_sigma: float = 0.05  # multiband split: Gaussian sigma as a fraction of the tile width
    band_space: str = "log"  # multiband bands of log disparity (multiplicative errors cancel) or linear
    fit_samples: int = 20000  # pixels per tile used by the affine fit
    fit_iterations: int = 4  # Huber IRLS iterations of the affine fit
    huber_k: float = 1.345  # Huber threshold in robust standard deviations
    seed: int = 0  # pixel subsample seed

    def __post_init__(self) -> None:
        if self.band_space not in ("log", "linear"):
            raise ValueError(f"depth.fuse.band_space must be log or linear, got {self.band_space!r}")
        if self.band_sigma <= 0:
            raise ValueError(f"depth.fuse.band_sigma must be > 0, got {self.band_sigma}")


def fit_affine(src: np.ndarray, dst: np.ndarray, *, iterations: int = 4, huber_k: float = 1.345) -> tuple[float, float]:
    """Robust ``(a, b)`` minimising Huber(``a * src + b - dst``) over 1-D arrays of equal length."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.size < 2:
        raise ValueError("fit_affine needs at least 2 valid pixels")
    w = np.ones_like(src)
    a, b = 1.0, 0.0
    for _ in range(max(1, iterations)):
        sw = w.sum()
        ms, md = (w * src).sum() / sw, (w * dst).sum() / sw
        var = (w * (src - ms) ** 2).sum()
        a = (w * (src - ms) * (dst - md)).sum() / var if var > 0 else 0.0
        b = md - a * ms
        r = a * src + b - dst
        c = huber_k * 1.4826 * max(float(np.median(np.abs(r))), 1e-12)
        w = np.where(np.abs(r) <= c, 1.0, c / np.maximum(np.abs(r), 1e-300))
    return float(a), float(b)


def _index(spec, names: Sequence[str], default: int, what: str) -> int:
    if spec is None:
        return default % len(names)
    if isinstance(spec, int | np.integer):
        if not -len(names) <= spec < len(names):
            raise ValueError(f"depth.fuse.{what}={spec} is out of range for {len(names)} models {list(names)}")
        return int(spec) % len(names)
    if spec not in names:
        raise ValueError(f"depth.fuse.{what}={spec!r} is not one of the models {list(names)}")
    return list(names).index(spec)


def _weights(cfg: FuseConfig, names: Sequence[str]) -> np.ndarray:
    if cfg.weights is None:
        return np.ones(len(names))
    if isinstance(cfg.weights, Mapping):
        unknown = set(cfg.weights) - set(names)
        if unknown:
            raise ValueError(f"depth.fuse.weights names {sorted(unknown)} that are not models {list(names)}")
        w = np.array([float(cfg.weights.get(n, 0.0)) for n in names])
    else:
        w = np.asarray(list(cfg.weights), np.float64)
        if w.shape != (len(names),):
            raise ValueError(f"depth.fuse.weights has {w.size} entries for {len(names)} models {list(names)}")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"depth.fuse.weights must be >= 0 with a positive sum, got {w.tolist()}")
    return w


def _blur(d: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(d.astype(np.float64), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def fuse_disparities(
    disparities: Sequence[np.ndarray], names: Sequence[str], rule: str, cfg: FuseConfig | None = None
) -> tuple[np.ndarray, dict]:
    """Fuse per-model tile disparities ``[(N, h, w), ...]`` -> ``(N, h, w)`` float32 and an info dict
    (per model: per-tile affine ``a``, ``b`` onto the reference frame)."""
    cfg = cfg or FuseConfig()
    if rule not in FUSION_RULES:
        raise ValueError(f"depth.fusion={rule!r} is not a fusion rule; use one of {', '.join(FUSION_RULES)}")
    if len(disparities) != len(names) or not disparities:
        raise ValueError(f"fuse_disparities got {len(disparities)} disparity stacks for models {list(names)}")
    shape = np.shape(disparities[0])
    for name, d in zip(names, disparities):
        if np.shape(d) != shape:
            raise ValueError(f"model {name!r} gave tiles of shape {np.shape(d)}, model {names[0]!r} {shape}")
    if len(disparities) == 1:
        return np.asarray(disparities[0], np.float32), {"fusion": "single model"}
    base = _index(cfg.base, names, -1, "base")
    detail = _index(cfg.detail, names, 0, "detail")
    ref = _index(cfg.reference, names, base if rule == "multiband" else 0, "reference")
    n, h, w = shape
    rng = np.random.default_rng(cfg.seed)
    aligned = []
    coeffs: dict[str, list] = {}
    for m, (name, d) in enumerate(zip(names, disparities)):
        d = np.asarray(d, np.float64)
        if m == ref:
            aligned.append(d)
            coeffs[name] = [[1.0, 0.0]] * n
            continue
        out = np.empty_like(d)
        cm = []
        for k in range(n):
            both = np.flatnonzero((d[k] > 0) & (disparities[ref][k] > 0) & np.isfinite(d[k]))
            if both.size > cfg.fit_samples:
                both = rng.choice(both, cfg.fit_samples, replace=False)
            if both.size < 2:
                raise ValueError(f"fusion: model {name!r} and {names[ref]!r} share no valid pixel in tile {k}")
            a, b = fit_affine(d[k].ravel()[both], np.asarray(disparities[ref][k], np.float64).ravel()[both],
                              iterations=cfg.fit_iterations, huber_k=cfg.huber_k)
            out[k] = np.where(d[k] > 0, a * d[k] + b, 0.0)
            cm.append([a, b])
        aligned.append(out)
        coeffs[name] = cm
    stack = np.stack(aligned)  # (M, N, h, w)
    valid = stack > 0
    if rule in ("mean", "weighted"):
        wts = np.ones(len(names)) if rule == "mean" else _weights(cfg, names)
        wv = wts[:, None, None, None] * valid
        den = wv.sum(axis=0)
        fused = np.where(den > 0, (wv * stack).sum(axis=0) / np.maximum(den, 1e-300), 0.0)
    else:
        sigma = cfg.band_sigma * w
        fused = np.empty((n, h, w))
        for k in range(n):
            bk = stack[base, k]
            dk = np.where(valid[detail, k], stack[detail, k], bk)
            if cfg.band_space == "log":  # multiplicative errors (scale drifting across the tile) cancel
                floor = 1e-3 * max(float(np.median(bk[bk > 0])) if (bk > 0).any() else 1.0, 1e-12)
                lb, ld = np.log(np.maximum(bk, floor)), np.log(np.maximum(dk, floor))
                fk = np.exp(_blur(lb, sigma) + ld - _blur(ld, sigma))
            else:
                fk = _blur(bk, sigma) + dk - _blur(dk, sigma)
            fused[k] = np.where(valid[base, k], fk, 0.0)
    fused = np.maximum(fused, 0.0).astype(np.float32)
    info = {"fusion": rule, "fusion_reference": names[ref], "fusion_affine": coeffs}
    if rule == "multiband":
        info.update(fusion_base=names[base], fusion_detail=names[detail])
    return fused, info
