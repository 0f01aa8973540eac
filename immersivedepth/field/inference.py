"""Forward-only rendering of one round of occupied segments on packed samples (no autograd).

The volume renderer (``renderer.py``) renders novel-view rays in rounds of ``max_segments`` occupied coarse
segments. Its padded path evaluates the density at every valid sample of a round on ``(N, K)`` tensors, including
the samples behind a surface that the ray never sees. This module renders the same round for inference:

* the density is evaluated ``inference_segments`` segments at a time, only on the rays still transparent
  (transmittance above ``min_transmittance``), and only at their valid samples (packed, no padding);
* compositing uses the same formula on each sub-round, carrying the transmittance from one to the next::

      w_i = T_in * exp(-sum_{j<i} tau_j) * (1 - exp(-tau_i)),    tau_i = sigma_i * delta_i,
      T_out = T_in * exp(-sum_i tau_i)

* colour is then chosen exactly as in the padded path, per round: the samples whose weight exceeds
  ``color_weight_threshold`` among each ray's ``color_samples`` largest weights, renormalised to the round's
  opacity.

A sample skipped after its ray became opaque has a weight below ``min_transmittance``; with
``min_transmittance <= color_weight_threshold`` (the shipped settings) it could never have been chosen for colour,
so the result differs from the padded path only by that unspent weight (< ``min_transmittance`` of opacity) and
float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from immersivedepth.field.normals import density_normals
from immersivedepth.field.sampler import segment_samples

__all__ = ["RoundResult", "render_round_packed"]


@dataclass
class RoundResult:
    """Per-ray sums of one round for the ``G`` rays it rendered (no background terms).

    ``rgb`` ``(G, 3)``, ``distance`` ``(G,)`` (sum of ``w_i t_i``), ``opacity`` ``(G,)`` (sum of ``w_i``),
    ``normal`` ``(G, 3)`` unit or ``None``, and the evaluated sample counts.
    """

    rgb: torch.Tensor
    distance: torch.Tensor
    opacity: torch.Tensor
    normal: torch.Tensor | None
    n_density: int
    n_color: int


@torch.no_grad()
def render_round_packed(field, origins: torch.Tensor, dirs: torch.Tensor, seg_lo: torch.Tensor, seg_ok: torch.Tensor,
                        t0: torch.Tensor, t1: torch.Tensor, trans0: torch.Tensor, *, coarse_step: float,
                        per_segment: int, sub_segments: int, min_transmittance: float,
                        color_weight_threshold: float, color_samples: int | None, compute_normals: bool = False,
                        normal_eps: float | None = None) -> RoundResult:
    """Render one round (``S`` occupied segments per ray) of ``G`` rays.

    Args:
        origins, dirs: ``(G, 3)`` rays (unit directions).
        seg_lo, seg_ok: ``(G, S)`` the round's segment starts and validity (``sampler.occupied_segments``).
        t0, t1: ``(G,)`` the sampled range of each ray (segments are clipped to it).
        trans0: ``(G,)`` transmittance left when the round starts.
        coarse_step, per_segment: segment length (world units) and fine samples per segment.
        sub_segments: segments per density evaluation (rays stop between them once opaque).
        min_transmittance, color_weight_threshold, color_samples: as in ``renderer.DEFAULT_RENDER_OPTIONS``
            (``color_samples`` ``None``: colour at every sample above the threshold, no renormalisation).
        compute_normals, normal_eps: also composite the unit ``-grad sigma`` at the colour samples.
    """
    g, s_round = seg_lo.shape
    k = s_round * per_segment
    dev, dt = origins.device, origins.dtype
    w_all = torch.zeros(g, k, dtype=dt, device=dev)  # the round's weights, padded: needed for the top-k choice
    t_all = torch.zeros(g, k, dtype=dt, device=dev)
    trans = trans0.clone()
    rows = torch.arange(g, device=dev)  # rays still transparent
    n_density = 0
    for s in range(0, s_round, sub_segments):
        e = min(s + sub_segments, s_round)
        ok = seg_ok[rows, s:e]
        has = ok.any(1)
        if not bool(has.all()):  # segments come in ray order: a ray with none left here has none later either
            rows, ok = rows[has], ok[has]
        if rows.numel() == 0:
            break
        smp = segment_samples(seg_lo[rows, s:e], ok, t0[rows], t1[rows], coarse_step=coarse_step,
                              per_segment=per_segment)
        ri, ci = torch.nonzero(smp.valid, as_tuple=True)
        t_v = smp.t[ri, ci]
        ray = rows[ri]
        sig = field.density(origins[ray] + dirs[ray] * t_v[:, None]).reshape(-1).to(dt)
        n_density += int(sig.numel())
        tau = torch.zeros_like(smp.t).index_put_((ri, ci), sig * smp.delta[ri, ci])
        cum = torch.cumsum(tau, 1)
        w = trans[rows, None] * torch.exp(tau - cum) * -torch.expm1(-tau)
        cols = slice(s * per_segment, e * per_segment)
        w_all[rows, cols] = w
        t_all[rows, cols] = smp.t
        trans[rows] = trans[rows] * torch.exp(-cum[:, -1])
        rows = rows[trans[rows] > min_transmittance]
    opacity = w_all.sum(1)
    distance = (w_all * t_all).sum(1)
    sel = w_all > color_weight_threshold
    if color_samples is not None and color_samples < k:
        top = torch.topk(w_all, int(color_samples), dim=1).indices
        sel &= torch.zeros_like(sel).scatter_(1, top, True)
    gi, ki = torch.nonzero(sel, as_tuple=True)
    w_sel = w_all[gi, ki]
    x_sel = origins[gi] + dirs[gi] * t_all[gi, ki][:, None]
    d_sel = dirs[gi]
    rgb_s = field.color(x_sel, d_sel).to(dt)
    rgb = torch.zeros(g, 3, dtype=dt, device=dev).index_add_(0, gi, w_sel[:, None] * rgb_s)
    if color_samples:
        w_sum = torch.zeros(g, dtype=dt, device=dev).index_add_(0, gi, w_sel)
        rgb = rgb * (opacity / w_sum.clamp_min(1e-10))[:, None]
    normal = None
    if compute_normals:
        eps = normal_eps if normal_eps is not None else float(getattr(field, "normal_eps", 1e-2))
        nrm = density_normals(field, x_sel, eps).to(dt)
        nsum = torch.zeros(g, 3, dtype=dt, device=dev).index_add_(0, gi, w_sel[:, None] * nrm)
        normal = nsum / nsum.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return RoundResult(rgb, distance, opacity, normal, n_density, int(gi.numel()))
