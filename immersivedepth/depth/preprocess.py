"""Optional image preprocessing applied to what the depth models see (``depth.preprocess``).

Order (each step off unless enabled): Gaussian filtering -> dehazing (dark-channel prior) -> CLAHE on
luminance. ``apply_to: erp`` filters the panorama once before the tiles are cut (one consistent image for
every tile; the Gaussian wraps around the longitude seam), ``apply_to: tiles`` filters each tile.
All functions take and return float32 RGB ``(H, W, 3)`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "GaussianConfig", "ClaheConfig", "DehazeConfig", "PreprocessConfig",
    "gaussian_filter", "clahe_luminance", "dark_channel", "dehaze", "preprocess_image",
]


@dataclass
class GaussianConfig:
    enabled: bool = False
    sigma: float = 1.0  # standard deviation in pixels


@dataclass
class ClaheConfig:
    enabled: bool = False
    clip_limit: float = 2.0  # OpenCV clipLimit (histogram clip, relative to a uniform bin)
    grid: int = 8  # contextual regions per side


@dataclass
class DehazeConfig:
    enabled: bool = False
    patch: int = 15  # dark-channel window (pixels, odd)
    omega: float = 0.95  # fraction of haze removed (He et al. keep 5% for depth perception)
    t_min: float = 0.1  # lower bound of the transmission
    top_fraction: float = 0.001  # brightest dark-channel fraction used to estimate the atmospheric light
    atmosphere: Any = None  # fixed atmospheric light [r, g, b]; None: estimate it
    guided_radius: int = 0  # refine the transmission with a guided filter of this radius (0: off)
    guided_eps: float = 1e-3  # guided-filter regulariser


@dataclass
class PreprocessConfig:
    apply_to: str = "erp"  # erp | tiles
    wrap: bool = True  # erp: Gaussian wraps around the longitude seam
    gaussian: GaussianConfig = field(default_factory=GaussianConfig)
    clahe: ClaheConfig = field(default_factory=ClaheConfig)
    dehaze: DehazeConfig = field(default_factory=DehazeConfig)

    def __post_init__(self) -> None:
        if self.apply_to not in ("erp", "tiles"):
            raise ValueError(f"depth.preprocess.apply_to must be erp or tiles, got {self.apply_to!r}")

    @property
    def any_enabled(self) -> bool:
        return self.gaussian.enabled or self.clahe.enabled or self.dehaze.enabled


def _check(img: np.ndarray, what: str) -> np.ndarray:
    img = np.asarray(img, np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{what} expects an RGB image (H, W, 3), got shape {img.shape}")
    return img


def gaussian_filter(img: np.ndarray, sigma: float, *, wrap: bool = False) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (rows reflect; columns wrap around when ``wrap``)."""
    img = _check(img, "gaussian_filter")
    if sigma <= 0:
        raise ValueError(f"depth.preprocess.gaussian.sigma must be > 0, got {sigma}")
    r = int(np.ceil(4 * sigma))
    if wrap:
        pad = min(r, img.shape[1])
        ext = np.concatenate([img[:, -pad:], img, img[:, :pad]], axis=1)
        out = cv2.GaussianBlur(ext, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT)
        return out[:, pad:-pad]
    return cv2.GaussianBlur(img, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT)


def clahe_luminance(img: np.ndarray, clip_limit: float = 2.0, grid: int = 8) -> np.ndarray:
    """CLAHE on the L channel of CIE Lab, chroma a/b untouched (grey stays grey).

    L is quantised to 8 bits so that ``clip_limit`` has OpenCV's usual 8-bit meaning (with 65536 bins
    the same number would clip almost everything).
    """
    img = _check(img, "clahe_luminance")
    if clip_limit <= 0 or grid < 1:
        raise ValueError(f"CLAHE needs clip_limit > 0 and grid >= 1, got {clip_limit}, {grid}")
    lab = cv2.cvtColor(np.clip(img, 0, 1), cv2.COLOR_RGB2Lab)
    l8 = np.round(lab[..., 0] / 100.0 * 255.0).astype(np.uint8)
    eq = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(grid), int(grid))).apply(l8)
    lab[..., 0] = eq.astype(np.float32) / 255.0 * 100.0
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0.0, 1.0).astype(np.float32)


