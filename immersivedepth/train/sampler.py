"""The training-ray sampler: which rays a step trains on, and where along them the field is evaluated.

Each step draws ``batch`` rays uniformly among the rays with any supervision, then samples each ray

* in a narrow band ``[d - h, d + h]`` around its supervised distance ``d`` (``h = max(band_rel * d, band_min_cells
  * cell)``, ``band_samples`` stratified samples): where the surface is, and
* at ``front_segments`` occupied coarse segments *in front of* the band, drawn at random among the first
  ``front_cache_segments`` occupied ones: this is what trains free space empty.

Pixels without a distance (an open door, a window, the sky) are "far rays": a share of every batch
(:func:`far_ray_count`, ``far_ray_weight``) is drawn among them. They have no band; the trainer renders them through
the occupancy grid to the box exit, where they composite onto the field's background, and trains their colour only.

The occupied segments in front of every ray's band depend only on the occupancy grid, so they are computed for all
rays at once (:meth:`TrainingRaySampler.refresh`) and only again when the grid changes. Every random number comes
from the caller's ``torch.Generator``, in a fixed order, so training is bit-reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from immersivedepth.field.sampler import (
    RaySamples,
    band_samples,
    concat_samples,
    occupied_segments,
    segment_samples,
)
from immersivedepth.train.supervision import SupervisionRays

__all__ = ["TrainBatch", "TrainingRaySampler", "far_ray_count"]


def far_ray_count(n_rays: int, n_far: int, batch: int, weight: float = 1.0) -> int:
    """How many of a step's ``batch`` rays are far rays (pixels without a distance).

    Each far pixel is drawn ``weight`` times as often as a pixel with a distance (``weight = 1``: every pixel of
    the panorama equally likely, so the colour loss is the panorama's mean squared error, what PSNR scores). At
    least one far ray when there are any, so a small doorway still trains every step; none when there are none
    (the ray draws of a panorama without far pixels are unchanged); always at least one ray with a distance.
    """
    if n_far <= 0 or weight <= 0:
        return 0
    share = weight * n_far / (n_rays + weight * n_far)
    return int(min(batch - 1, max(1, round(batch * share))))


@dataclass
class TrainBatch:
    """One step's rays and their supervision (``B`` rays).

    ``origins``/``dirs`` ``(B,3)``; ``distance`` ``(B,)`` supervised distance; ``far`` ``(B,)`` where compositing
    stops (the band's end); ``samples`` the points to evaluate; ``rgb`` ``(B,3)``; ``color_mask``/``depth_mask``
    ``(B,)`` bool; ``normals`` ``(B,3)`` distance-map normals; ``color_weight``/``distance_weight`` ``(B,)`` or
    ``None`` (all 1); ``scale`` the world length the distortion loss is measured in (the field's unit).
    Far rays (``F`` >= 0, colour only): ``far_origins``/``far_dirs``/``far_rgb`` ``(F,3)``.
    """

    idx: torch.Tensor
    origins: torch.Tensor
    dirs: torch.Tensor
    distance: torch.Tensor
    far: torch.Tensor
    samples: RaySamples
    rgb: torch.Tensor
    color_mask: torch.Tensor
    depth_mask: torch.Tensor
    normals: torch.Tensor
    color_weight: torch.Tensor | None
    distance_weight: torch.Tensor | None
    scale: float
    far_origins: torch.Tensor
    far_dirs: torch.Tensor
    far_rgb: torch.Tensor


class TrainingRaySampler:
    """Draws :class:`TrainBatch` es from :class:`SupervisionRays` for a field with an occupancy grid.

    Args:
        rays: the training rays.
        field: the :class:`~immersivedepth.field.model.RadianceField` (its occupancy grid, render options, unit).
        sampling: the ``field.sampling`` config section (``band_rel``, ``band_min_cells``, ``band_samples``,
            ``front_segments``, ``front_cache_segments``, ``far_ray_weight``).
        chunk: rays per occupancy march when refreshing the front-segment cache (memory bound).
    """

    def __init__(self, rays: SupervisionRays, field, sampling, *, chunk: int):
        self.rays = rays
        self.field = field
        self.band_samples = int(sampling["band_samples"])
        self.front_segments = int(sampling["front_segments"])
        self.front_cache_segments = int(sampling["front_cache_segments"])
        self.far_ray_weight = float(sampling["far_ray_weight"])
        self.chunk = int(chunk)
        self.train_idx = torch.nonzero(rays.color_mask | rays.depth_mask, as_tuple=False)[:, 0]
        cell = float(field.occupancy.cell_size.min())
        band_min = float(sampling["band_min_cells"]) * cell
        self.coarse_step = float(field.render_options["coarse_step"])
        self.halfwidth = torch.clamp(rays.distance * float(sampling["band_rel"]), min=band_min)
        self.band_start = (rays.distance - self.halfwidth).clamp_min(0.0)
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the occupied coarse segments in front of every ray's band (after an occupancy update)."""
        los, oks = [], []
        rays = self.rays
        for s0 in range(0, len(rays), self.chunk):
            d = rays.dirs[s0:s0 + self.chunk]
            lo, ok = occupied_segments(self.field.occupancy, rays.origins[s0:s0 + self.chunk], d,
                                       torch.zeros(d.shape[0], device=d.device), self.band_start[s0:s0 + self.chunk],
                                       coarse_step=self.coarse_step, max_segments=self.front_cache_segments)
            los.append(lo)
            oks.append(ok)
        self.front_lo, self.front_ok = torch.cat(los), torch.cat(oks)

    def draw(self, batch: int, generator: torch.Generator) -> TrainBatch:
        """``batch`` random training rays with their samples (consumes ``generator`` in a fixed order); a share of
        them (:func:`far_ray_count`) are far rays."""
        rays = self.rays
        device = rays.dirs.device
        n_far = far_ray_count(self.train_idx.numel(), len(rays.far_rgb), batch, self.far_ray_weight)
        batch -= n_far
        idx = self.train_idx[torch.randint(self.train_idx.numel(), (batch,), generator=generator, device=device)]
        dirs = rays.dirs[idx]
        gd = rays.distance[idx]
        halfwidth = self.halfwidth[idx]
        f_lo, f_ok = self.front_lo[idx], self.front_ok[idx]
        # front_segments of the ray's occupied segments before its band, drawn at random (kept in ray order)
        keys = torch.rand(f_lo.shape, generator=generator, device=device) + (~f_ok).float() * 2.0
        pick = torch.sort(torch.topk(keys, min(self.front_segments, keys.shape[1]), dim=1, largest=False).indices,
                          dim=1).values
        front = segment_samples(f_lo.gather(1, pick), f_ok.gather(1, pick), torch.zeros_like(gd),
                                self.band_start[idx], coarse_step=self.coarse_step, per_segment=1, perturb=True,
                                generator=generator)
        band = band_samples(gd, halfwidth, self.band_samples, perturb=True, generator=generator)
        fi = torch.randint(max(len(rays.far_rgb), 1), (n_far,), generator=generator, device=device) if n_far else \
            torch.zeros(0, dtype=torch.long, device=device)
        pick_w = lambda w: None if w is None else w[idx]  # noqa: E731
        return TrainBatch(idx=idx, origins=rays.origins[idx], dirs=dirs, distance=gd, far=gd + halfwidth,
                          samples=concat_samples(front, band), rgb=rays.rgb[idx], color_mask=rays.color_mask[idx],
                          depth_mask=rays.depth_mask[idx], normals=rays.normals[idx],
                          color_weight=pick_w(rays.color_weight), distance_weight=pick_w(rays.distance_weight),
                          scale=float(self.field.unit), far_origins=rays.far_origins[fi], far_dirs=rays.far_dirs[fi],
                          far_rgb=rays.far_rgb[fi])
