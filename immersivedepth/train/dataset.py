"""Training rays from one panorama: pixel-centre rays from the panorama centre, supervision masks.

Every pixel ``(v, u)`` gives a ray from the origin (the panorama centre) along ``sphere.erp_directions``; its
colour and supervised distance are the pixel's values. Masks (PERF found these useful, FACTS.md):

* ``valid``: the distance is finite and > 0. The other pixels (0 = unknown, +inf = far, NaN) are "far rays": they
  have no distance to supervise, but their colour is still trained -- the ray crosses whatever the field holds and
  ends on the background model (``far_dirs``/``far_rgb``; an open door, a window, the sky).
* ``edge``: a depth discontinuity -- the relative distance jump to one of the 4 neighbours (longitude wraps)
  exceeds ``edge_threshold``, or a neighbour is invalid; dilated by ``edge_dilation`` pixels.
* ``grazing``: the surface normal (cross product of the back-projected points' finite differences) makes an
  angle above ``grazing_max_deg`` with the ray.

The distance loss uses ``valid & ~edge & ~grazing``; the colour loss uses every valid pixel unless
``color_on_masked`` is false (then the same mask as the distance loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from immersivedepth import sphere
from immersivedepth.config import as_dict, from_mapping, non_negative, positive, require
from immersivedepth.depth.normals import normals_from_distance
from immersivedepth.errors import InputError

__all__ = ["MaskConfig", "distance_normals", "supervision_masks", "PanoramaRays", "training_resolution"]

#: ERP normals have one implementation (depth/normals.py); the old name stays importable from here.
distance_normals = normals_from_distance


@dataclass
class MaskConfig:
    """``field.masks``: which pixels supervise what (see the module docstring)."""

    edge_threshold: float = 0.1  # relative distance jump to a 4-neighbour that marks a depth edge
    edge_dilation: int = 1  # pixels
    grazing_max_deg: float = 82.0  # drop pixels whose surface is seen at more than this angle from its normal
    color_on_masked: bool = True  # colour loss also on edge/grazing pixels (the distance loss never)
    min_valid_fraction: float = 0.05  # fewer valid distance pixels than this is an error

    def __post_init__(self):
        positive(self.edge_threshold, "field.masks.edge_threshold")
        non_negative(self.edge_dilation, "field.masks.edge_dilation")
        require(0 < self.grazing_max_deg <= 90, "field.masks.grazing_max_deg", f"must be in (0, 90], got "
                f"{self.grazing_max_deg}")
        require(0 <= self.min_valid_fraction <= 1, "field.masks.min_valid_fraction",
                f"must be in [0, 1], got {self.min_valid_fraction}")


def training_resolution(rgb: np.ndarray, distance: np.ndarray, max_width: int) -> tuple[np.ndarray, np.ndarray]:
    """The panorama and distance map the field trains on: unchanged up to ``max_width`` columns, else shrunk
    to ``max_width x max_width/2``.

    A training run only ever draws ``batch_rays x steps`` rays (about 2M for the presets), and the per-ray
    caches cost memory and time in proportion to the pixel count, so a 6720x3360 camera panorama would cost gigabytes
    and minutes per occupancy update for no gain. Colour is area-averaged (``cv2.INTER_AREA``). Distance takes the
    source pixel under each new pixel's centre, so no value is averaged across a depth edge and invalid pixels
    (0 / NaN) stay invalid. ``max_width <= 0`` disables the cap.

    Args:
        rgb: ``(H, W, 3)`` float; distance: ``(H, W)``.
    Returns:
        ``(rgb (h, w, 3) float32, distance (h, w) float32)``.
    """
    if max_width > 0 and (max_width < 16 or max_width % 2):
        raise ValueError(f"field.data.max_width must be an even number >= 16 (or 0 for no cap), got {max_width}")
    h, w = distance.shape
    if max_width <= 0 or w <= max_width:
        return rgb, distance
    import cv2

    nw = int(max_width)
    nh = max(1, int(round(h * nw / w)))
    small = cv2.resize(np.ascontiguousarray(rgb, dtype=np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    rows = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(np.int64), w - 1)
    return small.astype(np.float32), np.asarray(distance, np.float32)[rows[:, None], cols[None, :]]


def _shift(a: np.ndarray, dv: int, du: int) -> np.ndarray:
    """``a[v + dv, u + du]`` with longitude wrap and rows clamped at the poles."""
    out = np.roll(a, -du, axis=1) if du else a
    if dv:
        idx = np.clip(np.arange(a.shape[0]) + dv, 0, a.shape[0] - 1)
        out = out[idx]
    return out


def supervision_masks(distance: np.ndarray, *, edge_threshold: float = 0.1, edge_dilation: int = 1,
                      grazing_max_deg: float = 82.0) -> dict:
    """Masks ``(H, W)`` bool ``valid``, ``edge``, ``grazing``, ``supervise`` (= valid & ~edge & ~grazing) and the
    ``normals`` ``(H, W, 3)`` of an ERP distance map ``(H, W)`` (0 / NaN / inf = invalid)."""
    d = np.asarray(distance, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    dz = np.where(valid, d, 0.0)
    edge = np.zeros_like(valid)
    for dv, du in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        dn = _shift(dz, dv, du)
        vn = _shift(valid, dv, du)
        rel = np.abs(dz - dn) / np.maximum(np.minimum(dz, dn), 1e-12)
        edge |= valid & (~vn | (rel > edge_threshold))
    if edge_dilation > 0:
        k = 2 * int(edge_dilation) + 1
        t = torch.from_numpy(edge.astype(np.float32))[None, None]
        t = F.pad(t, (edge_dilation, edge_dilation, 0, 0), mode="circular")
        t = F.max_pool2d(t, k, stride=1, padding=(edge_dilation, 0))
        edge = (t[0, 0].numpy() > 0) & valid
    normals = normals_from_distance(dz)
    dirs = sphere.erp_directions(*d.shape)
    cos = np.abs((normals * dirs).sum(-1))
    grazing = valid & (cos < np.cos(np.deg2rad(grazing_max_deg)))
    return {"valid": valid, "edge": edge, "grazing": grazing, "supervise": valid & ~edge & ~grazing,
            "normals": normals}


class PanoramaRays:
    """The trainable rays of one panorama (torch tensors on ``device``).

    Args:
        rgb: ``(H, W, 3)`` float in [0, 1].
        distance: ``(H, W)`` world units; 0 / NaN / inf = invalid (masked).
        masks: the ``field.masks`` config (:class:`MaskConfig` or a mapping of its keys).

    Attributes (``P`` = number of valid pixels): ``dirs (P,3)``, ``rgb (P,3)``, ``distance (P,)``,
    ``depth_mask (P,)`` (distance loss), ``color_mask (P,)``, ``normals (P,3)``, ``pixel (P,)`` flat pixel index,
    ``points (P,3)`` back-projected supervision points; ``height``, ``width``, ``masks`` (the full ``(H,W)`` masks).
    Far rays (``F`` = pixels without a valid distance, colour only): ``far_dirs (F,3)``, ``far_rgb (F,3)``,
    ``far_pixel (F,)``.
    """

    def __init__(self, rgb, distance, masks: Mapping | None = None, device: str | torch.device = "cpu"):
        cfg = as_dict(from_mapping(MaskConfig, masks, "field.masks"))
        rgb = np.asarray(rgb)
        distance = np.asarray(distance)
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise InputError(f"train_field: rgb must be (H, W, 3) float in [0, 1], got shape {rgb.shape}")
        if distance.shape != rgb.shape[:2]:
            raise InputError(f"train_field: distance map shape {distance.shape} does not match the panorama's "
                             f"{rgb.shape[:2]}; resample the distance map to the panorama's size first")
        h, w = distance.shape
        if w != 2 * h:
            raise InputError(f"train_field: an equirectangular panorama is 2:1 (W = 2H); got H={h}, W={w}")
        if not np.issubdtype(rgb.dtype, np.floating) or not np.isfinite(rgb).all():
            raise InputError("train_field: rgb must be finite floats in [0, 1] (read it with io.read_panorama)")
        m = supervision_masks(distance, edge_threshold=float(cfg["edge_threshold"]),
                              edge_dilation=int(cfg["edge_dilation"]), grazing_max_deg=float(cfg["grazing_max_deg"]))
        frac = float(m["valid"].mean())
        if frac < float(cfg["min_valid_fraction"]):
            raise InputError(f"train_field: only {frac:.1%} of the distance map is valid (finite and > 0); need at "
                             f"least {float(cfg['min_valid_fraction']):.0%} (field.masks.min_valid_fraction). Check "
                             "the distance file's format/scale (dataset.distance_format)")
        self.height, self.width = h, w
        self.masks = m
        flat_valid = m["valid"].reshape(-1)
        pix = np.nonzero(flat_valid)[0]
        dirs = sphere.erp_directions(h, w).reshape(-1, 3)[pix]
        dist = distance.reshape(-1)[pix].astype(np.float32)
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
        self.pixel = t(pix, torch.long)
        self.dirs = t(dirs)
        self.rgb = t(np.clip(rgb.reshape(-1, 3)[pix], 0.0, 1.0))
        self.distance = t(dist)
        self.depth_mask = t(m["supervise"].reshape(-1)[pix], torch.bool)
        self.color_mask = torch.ones_like(self.depth_mask) if bool(cfg["color_on_masked"]) else self.depth_mask.clone()
        self.normals = t(m["normals"].reshape(-1, 3)[pix])
        self.points = self.dirs * self.distance[:, None]
        far = np.nonzero(~flat_valid)[0]
        self.far_pixel = t(far, torch.long)
        self.far_dirs = t(sphere.erp_directions(h, w).reshape(-1, 3)[far])
        self.far_rgb = t(np.clip(rgb.reshape(-1, 3)[far], 0.0, 1.0))

    def __len__(self) -> int:
        return int(self.pixel.shape[0])