def dark_channel(img: np.ndarray, patch: int) -> np.ndarray:
    """``min`` over colour channels and a ``patch x patch`` window, ``(H, W)``."""
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"dark-channel patch must be an odd number >= 1, got {patch}")
    m = np.asarray(img, np.float32).min(axis=2)
    return cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch)), borderType=cv2.BORDER_REFLECT)


def _guided(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter (He et al. 2010) with box windows of ``2r+1``."""
    k = (2 * radius + 1, 2 * radius + 1)
    box = lambda x: cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)
    mi, mp = box(guide), box(src)
    a = (box(guide * src) - mi * mp) / (box(guide * guide) - mi * mi + eps)
    b = mp - a * mi
    return box(a) * guide + box(b)


def dehaze(
    img: np.ndarray,
    patch: int = 15,
    omega: float = 0.95,
    t_min: float = 0.1,
    top_fraction: float = 0.001,
    atmosphere: Sequence[float] | None = None,
    guided_radius: int = 0,
    guided_eps: float = 1e-3,
) -> np.ndarray:
    """Dark-channel-prior dehazing (He, Sun, Tang 2009) of the model ``I = J t + A (1 - t)``.

    ``A``: mean colour of the brightest (by intensity) pixels among the ``top_fraction`` with the largest
    dark channel, unless ``atmosphere`` is given; ``t = 1 - omega * dark(I / A)``, optionally refined by a
    guided filter; ``J = (I - A) / max(t, t_min) + A``, clipped to [0, 1].
    """
    img = _check(img, "dehaze")
    if not 0 < omega <= 1 or not 0 < t_min < 1:
        raise ValueError(f"dehaze needs 0 < omega <= 1 and 0 < t_min < 1, got {omega}, {t_min}")
    if atmosphere is None:
        dc = dark_channel(img, patch).ravel()
        n = max(1, int(round(top_fraction * dc.size)))
        cand = np.argpartition(dc, -n)[-n:]
        flat = img.reshape(-1, 3)
        inten = flat[cand].sum(axis=1)
        top = cand[inten >= inten.max() - 1e-6]
        a = flat[top].mean(axis=0)
    else:
        a = np.asarray(atmosphere, np.float32)
        if a.shape != (3,):
            raise ValueError(f"depth.preprocess.dehaze.atmosphere must be [r, g, b], got {atmosphere}")
    a = np.maximum(a, 1e-3).astype(np.float32)
    t = 1.0 - omega * dark_channel(img / a, patch)
    if guided_radius > 0:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        t = _guided(gray, t.astype(np.float32), guided_radius, guided_eps)
    t = np.maximum(t, t_min)[..., None]
    return np.clip((img - a) / t + a, 0.0, 1.0).astype(np.float32)


def preprocess_image(img: np.ndarray, cfg: PreprocessConfig, *, wrap: bool | None = None) -> np.ndarray:
    """Apply the enabled steps of ``cfg`` in order (Gaussian -> dehaze -> CLAHE); a copy when none is on."""
    out = _check(img, "preprocess_image").copy()
    wrap = cfg.wrap if wrap is None else wrap
    if cfg.gaussian.enabled:
        out = gaussian_filter(out, cfg.gaussian.sigma, wrap=wrap)
    if cfg.dehaze.enabled:
        d = cfg.dehaze
        out = dehaze(out, d.patch, d.omega, d.t_min, d.top_fraction, d.atmosphere, d.guided_radius, d.guided_eps)
    if cfg.clahe.enabled:
        out = clahe_luminance(out, cfg.clahe.clip_limit, cfg.clahe.grid)
    return out
