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
    # Colour needs each ray's largest weights of the round: with `color_samples` a running top-C per ray, merged
    # after every sub-round (no (G, K) padded weights: filling and scanning those cost more than the compositing);
    # without it every sample above the threshold, kept padded.
    top_c = int(color_samples) if color_samples is not None and color_samples < k else None
    n_keep = top_c if top_c is not None else k
    w_keep = torch.zeros(g, n_keep, dtype=dt, device=dev)
    t_keep = torch.zeros(g, n_keep, dtype=dt, device=dev)
    opacity = torch.zeros(g, dtype=dt, device=dev)
    distance = torch.zeros(g, dtype=dt, device=dev)
    trans = trans0.clone()
    rows = torch.arange(g, device=dev)  # rays still transparent
    n_density = 0
    # the rays still transparent, compacted as they drop out (gathering once per sub-round, not once per sample)
    o_r, d_r, t0_r, t1_r, lo_r, ok_r = origins, dirs, t0, t1, seg_lo, seg_ok
    for s in range(0, s_round, sub_segments):
        e = min(s + sub_segments, s_round)
        has = ok_r[:, s:e].any(1)
        if not bool(has.all()):  # segments come in ray order: a ray with none left here has none later either
            rows, o_r, d_r, t0_r, t1_r, lo_r, ok_r = (v[has] for v in (rows, o_r, d_r, t0_r, t1_r, lo_r, ok_r))
        if rows.numel() == 0:
            break
        smp = segment_samples(lo_r[:, s:e], ok_r[:, s:e], t0_r, t1_r, coarse_step=coarse_step,
                              per_segment=per_segment)
        pts = o_r[:, None, :] + d_r[:, None, :] * smp.t[..., None]  # (G', P, 3)
        if bool(smp.valid.all()):  # the usual case: no clipped sample, no packing needed
            sig = field.density(pts.reshape(-1, 3)).reshape(smp.t.shape).to(dt)
            n_density += int(sig.numel())
        else:
            valid = smp.valid
            sig_v = field.density(pts[valid]).reshape(-1).to(dt)
            n_density += int(sig_v.numel())
            sig = torch.zeros_like(smp.t).masked_scatter_(valid, sig_v)
        tau = sig * smp.delta
        cum = torch.cumsum(tau, 1)
        tr = trans[rows]
        w = tr[:, None] * torch.exp(tau - cum) * -torch.expm1(-tau)  # (G', P)
        opacity.index_add_(0, rows, w.sum(1))
        distance.index_add_(0, rows, (w * smp.t).sum(1))
        if top_c is not None:
            cw, ct = torch.cat([w_keep[rows], w], 1), torch.cat([t_keep[rows], smp.t], 1)
            best, idx = torch.topk(cw, top_c, dim=1)
            w_keep[rows] = best
            t_keep[rows] = ct.gather(1, idx)
        else:
            cols = slice(s * per_segment, e * per_segment)
            w_keep[rows, cols] = w
            t_keep[rows, cols] = smp.t
        tr = tr * torch.exp(-cum[:, -1])
        trans[rows] = tr
        live = tr > min_transmittance
        if not bool(live.all()):
            rows, o_r, d_r, t0_r, t1_r, lo_r, ok_r = (v[live] for v in (rows, o_r, d_r, t0_r, t1_r, lo_r, ok_r))
    gi, ki = torch.nonzero(w_keep > color_weight_threshold, as_tuple=True)
    w_sel = w_keep[gi, ki]
    x_sel = origins[gi] + dirs[gi] * t_keep[gi, ki][:, None]
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
