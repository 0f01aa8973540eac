"""What the field is trained on: a list of posed panoramas, and all their training rays in one table.

The input panorama sits at the origin and comes first; later stages (filling unseen regions) append panoramas
rendered and completed at other positions and continue training from the current field. Every panorama is an
equirectangular image with a distance map measured *from its own centre*, so the masks of
:class:`~immersivedepth.train.dataset.PanoramaRays` (edges, grazing angles) apply to each unchanged; only the ray
origins differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from immersivedepth.errors import InputError
from immersivedepth.train.dataset import PanoramaRays

__all__ = ["PosedPanorama", "SupervisionRays", "supervision_digest"]


@dataclass
class PosedPanorama:
    """One supervising panorama.

    Attributes:
        rgb: ``(H, W, 3)`` float in [0, 1].
        distance: ``(H, W)`` world units along each ray from ``position``; 0 / NaN / inf = no distance (masked).
        position: the panorama centre in world coordinates.
        name: for logs and records (``input`` for the original panorama).
        filled: optional ``(H, W)`` bool, pixels that were invented (inpainted) rather than observed; their losses
            are scaled by ``filled_color_weight`` / ``filled_distance_weight``.
        observed_weight: loss weight of the pixels not ``filled`` (1 for a photo; an anchor panorama's other pixels
            are the field's own render, which adds nothing but its errors: 0 leaves them out of the rays).
        exclude: optional ``(H, W)`` bool, pixels left out of training altogether (an anchor's erased pixels and
            the fringe of its holes along occluders).
    """

    rgb: np.ndarray
    distance: np.ndarray
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    name: str = "input"
    filled: np.ndarray | None = None
    filled_color_weight: float = 1.0
    filled_distance_weight: float = 1.0
    observed_weight: float = 1.0
    exclude: np.ndarray | None = None


def supervision_digest(panoramas: Sequence[PosedPanorama]) -> str:
    """A short hash of the supervision (pixels, distances, positions, fill masks), for the resume check.

    For the single input panorama at the origin it equals the digest earlier versions stored, so their
    checkpoints still resume.
    """
    h = hashlib.sha256()
    for i, p in enumerate(panoramas):
        h.update(np.ascontiguousarray(p.rgb, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(np.nan_to_num(p.distance, nan=0.0, posinf=0.0), dtype=np.float32).tobytes())
        extra = i > 0 or any(float(c) != 0.0 for c in p.position) or p.filled is not None
        if extra:
            h.update(np.asarray(p.position, np.float64).tobytes())
            h.update(np.asarray([p.filled_color_weight, p.filled_distance_weight], np.float64).tobytes())
            if p.filled is not None:
                h.update(np.packbits(np.asarray(p.filled, bool)).tobytes())
            if float(p.observed_weight) != 1.0:  # (absent from digests made before it existed)
                h.update(np.asarray([p.observed_weight], np.float64).tobytes())
            if p.exclude is not None:
                h.update(b"exclude" + np.packbits(np.asarray(p.exclude, bool)).tobytes())
    return h.hexdigest()[:16]


def _ray_mask(mask: np.ndarray, name: str, what: str, rays: PanoramaRays, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A panorama's pixel mask ``(H, W)`` -> its value at each training ray and at each far ray (bool tensors)."""
    m = np.asarray(mask, bool)
    if m.shape != (rays.height, rays.width):
        raise InputError(f"supervision panorama {name!r}: {what} mask {m.shape} does not match its image "
                         f"{(rays.height, rays.width)}")
    flat = torch.as_tensor(m.reshape(-1), device=device)
    return flat[rays.pixel], flat[rays.far_pixel]


class SupervisionRays:
    """All training rays of a list of posed panoramas, concatenated in list order (torch tensors on ``device``).

    Attributes (``P`` rays): ``origins (P,3)``, ``dirs (P,3)``, ``rgb (P,3)``, ``distance (P,)``,
    ``depth_mask (P,)``, ``color_mask (P,)``, ``normals (P,3)``, ``points (P,3)`` (world), ``color_weight (P,)`` and
    ``distance_weight (P,)`` (``None`` when every weight is 1, which keeps the plain-mean losses), ``panorama (P,)``
    index into the list; ``height``/``width``/``masks`` of the first (input) panorama.
    Far rays (``F`` pixels without a distance, trained in colour only onto the background): ``far_origins (F,3)``,
    ``far_dirs (F,3)``, ``far_rgb (F,3)``.
    """

    def __init__(self, panoramas: Sequence[PosedPanorama], masks: Mapping | None = None,
                 device: str | torch.device = "cpu"):
        if not panoramas:
            raise InputError("training needs at least one supervising panorama")
        parts = [PanoramaRays(p.rgb, p.distance, masks, device) for p in panoramas]
        first = parts[0]
        self.height, self.width, self.masks = first.height, first.width, first.masks
        keep, keep_far, cw, dw = [], [], [], []
        weighted = False
        for p, r in zip(panoramas, parts):
            wc = torch.ones(len(r), device=device)
            wd = torch.ones(len(r), device=device)
            f = torch.zeros(len(r), dtype=torch.bool, device=device)
            f_far = torch.zeros(len(r.far_rgb), dtype=torch.bool, device=device)
            if p.filled is not None:
                f, f_far = _ray_mask(p.filled, p.name, "fill", r, device)
                wc = torch.where(f, torch.full_like(wc, float(p.filled_color_weight)), wc)
                wd = torch.where(f, torch.full_like(wd, float(p.filled_distance_weight)), wd)
                weighted = True
            if float(p.observed_weight) != 1.0:
                wc = torch.where(f, wc, torch.full_like(wc, float(p.observed_weight)))
                wd = torch.where(f, wd, torch.full_like(wd, float(p.observed_weight)))
                weighted = True
            # rays that weigh nothing are left out (no training step is spent drawing them)
            k = (wc > 0) | (wd > 0)
            k_far = f_far | (float(p.observed_weight) > 0)
            if p.exclude is not None:
                ex, ex_far = _ray_mask(p.exclude, p.name, "exclude", r, device)
                k, k_far = k & ~ex, k_far & ~ex_far
            keep.append(k)
            keep_far.append(k_far)
            cw.append(wc[k])
            dw.append(wd[k])

        def cat(name: str, far: bool = False) -> torch.Tensor:
            sel = keep_far if far else keep
            vals = [getattr(r, name)[k] if not bool(k.all()) else getattr(r, name) for r, k in zip(parts, sel)]
            return torch.cat(vals) if len(vals) > 1 else vals[0]

        self.dirs, self.rgb, self.distance = cat("dirs"), cat("rgb"), cat("distance")
        self.far_dirs, self.far_rgb = cat("far_dirs", True), cat("far_rgb", True)
        self.far_origins = torch.cat([
            torch.as_tensor(np.asarray(p.position, np.float32), device=device).reshape(1, 3).expand(int(k.sum()), 3)
            for p, k in zip(panoramas, keep_far)]).contiguous()
        self.depth_mask, self.color_mask, self.normals = cat("depth_mask"), cat("color_mask"), cat("normals")
        self.origins = torch.cat([
            torch.as_tensor(np.asarray(p.position, np.float32), device=device).reshape(1, 3).expand(int(k.sum()), 3)
            for p, k in zip(panoramas, keep)]).contiguous()
        self.color_weight = torch.cat(cw) if weighted else None
        self.distance_weight = torch.cat(dw) if weighted else None
        self.panorama = torch.cat([torch.full((int(k.sum()),), i, dtype=torch.long, device=device)
                                   for i, k in enumerate(keep)])
        self.points = self.origins + self.dirs * self.distance[:, None]
        # the input panorama alone fixes the scene box: panoramas added later must not move it
        self.input_points = first.points

    def __len__(self) -> int:
        return int(self.dirs.shape[0])
