"""Weight-free, depth-aware colour inpainters for equirectangular panoramas.

Every inpainter is a callable ``inpainter(rgb, mask, distance) -> rgb``: ``rgb`` ``(H, W, 3)`` float in [0, 1],
``mask`` ``(H, W)`` bool (True = fill), ``distance`` ``(H, W)`` the rendered distance (world units; values inside
the mask are not trusted) -> ``(H, W, 3)`` float in [0, 1] with only the masked pixels changed. Hydra builds them
from ``inpaint.inpainter`` (``_target_`` + keyword arguments), so users can plug in their own.

All three fill from the background side of each hole (:mod:`immersivedepth.inpaint.holes`): pixels on the near
side of an occluder edge are never used, so the occluder's colour does not smear into what it hid. All three work
on the sphere: longitude wraps around and the poles are neighbourhoods, not image edges.

* :class:`HarmonicInpainter` — Laplace-Beltrami diffusion from the far-side ring (smooth, exact for constant
  backgrounds, no texture).
* :class:`TeleaInpainter` — OpenCV's Telea / Navier-Stokes inpainting on a sphere-padded copy in which the
  occluder's pixels next to the hole were replaced by the far side's harmonic fill, so only the far side feeds it.
* :class:`MirrorInpainter` — an exemplar fill: each hole pixel copies the background pixel mirrored across its
  nearest far-side ring pixel (continues texture into the hole), falling back to the harmonic fill where the
  mirrored pixel is not background.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from immersivedepth import sphere
from immersivedepth.inpaint.holes import HoleSides, hole_sides, neighbour_index
from immersivedepth.inpaint.laplace import harmonic_fill

__all__ = ["FarSideFill", "HarmonicInpainter", "TeleaInpainter", "MirrorInpainter", "check_inputs", "known_mean"]

_U16 = 65535.0  # full scale of the 16-bit channels handed to OpenCV


def check_inputs(rgb: np.ndarray, mask: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the inpainter call's arrays -> (rgb float64 ``(H,W,3)``, mask bool ``(H,W)``, distance ``(H,W)``)."""
    rgb = np.asarray(rgb, np.float64)
    mask = np.asarray(mask, bool)
    distance = np.asarray(distance, np.float64)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or mask.shape != rgb.shape[:2] or distance.shape != mask.shape:
        raise ValueError(f"inpainter inputs must be rgb (H,W,3), mask (H,W), distance (H,W); got {rgb.shape}, "
                         f"{mask.shape}, {distance.shape}")
    return rgb, mask, distance


def known_mean(values: np.ndarray, mask: np.ndarray):
    """Mean of ``values`` ``(H, W[, C])`` outside ``mask`` (a hole bordered by nothing usable takes it; 0.5 grey if
    nothing is known, the middle of the [0, 1] colour range)."""
    known = ~np.asarray(mask, bool)
    return values[known].mean(axis=0) if known.any() else np.full(values.shape[2:], 0.5)


