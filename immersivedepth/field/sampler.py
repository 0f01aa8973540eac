"""Where to put samples along rays: occupancy grid, depth-guided bands, uniform fallback.

No CUDA and no nerfacc: everything here is plain torch and runs on the CPU.

Three samplers produce :class:`RaySamples` (padded ``(N, K)`` layouts with a validity mask):

* :func:`uniform_samples` -- ``K`` stratified intervals between ``t0`` and ``t1`` (no grid; analytic tests,
  fields without an occupancy grid).
* :func:`occupancy_samples` -- a two-level march: coarse steps along the ray are tested against the
  :class:`OccupancyGrid`; the first ``max_segments`` occupied coarse segments are each split into
  ``per_segment`` fine intervals. Empty space costs one grid lookup per coarse step and no field evaluation.
* :func:`band_samples` -- ``K`` stratified intervals in ``[d - h, d + h]`` around a known distance ``d``
  (the training rays' supervision distance): nearly every sample lands near the surface.

Intervals need not be contiguous (a band after a few occupancy samples leaves a gap); the volume renderer
and the distortion loss treat every sample as its own interval ``[t - delta/2, t + delta/2]`` of empty-space
free length ``delta``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from immersivedepth.field._cpu_ext import load_cpu_ext

__all__ = [
    "RaySamples",
    "OccupancyGrid",
    "ray_box_intersect",
    "uniform_samples",
    "occupancy_samples",
    "occupied_segments",
    "segment_index",
    "SegmentRounds",
    "segment_samples",
    "band_samples",
    "concat_samples",
]


@dataclass
class RaySamples:
    """Samples on ``N`` rays, padded to ``K`` per ray.

    ``t`` ``(N, K)`` interval midpoints (distance along the unit ray direction, world units), sorted along
    each row over the valid entries; ``delta`` ``(N, K)`` interval lengths; ``valid`` ``(N, K)`` bool.
    Invalid entries carry ``t = 0, delta = 0`` and are never evaluated.
    """

    t: torch.Tensor
    delta: torch.Tensor
    valid: torch.Tensor

    @property
    def n_rays(self) -> int:
        return self.t.shape[0]

    def __getitem__(self, idx) -> RaySamples:
        return RaySamples(self.t[idx], self.delta[idx], self.valid[idx])


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def ray_box_intersect(origins: torch.Tensor, dirs: torch.Tensor, bmin: torch.Tensor, bmax: torch.Tensor):
    """Slab test of rays against an axis-aligned box.

    ``origins, dirs`` ``(N, 3)``; ``bmin, bmax`` ``(3,)``. Returns ``t_enter, t_exit`` ``(N,)`` (``t_enter``
    clamped at 0; a ray that misses has ``t_exit <= t_enter``).
    """
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    inv = 1.0 / safe
    ta = (bmin - origins) * inv
    tb = (bmax - origins) * inv
    t_enter = torch.minimum(ta, tb).amax(-1).clamp_min(0.0)
    t_exit = torch.maximum(ta, tb).amin(-1)
    return t_enter, t_exit


def uniform_samples(t0: torch.Tensor, t1: torch.Tensor, n_samples: int, *, perturb: bool = False,
                    generator: torch.Generator | None = None) -> RaySamples:
    """``n_samples`` equal intervals tiling ``[t0, t1]`` per ray (``t0, t1`` ``(N,)``).

    ``perturb``: jitter each midpoint uniformly inside its interval (stratified sampling).
    """
    n = t0.shape[0]
    span = (t1 - t0).clamp_min(0.0)
    delta = (span / n_samples)[:, None].expand(n, n_samples)
    offs = _rand((n, n_samples), generator, t0.device) if perturb else torch.full((n, n_samples), 0.5, device=t0.device)
    k = torch.arange(n_samples, device=t0.device, dtype=t0.dtype)
    t = t0[:, None] + (k[None] + offs) * delta
    valid = (span > 0)[:, None].expand(n, n_samples)
    return RaySamples(t, delta.contiguous(), valid.contiguous())


def band_samples(distance: torch.Tensor, halfwidth: torch.Tensor, n_samples: int, *, perturb: bool = True,
                 generator: torch.Generator | None = None) -> RaySamples:
    """Stratified samples in ``[d - h, d + h]`` (``distance, halfwidth`` ``(N,)``, world units).

    The band start is clamped at 0. Used for training rays whose surface distance is supervised.
    """
    t0 = (distance - halfwidth).clamp_min(0.0)
    t1 = distance + halfwidth
    return uniform_samples(t0, t1, n_samples, perturb=perturb, generator=generator)


def concat_samples(*parts: RaySamples) -> RaySamples:
    """Concatenate sample sets along ``K`` (each part's valid samples must lie before the next part's)."""
    return RaySamples(torch.cat([p.t for p in parts], 1), torch.cat([p.delta for p in parts], 1),
                      torch.cat([p.valid for p in parts], 1))


class OccupancyGrid(nn.Module):
    """A boolean grid over the field's box marking the cells where the density may be non-zero.

    ``seed`` (cells near the supervised surface points, dilated) bounds where anything can ever be occupied:
    nothing outside it was supervised, so density there is untrusted. ``value`` is an exponential moving
    maximum of the density sampled in each seed cell (world units^-1), ``mask = seed & (value > threshold)``
    the cells the sampler visits. All three are buffers: they travel with the field's ``state_dict``.

    Args:
        bmin, bmax: ``(3,)`` world box.
        resolution: cells along the box's longest axis; the other axes get proportionally many, so cells are
            (nearly) cubes.
    """

    def __init__(self, bmin, bmax, resolution: int = 128):
        super().__init__()
        bmin = torch.as_tensor(bmin, dtype=torch.float32)
        bmax = torch.as_tensor(bmax, dtype=torch.float32)
        if resolution < 1:
            raise ValueError(f"occupancy grid resolution must be >= 1, got {resolution}")
        ext = bmax - bmin
        if not bool((ext > 0).all()):
            raise ValueError(f"occupancy grid box is empty: min {bmin.tolist()} max {bmax.tolist()}")
        res = torch.clamp(torch.round(ext / ext.max() * resolution), min=1).long()
        self.register_buffer("bmin", bmin)
        self.register_buffer("bmax", bmax)
        self.register_buffer("res", res)
        shape = tuple(int(r) for r in res)
        self.register_buffer("seed", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("value", torch.full(shape, float("inf")))
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))

    # ------------------------------------------------------------------ geometry
    @property
    def cell_size(self) -> torch.Tensor:
        """``(3,)`` cell edge lengths (world units)."""
        return (self.bmax - self.bmin) / self.res.to(self.bmax.dtype)

    def cell_index(self, x: torch.Tensor):
        """World points ``(..., 3)`` -> (integer cell coordinates ``(..., 3)``, inside-box mask ``(...)``)."""
        ijk = torch.floor((x - self.bmin) / self.cell_size).long()
        inside = ((ijk >= 0) & (ijk < self.res)).all(-1)
        return ijk, inside

    def _flat(self, ijk: torch.Tensor) -> torch.Tensor:
        r = self.res
        ijk = torch.minimum(ijk.clamp_min(0), r - 1)
        return (ijk[..., 0] * r[1] + ijk[..., 1]) * r[2] + ijk[..., 2]

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Occupied-cell test for world points ``(..., 3)`` -> bool ``(...)`` (outside the box: False)."""
        ijk, inside = self.cell_index(x)
        return self.mask.reshape(-1)[self._flat(ijk)] & inside

    # ------------------------------------------------------------------ building / updating
    @torch.no_grad()
    def seed_from_points(self, points: torch.Tensor, dilation: int = 1) -> None:
        """Mark the cells holding ``points`` ``(P, 3)`` (world) and their ``dilation``-cell neighbourhoods."""
        ijk, inside = self.cell_index(points.to(self.bmin))
        seed = torch.zeros(self.seed.numel(), dtype=torch.bool, device=self.seed.device)
        seed[self._flat(ijk[inside])] = True
        seed = seed.reshape(self.seed.shape)
        if dilation > 0:
            k = 2 * dilation + 1
            seed = F.max_pool3d(seed[None, None].float(), k, stride=1, padding=dilation)[0, 0] > 0
        self.seed.copy_(seed)
        self.mask.copy_(seed)
        self.value.copy_(torch.where(seed, torch.full_like(self.value, float("inf")), torch.zeros_like(self.value)))

    @torch.no_grad()
    def add_seed_points(self, points: torch.Tensor, dilation: int = 1) -> None:
        """Also allow cells holding ``points`` ``(P, 3)`` (and their ``dilation``-cell neighbourhoods) to be occupied,
        keeping the current seed, values and mask: supervision added later (panoramas filled in at other positions)
        covers surfaces the first panorama never saw. New cells start occupied (value +inf) until measured."""
        seed, mask, value = self.seed.clone(), self.mask.clone(), self.value.clone()
        self.seed_from_points(points, dilation)  # self.seed = the new points' cells only
        new = self.seed & ~seed
        self.seed.copy_(seed | new)
        self.mask.copy_(mask | new)
        self.value.copy_(torch.where(new, torch.full_like(value, float("inf")), value))

    @torch.no_grad()
    def update(self, density_fn, *, threshold: float, decay: float = 0.95, chunk: int = 1 << 18,
               generator: torch.Generator | None = None) -> float:
        """Re-measure the density in every seed cell and refresh ``mask``.

        ``density_fn(x (M,3) world) -> (M,)``; one uniformly random point per seed cell (``generator``).
        ``value = max(decay * value, sigma)`` (a never-measured cell starts at +inf, i.e. occupied, and
        takes the first measurement); ``mask = seed & (value > threshold)``. Returns the occupied fraction of
        the seed cells.
        """
        flat = torch.nonzero(self.seed.reshape(-1), as_tuple=False)[:, 0]
        if flat.numel() == 0:
            return 0.0
        r = self.res
        k = flat % r[2]
        j = (flat // r[2]) % r[1]
        i = flat // (r[1] * r[2])
        ijk = torch.stack([i, j, k], -1).to(self.bmin.dtype)
        jitter = _rand(ijk.shape, generator, ijk.device)
        x = self.bmin + (ijk + jitter) * self.cell_size
        sig = torch.cat([density_fn(x[s:s + chunk]).reshape(-1) for s in range(0, x.shape[0], chunk)])
        val = self.value.reshape(-1)
        old = val[flat]
        new = torch.where(torch.isinf(old), sig, torch.maximum(old * decay, sig))
        val[flat] = new
        mask = torch.zeros_like(val, dtype=torch.bool)
        mask[flat] = new > threshold
        self.mask.copy_(mask.reshape(self.mask.shape))
        return float((new > threshold).float().mean())

    def occupied_fraction(self) -> float:
        """Fraction of all cells currently occupied."""
        return float(self.mask.float().mean())


def _march_ext(perturb: bool, grid: OccupancyGrid, *tensors: torch.Tensor):
    """The C++ op module when the fused march applies (CPU float32, no jitter, op built and not disabled)."""
    if perturb or grid.bmin.dtype != torch.float32 or not all(
            t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return None

    return load_cpu_ext(warn=False)


def coarse_step_count(t0: torch.Tensor, t1: torch.Tensor, coarse_step: float, max_coarse: int = 4096) -> int:
    """Coarse steps ``M`` a march over the spans ``[t0, t1]`` ``(N,)`` takes: the longest span's, capped at
    ``max_coarse`` (at least 1)."""
    if t0.numel() == 0:
        return 1
    span = (t1 - t0).clamp_min(0.0)
    return int(min(max_coarse, max(1, math.ceil(float(span.max()) / coarse_step))))


def occupied_segments(grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor, t0: torch.Tensor,
                      t1: torch.Tensor, *, coarse_step: float, max_segments: int, perturb: bool = False,
                      generator: torch.Generator | None = None, max_coarse: int = 4096,
                      k_start: torch.Tensor | None = None, n_coarse: int | None = None):
    """The first ``max_segments`` occupied coarse segments of each ray between ``t0`` and ``t1`` (``(N,)``).

    Coarse segments of length ``coarse_step`` start at ``t0``; a segment counts as occupied when its midpoint
    (jittered inside the segment when ``perturb``) lies in an occupied cell. On the CPU without jitter a fused
    C++ loop does this (equal results); otherwise torch does it on ``(N, M)`` tensors, ``M`` coarse steps.
    Returns ``(seg_lo (N, S), seg_ok (N, S))``: segment start distances and validity, in ray order.
    ``origins, dirs`` ``(N, 3)``, ``dirs`` unit length.

    ``k_start`` ``(N,)`` int64: march each ray from coarse segment ``k_start`` on (see :func:`segment_index`), and
    ``n_coarse``: the number of coarse steps ``M`` of the first call (default: from this call's longest span).
    Marching on from where a call stopped gives exactly the segments one longer march finds, so forward rendering
    marches a round at a time and stops with the ray instead of marching every ray to the end of the box.
    """
    n = origins.shape[0]
    dev = origins.device
    m = int(n_coarse if n_coarse is not None else coarse_step_count(t0, t1, coarse_step, max_coarse))
    ext = _march_ext(perturb, grid, origins, dirs, t0, t1) if n > 0 and max_segments > 0 else None
    if ext is not None:  # the fused C++ march: same float32 operations, no (N, M) temporaries (it allocates its own
        # outputs: zeroing (N, max_segments) here too would cost as much as the march itself)
        ks = k_start.to(torch.int64) if k_start is not None else torch.zeros(0, dtype=torch.int64)
        return tuple(ext.occupied_segments_march(grid.mask, grid.bmin, grid.cell_size, origins, dirs, t0, t1, ks,
                                                 float(coarse_step), int(max_segments), m))
    seg_lo = torch.zeros(n, max_segments, device=dev, dtype=origins.dtype)
    seg_ok = torch.zeros(n, max_segments, device=dev, dtype=torch.bool)
    if n == 0 or max_segments == 0:
        return seg_lo, seg_ok
    kk = torch.arange(m, device=dev, dtype=origins.dtype)[None]  # (1, M)
    if k_start is not None:  # (N, M) absolute coarse indices, those at or past M outside the march
        kk = kk + k_start.to(device=dev, dtype=origins.dtype)[:, None]
    lo = t0[:, None] + kk * coarse_step  # (N, M) segment starts
    probe_off = _rand((n, m), generator, dev) if perturb else torch.full((n, m), 0.5, device=dev)
    probe = lo + probe_off * coarse_step
    inside = lo < t1[:, None]
    if k_start is not None:
        inside &= kk < m
    pts = origins[:, None, :] + dirs[:, None, :] * probe[..., None]
    occ = grid.query(pts) & inside
    rank = torch.cumsum(occ.to(torch.int32), 1)
    keep = occ & (rank <= max_segments)
    rows, cols = torch.nonzero(keep, as_tuple=True)
    slot = rank[rows, cols].long() - 1
    seg_lo[rows, slot] = lo[rows, cols]
    seg_ok[rows, slot] = True
    return seg_lo, seg_ok


class SegmentRounds:
    """The occupied coarse segments of ``N`` rays (:func:`occupied_segments`), handed out ``per_round`` at a time.

    ``lazy=True`` marches each round only for the rays asked for, from where their previous round stopped, so rays
    that became opaque are never marched further (forward rendering: most rays stop in their first round, and
    marching all ``max_total`` segments of every ray to the end of the box cost as much as rendering them).
    ``lazy=False`` marches everything once (the jittered march must draw its random numbers in one go for training
    runs to stay bit-identical). Both hand out the same segments.
    """

    def __init__(self, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor, t0: torch.Tensor,
                 t1: torch.Tensor, *, coarse_step: float, per_round: int, max_total: int, lazy: bool,
                 perturb: bool = False, generator: torch.Generator | None = None):
        self.grid, self.origins, self.dirs, self.t0, self.t1 = grid, origins, dirs, t0, t1
        self.coarse_step, self.per_round, self.max_total, self.lazy = coarse_step, per_round, max_total, lazy
        n = origins.shape[0]
        self.n_coarse = coarse_step_count(t0, t1, coarse_step)
        if lazy:
            self.more = torch.ones(n, dtype=torch.bool, device=origins.device)  # may have segments in the next round
            self.k_next = torch.zeros(n, dtype=torch.int64, device=origins.device)
        else:
            self.seg_lo, self.seg_ok = occupied_segments(grid, origins, dirs, t0, t1, coarse_step=coarse_step,
                                                         max_segments=max_total, perturb=perturb,
                                                         generator=generator, n_coarse=self.n_coarse)

    def candidates(self, r: int) -> torch.Tensor:
        """``(N,)`` bool: rays that may have segments in the round starting at segment ``r``."""
        return self.more if self.lazy else self.seg_ok[:, r]

    def round(self, rows: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Segments ``r .. r + per_round - 1`` (``(G, S)`` starts and validity) of the rays ``rows`` ``(G,)``."""
        if not self.lazy:
            return self.seg_lo[rows, r:r + self.per_round], self.seg_ok[rows, r:r + self.per_round]
        n_seg = min(self.per_round, self.max_total - r)
        lo, ok = occupied_segments(self.grid, self.origins[rows], self.dirs[rows], self.t0[rows], self.t1[rows],
                                   coarse_step=self.coarse_step, max_segments=n_seg,
                                   k_start=None if r == 0 else self.k_next[rows], n_coarse=self.n_coarse)
        full = ok[:, -1]
        self.more[rows] = full
        self.k_next[rows[full]] = segment_index(lo[full, -1], self.t0[rows[full]], self.coarse_step) + 1
        return lo, ok


def segment_index(seg_lo: torch.Tensor, t0: torch.Tensor, coarse_step: float) -> torch.Tensor:
    """Coarse index ``k`` (int64, shape of ``seg_lo``) of segments ``seg_lo = t0 + k * coarse_step`` found by
    :func:`occupied_segments` (``t0`` broadcastable to ``seg_lo``: ``(N, 1)`` for ``(N, S)``). Rounding recovers
    ``k`` exactly: the float error of ``seg_lo - t0`` is a few ulps of ``seg_lo``, far below half a step for the at
    most 4096 steps of a march."""
    return torch.round((seg_lo - t0) / coarse_step).to(torch.int64)


def segment_samples(seg_lo: torch.Tensor, seg_ok: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, *,
                    coarse_step: float, per_segment: int, perturb: bool = False,
                    generator: torch.Generator | None = None) -> RaySamples:
    """Split segments ``(N, S)`` (from :func:`occupied_segments`) into ``per_segment`` intervals each, clipped to
    ``[t0, t1]``; midpoints, or stratified jitter when ``perturb``. Returns ``K = S * per_segment`` samples."""
    n, s = seg_lo.shape
    fine = coarse_step / per_segment
    j = torch.arange(per_segment, device=seg_lo.device, dtype=seg_lo.dtype)
    a = seg_lo[..., None] + j * fine  # (N, S, P) fine interval starts
    b = a + fine
    a = torch.maximum(a, t0[:, None, None])
    b = torch.minimum(b, t1[:, None, None])
    delta = (b - a).clamp_min(0.0)
    offs = _rand(a.shape, generator, a.device) if perturb else torch.full_like(a, 0.5)
    t = a + offs * delta
    valid = seg_ok[..., None] & (delta > 0)
    k_out = s * per_segment
    t = torch.where(valid, t, torch.zeros_like(t)).reshape(n, k_out)
    delta = torch.where(valid, delta, torch.zeros_like(delta)).reshape(n, k_out)
    return RaySamples(t, delta, valid.reshape(n, k_out))


def occupancy_samples(grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor, t0: torch.Tensor,
                      t1: torch.Tensor, *, coarse_step: float, max_segments: int, per_segment: int,
                      perturb: bool = False, generator: torch.Generator | None = None,
                      max_coarse: int = 4096) -> RaySamples:
    """Two-level march through ``grid`` between ``t0`` and ``t1`` (``(N,)`` each, world units):
    :func:`occupied_segments` then :func:`segment_samples`. Returns ``K = max_segments * per_segment`` padded
    samples per ray. ``origins, dirs`` ``(N, 3)``, ``dirs`` unit length.
    """
    seg_lo, seg_ok = occupied_segments(grid, origins, dirs, t0, t1, coarse_step=coarse_step,
                                       max_segments=max_segments, perturb=perturb, generator=generator,
                                       max_coarse=max_coarse)
    return segment_samples(seg_lo, seg_ok, t0, t1, coarse_step=coarse_step, per_segment=per_segment, perturb=perturb,
                           generator=generator)
