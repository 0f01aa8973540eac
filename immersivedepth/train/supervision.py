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
    """

    rgb: np.ndarray
    distance: np.ndarray
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    name: str = "input"
    filled: np.ndarray | None = None
    filled_color_weight: float = 1.0
    filled_distance_weight: float = 1.0


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
    return h.hexdigest()[:16]


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
        cat = lambda name: torch.cat([getattr(r, name) for r in parts]) if len(parts) > 1 else getattr(first, name)  # noqa: E731
        self.dirs, self.rgb, self.distance = cat("dirs"), cat("rgb"), cat("distance")
        self.far_dirs, self.far_rgb = cat("far_dirs"), cat("far_rgb")
        self.far_origins = torch.cat([
            torch.as_tensor(np.asarray(p.position, np.float32), device=device).reshape(1, 3).expand(len(r.far_rgb), 3)
            for p, r in zip(panoramas, parts)]).contiguous()
        self.depth_mask, self.color_mask, self.normals = cat("depth_mask"), cat("color_mask"), cat("normals")
        origins, cw, dw, which = [], [], [], []
        weighted = False
        for i, (p, r) in enumerate(zip(panoramas, parts)):
            pos = torch.as_tensor(np.asarray(p.position, np.float32), device=device).reshape(1, 3)
            origins.append(pos.expand(len(r), 3))
            wc = torch.ones(len(r), device=device)
            wd = torch.ones(len(r), device=device)
            if p.filled is not None:
                filled = np.asarray(p.filled, bool)
                if filled.shape != (r.height, r.width):
                    raise InputError(f"supervision panorama {p.name!r}: fill mask {filled.shape} does not match its "
                                     f"image {(r.height, r.width)}")
                f = torch.as_tensor(filled.reshape(-1), device=device)[r.pixel]
                wc = torch.where(f, torch.full_like(wc, float(p.filled_color_weight)), wc)
                wd = torch.where(f, torch.full_like(wd, float(p.filled_distance_weight)), wd)
                weighted = True
            cw.append(wc)
            dw.append(wd)
            which.append(torch.full((len(r),), i, dtype=torch.long, device=device))
        self.origins = torch.cat(origins).contiguous()
        self.color_weight = torch.cat(cw) if weighted else None
        self.distance_weight = torch.cat(dw) if weighted else None
        self.panorama = torch.cat(which)
        self.points = self.origins + self.dirs * self.distance[:, None]
        # the input panorama alone fixes the scene box: panoramas added later must not move it
        self.input_points = first.points

    def __len__(self) -> int:
        return int(self.dirs.shape[0])