class FarSideFill:
    """What every built-in filler shares: check the call's arrays, return the input unchanged when there is no hole,
    split each hole's border into its near and far side (``depth_ratio``: see :func:`holes.hole_sides`) and hand
    over to :meth:`fill`, which returns the filled ``(H, W, C)`` array (float32 on return)."""

    depth_ratio: float = 1.15

    def __call__(self, rgb, mask, distance):
        rgb, mask, distance = check_inputs(rgb, mask, distance)
        if not mask.any():
            return self.unchanged(rgb, distance).astype(np.float32)
        sides = hole_sides(mask, distance, depth_ratio=self.depth_ratio)
        return np.asarray(self.fill(rgb, mask, distance, sides), np.float32)

    def unchanged(self, rgb: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """The output without a hole (colour fillers: the colours)."""
        return rgb

    def fill(self, rgb: np.ndarray, mask: np.ndarray, distance: np.ndarray, sides: HoleSides) -> np.ndarray:
        raise NotImplementedError


class HarmonicInpainter(FarSideFill):
    """Laplace-Beltrami fill from each hole's far side (``depth_ratio``: see :func:`holes.hole_sides`)."""

    def __init__(self, depth_ratio: float = 1.15):
        self.depth_ratio = float(depth_ratio)

    def fill(self, rgb, mask, distance, sides):
        return np.clip(harmonic_fill(rgb, mask, sides.source, orphan_value=known_mean(rgb, mask)), 0.0, 1.0)


class TeleaInpainter(FarSideFill):
    """OpenCV inpainting (``method``: ``telea`` | ``ns``) fed from the far side only.

    OpenCV cannot be told which border pixels to trust, so the near-side pixels within ``radius + 2`` pixels of a
    hole are first replaced by the harmonic fill from the far side (:func:`laplace.harmonic_fill`); OpenCV then
    inpaints the hole on that image, sphere-padded by ``pad`` pixels (:func:`sphere.erp_pad`: seam and poles), and
    only sees background around it. Only hole pixels are returned changed.
    """

    def __init__(self, radius: float = 3.0, method: str = "telea", depth_ratio: float = 1.15, pad: int = 16):
        if method not in ("telea", "ns"):
            raise ValueError(f"TeleaInpainter: method must be 'telea' or 'ns', got {method!r}")
        self.radius = float(radius)
        self.flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        self.depth_ratio = float(depth_ratio)
        self.pad = int(pad)

    def fill(self, rgb, mask, distance, sides):
        band = int(math.ceil(self.radius)) + 2
        near = near_side(sides, distance, band=band)
        # the ring of (hole + band) lies within band + 1 of the hole: classify it with the same per-hole threshold
        known_far = ~mask & ~near_side(sides, distance, band=band + 2) & np.isfinite(distance) & (distance > 0)
        prepared = harmonic_fill(rgb, mask | near, known_far & _ring_of(mask | near),
                                 orphan_value=known_mean(rgb, mask))
        p = self.pad
        # 16-bit channels: OpenCV 5's float32 Telea oscillates (+-1) on flat regions; 8-bit would quantise colours
        img = np.round(np.clip(sphere.erp_pad(prepared, p), 0.0, 1.0) * _U16).astype(np.uint16)
        m8 = sphere.erp_pad(mask, p).astype(np.uint8)
        out = np.empty(img.shape, np.float64)
        for c in range(3):
            out[..., c] = cv2.inpaint(np.ascontiguousarray(img[..., c]), m8, self.radius, self.flag) / _U16
        filled = out[p:-p, p:-p] if p else out
        return np.where(mask[..., None], np.clip(filled, 0.0, 1.0), rgb).astype(np.float32)


def near_side(sides, distance: np.ndarray, band: int) -> np.ndarray:
    """Known pixels within ``band`` pixels (sphere-aware, through the padded image) of a hole that lie on the near
    side of that hole's occluder edge (closer than its threshold) -> ``(H, W)`` bool."""
    h, w = sides.labels.shape
    pad = min(band + 1, h, w)
    lab_p = sphere.erp_pad(sides.labels, pad)
    dist_to_hole, (iy, ix) = ndimage.distance_transform_edt(lab_p == 0, return_indices=True)
    thr = sides.threshold[lab_p[iy, ix]]
    d_p = sphere.erp_pad(np.where(np.isfinite(distance), distance, 0.0), pad)
    near_p = (lab_p == 0) & (dist_to_hole <= band) & (thr > 0) & (d_p < thr)
    return near_p[pad:-pad, pad:-pad]


def _ring_of(mask: np.ndarray) -> np.ndarray:
    """Pixels 4-adjacent (on the sphere) to ``mask`` and outside it."""
    h, w = mask.shape
    nb = neighbour_index(h, w)
    flat = mask.reshape(-1)
    touch = np.zeros(h * w, bool)
    for k in range(4):
        touch |= flat[nb[k].reshape(-1)]
    return touch.reshape(h, w) & ~mask


class MirrorInpainter(FarSideFill):
    """Exemplar fill by reflection across the far-side ring, harmonic where the reflection is not background.

    For a hole pixel ``p`` with nearest far-side ring pixel ``b`` the exemplar is ``2 b - p``; it is used when it is
    a known pixel at least ``(1 - far_tolerance)`` times as far as ``b`` (background, not the occluder); ``pad``
    pixels of true spherical neighbours let reflections cross the seam and the poles.
    """

    def __init__(self, depth_ratio: float = 1.15, far_tolerance: float = 0.1, pad: int = 32):
        self.depth_ratio = float(depth_ratio)
        self.far_tolerance = float(far_tolerance)
        self.pad = int(pad)

    def fill(self, rgb, mask, distance, sides):
        base = harmonic_fill(rgb, mask, sides.source, orphan_value=known_mean(rgb, mask))
        p = self.pad
        h, w = mask.shape
        src_p = sphere.erp_pad(sides.source, p)
        _, (iy, ix) = ndimage.distance_transform_edt(~src_p, return_indices=True)
        vv, uu = np.nonzero(mask)
        by, bx = iy[vv + p, uu + p], ix[vv + p, uu + p]
        my, mx = 2 * by - (vv + p), 2 * bx - (uu + p)
        inside = (my >= 0) & (my < h + 2 * p) & (mx >= 0) & (mx < w + 2 * p)
        my, mx = np.clip(my, 0, h + 2 * p - 1), np.clip(mx, 0, w + 2 * p - 1)
        known_p = sphere.erp_pad(~mask & np.isfinite(distance) & (distance > 0), p)
        d_p = sphere.erp_pad(np.where(np.isfinite(distance), distance, 0.0), p)
        ok = inside & known_p[my, mx] & (d_p[my, mx] >= (1.0 - self.far_tolerance) * d_p[by, bx])
        rgb_p = sphere.erp_pad(rgb, p)
        exemplar = base.copy()
        exemplar[vv[ok], uu[ok]] = rgb_p[my[ok], mx[ok]]
        out = np.where(mask[..., None], exemplar, rgb)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
