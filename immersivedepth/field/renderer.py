"""Volume rendering of rays through a radiance field, in world units, pure torch (CPU or GPU).

``render_rays`` picks the samples (depth-guided band for supervised training rays, the field's occupancy grid
for any other ray, or uniform samples when the field has no grid), evaluates the density at every valid sample
and the colour only where the compositing weight matters (``weight > color_weight_threshold``: after training
that is 1-3 samples per ray, which is what makes CPU rendering affordable), and composites::

    alpha_i = 1 - exp(-sigma_i * delta_i)        T_i = exp(-sum_{j<i} sigma_j * delta_j)       w_i = T_i * alpha_i
    rgb      = sum_i w_i c_i + (1 - opacity) * background(d)
    distance = sum_i w_i t_i + (1 - opacity) * t_far        opacity = sum_i w_i

``background(d)`` is the field's background: one colour, or (``field.directional_background``) an environment map
looked up along the ray direction ``d`` only, so content at infinity does not move with the ray origin.
``t_far`` is where the ray leaves the sampled range (the field's box, ``far``, or the end of the guide band), so a
ray that crosses no surface reads as "far away". Normals (optional) are the composited negative density gradient
(central differences, so any encoding backend works).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from immersivedepth import sphere
from immersivedepth.field.inference import render_round_packed
from immersivedepth.field.normals import density_normals
from immersivedepth.field.sampler import (
    RaySamples,
    SegmentRounds,
    ray_box_intersect,
    segment_samples,
    uniform_samples,
)

__all__ = ["DEFAULT_RENDER_OPTIONS", "composite_weights", "render_samples", "render_rays", "render_panorama"]

#: Sampling/rendering defaults; a field may carry its own ``render_options`` (from its config) that override them.
DEFAULT_RENDER_OPTIONS: dict = {
    "coarse_step": None,  # world units; None: half the occupancy grid's smallest cell edge
    "max_segments": 16,  # occupied coarse segments evaluated per round (novel views) ...
    "max_total_segments": 512,  # ... rounds continue while the ray is not opaque, up to this many segments
    "min_transmittance": 1e-4,  # a ray stops once its transmittance falls below this
    "per_segment": 4,  # fine samples per occupied coarse segment
    "uniform_samples": 128,  # samples per ray when the field has no occupancy grid
    "color_weight_threshold": 1e-4,  # colour is evaluated only where w_i exceeds this ...
    "color_samples": 4,  # ... and only at the largest `color_samples` weights of a ray (per round), renormalised
    # Forward-only rendering of novel-view rays (no autograd, no per-sample outputs): "packed" marches the occupancy
    # grid a round at a time, evaluates the density `inference_segments` occupied segments at a time and stops each
    # ray as soon as it is opaque, on packed (valid-only) samples; "padded" is the original path (all segments
    # marched at once, every sample of a round, padded (N, K) tensors). Both give the same images up to float
    # rounding and the < min_transmittance a terminated ray leaves unspent.
    "inference": "packed",
    "inference_segments": 1,
}


def _options(field, overrides: Mapping | None) -> dict:
    opts = dict(DEFAULT_RENDER_OPTIONS)
    opts.update(getattr(field, "render_options", None) or {})
    opts.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return opts


def composite_weights(sigma: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Compositing weights ``(N, K)`` from densities and interval lengths ``(N, K)`` (samples in ray order)."""
    tau = sigma * delta
    trans = torch.exp(-(torch.cumsum(tau, 1) - tau))
    return trans * (1.0 - torch.exp(-tau))


def _background(field, dirs: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Background colour ``(N, 3)`` of rays along ``dirs`` ``(N, 3)`` (dtype/device of ``ref``)."""
    n = dirs.shape[0]
    if not hasattr(field, "background_color"):
        return ref.new_zeros(n, 3)
    if getattr(field, "directional_background", False):
        return field.background_color(dirs).to(ref)
    return field.background_color().to(ref).reshape(1, 3).expand(n, 3)


def render_samples(field, origins: torch.Tensor, dirs: torch.Tensor, samples: RaySamples, t_far: torch.Tensor, *,
                   color_weight_threshold: float = 0.0, max_color_samples: int | None = None,
                   compute_normals: bool = False, normal_eps: float | None = None, use_viewdirs: bool = True,
                   trans0: torch.Tensor | None = None, background: bool = True,
                   renormalize_color: bool = False) -> dict:
    """Composite given samples. ``origins, dirs`` ``(N, 3)``; ``t_far`` ``(N,)``.

    Colour is evaluated where ``weight > color_weight_threshold`` and, when ``max_color_samples`` is set, only at
    the ``max_color_samples`` largest weights of each ray (the rest of the ray's weight then contributes no colour:
    training uses this, which also pushes the weights to concentrate on a few samples, i.e. sharp surfaces).
    ``renormalize_color``: scale the colour of the selected samples by ``sum(all weights) / sum(selected weights)``
    so the unselected weight takes the selected samples' average colour (rendering uses this with
    ``max_color_samples``: colour comes from the dominant samples of each ray, which is what training fits).
    ``trans0`` ``(N,)``: transmittance already spent before these samples (weights are scaled by it; used when a
    ray is rendered in rounds). ``background=False`` leaves out the background terms of ``rgb`` and ``distance``
    (``opacity`` is then the weight of these samples only).

    Returns ``rgb (N,3)``, ``distance (N,)``, ``opacity (N,)``, ``weights (N,K)``, ``sigma (N,K)``, ``t``,
    ``delta``, ``valid`` ``(N,K)``, ``n_density``/``n_color`` (evaluated sample counts) and, when requested,
    ``normal (N,3)`` (zero where nothing was hit).
    """
    n, k = samples.t.shape
    valid = samples.valid
    pts = origins[:, None, :] + dirs[:, None, :] * samples.t[..., None]  # (N,K,3)
    sig_v = field.density(pts[valid]).reshape(-1)
    sigma = torch.zeros(n, k, dtype=sig_v.dtype, device=sig_v.device).index_put((valid,), sig_v)
    weights = composite_weights(sigma, samples.delta)
    if trans0 is not None:
        weights = weights * trans0[:, None]
    opacity = weights.sum(1)
    sel = valid & (weights.detach() > color_weight_threshold)
    if max_color_samples is not None and max_color_samples < k:
        top = torch.topk(weights.detach(), int(max_color_samples), dim=1).indices
        in_top = torch.zeros_like(sel).scatter_(1, top, True)
        sel = sel & in_top
    d_sel = dirs[:, None, :].expand(n, k, 3)[sel] if use_viewdirs else None
    rgb_s = field.color(pts[sel], d_sel)
    cols = torch.zeros(n, k, 3, dtype=rgb_s.dtype, device=rgb_s.device).index_put((sel,), rgb_s)
    rgb = (weights[..., None] * cols).sum(1)
    if renormalize_color:
        w_sel = torch.where(sel, weights, torch.zeros_like(weights)).sum(1)
        rgb = rgb * (opacity / w_sel.clamp_min(1e-10))[:, None]
    distance = (weights * samples.t).sum(1)
    if background:
        rgb = rgb + (1.0 - opacity)[:, None] * _background(field, dirs, rgb_s)
        distance = distance + (1.0 - opacity) * t_far
    out = {
        "rgb": rgb,
        "distance": distance,
        "opacity": opacity,
        "weights": weights,
        "sigma": sigma,
        "t": samples.t,
        "delta": samples.delta,
        "valid": valid,
        "n_density": int(valid.sum()),
        "n_color": int(sel.sum()),
    }
    if compute_normals:
        eps = normal_eps if normal_eps is not None else float(getattr(field, "normal_eps", 1e-2))
        nrm = density_normals(field, pts[sel], eps)
        nk = torch.zeros(n, k, 3, dtype=nrm.dtype, device=nrm.device).index_put((sel,), nrm)
        nsum = (weights[..., None] * nk).sum(1)
        out["normal"] = nsum / nsum.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return out


def _sample_rays(field, origins, dirs, opts, *, near, far, n_samples, perturb,
                 generator) -> tuple[RaySamples | SegmentRounds, torch.Tensor]:
    bmin, bmax = (torch.as_tensor(b, dtype=origins.dtype, device=origins.device) for b in field.bounds)
    t0, t1 = ray_box_intersect(origins, dirs, bmin, bmax)
    t0 = t0.clamp_min(float(near))
    if far is not None:
        t1 = torch.minimum(t1, torch.as_tensor(far, dtype=t1.dtype, device=t1.device).expand_as(t1))
    t1 = torch.maximum(t1, t0)
    grid = getattr(field, "occupancy", None)
    coarse_step = opts["coarse_step"]
    if grid is not None and coarse_step is None:
        coarse_step = 0.5 * float(grid.cell_size.min())
    if grid is not None and n_samples is None:
        # forward-only rendering ("packed", no jitter, no gradients) marches a round at a time, only for the rays
        # still transparent; otherwise the original one-go march (training's jittered march must draw its random
        # numbers in one go)
        lazy = opts["inference"] == "packed" and not perturb and not torch.is_grad_enabled()
        seg = SegmentRounds(grid, origins, dirs, t0, t1, coarse_step=coarse_step, per_round=int(opts["max_segments"]),
                            max_total=int(opts["max_total_segments"]), lazy=lazy, perturb=perturb,
                            generator=generator)
        return seg, t1
    return uniform_samples(t0, t1, int(n_samples or opts["uniform_samples"]), perturb=perturb,
                           generator=generator), t1


def _render_rounds(field, origins, dirs, seg, t1, opts, *, perturb, generator, compute_normals,
                   return_samples) -> dict:
    """Render rays through their occupied segments ``seg`` (:class:`SegmentRounds`), ``max_segments`` at a time,
    continuing only rays whose transmittance is above ``min_transmittance`` (early ray termination)."""
    n, s_total, per_round = origins.shape[0], seg.max_total, seg.per_round
    t0, coarse_step = seg.t0, seg.coarse_step
    # the packed inference path needs no per-sample outputs, no gradients and no random jitter
    packed = (opts["inference"] == "packed" and not return_samples and not perturb and not torch.is_grad_enabled())
    if opts["inference"] not in ("packed", "padded"):
        raise ValueError(f"render_rays: options['inference'] must be 'packed' or 'padded', got {opts['inference']!r}")
    trans = torch.ones(n, dtype=origins.dtype, device=origins.device)
    rgb = torch.zeros(n, 3, dtype=origins.dtype, device=origins.device)
    dist = torch.zeros(n, dtype=origins.dtype, device=origins.device)
    nrm = torch.zeros(n, 3, dtype=origins.dtype, device=origins.device) if compute_normals else None
    n_density = n_color = 0
    kept: dict[str, list] = {k: [] for k in ("weights", "sigma", "t", "delta", "valid")}
    for r in range(0, s_total, per_round):
        ia = torch.nonzero(seg.candidates(r) & (trans > float(opts["min_transmittance"])), as_tuple=True)[0]
        if ia.numel() == 0:
            break
        lo, ok = seg.round(ia, r)
        if not bool(ok[:, 0].all()):  # (lazy march) rays that found no segment left
            ia, lo, ok = ia[ok[:, 0]], lo[ok[:, 0]], ok[ok[:, 0]]
            if ia.numel() == 0:
                break
        if packed:
            o = vars(render_round_packed(
                field, origins[ia], dirs[ia], lo, ok, t0[ia], t1[ia], trans[ia], coarse_step=coarse_step,
                per_segment=int(opts["per_segment"]),
                sub_segments=int(opts["inference_segments"]), min_transmittance=float(opts["min_transmittance"]),
                color_weight_threshold=float(opts["color_weight_threshold"]),
                color_samples=opts["color_samples"] or None, compute_normals=compute_normals))
        else:
            smp = segment_samples(lo, ok, t0[ia], t1[ia],
                                  coarse_step=coarse_step, per_segment=int(opts["per_segment"]), perturb=perturb,
                                  generator=generator)
            o = render_samples(field, origins[ia], dirs[ia], smp, t1[ia],
                               color_weight_threshold=float(opts["color_weight_threshold"]),
                               max_color_samples=opts["color_samples"] or None,
                               renormalize_color=bool(opts["color_samples"]),
                               compute_normals=compute_normals, trans0=trans[ia], background=False)
        rgb = rgb.index_add(0, ia, o["rgb"])
        dist = dist.index_add(0, ia, o["distance"])
        if compute_normals:
            nrm = nrm.index_add(0, ia, o["normal"] * o["opacity"][:, None])
        trans = trans.index_put((ia,), trans[ia] - o["opacity"])
        n_density += o["n_density"]
        n_color += o["n_color"]
        if return_samples:
            for k in kept:
                full = torch.zeros((n,) + tuple(o[k].shape[1:]), dtype=o[k].dtype, device=o[k].device)
                kept[k].append(full.index_put((ia,), o[k]))
    trans = trans.clamp_min(0.0)
    out = {"rgb": rgb + trans[:, None] * _background(field, dirs, rgb), "distance": dist + trans * t1,
           "opacity": 1.0 - trans, "n_density": n_density, "n_color": n_color}
    if compute_normals:
        out["normal"] = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    for k, v in kept.items():
        if v:
            out[k] = torch.cat(v, 1)
        else:
            out[k] = torch.zeros(n, 0, dtype=torch.bool if k == "valid" else origins.dtype, device=origins.device)
    return out


def render_rays(field, origins: torch.Tensor, dirs: torch.Tensor, *, near: float = 0.0, far=None,
                n_samples: int | None = None, options: Mapping | None = None, perturb: bool = False,
                generator: torch.Generator | None = None, chunk: int | None = None, compute_normals: bool = False,
                return_samples: bool = False) -> dict:
    """Render rays through ``field`` (world units throughout).

    Args:
        field: a :class:`~immersivedepth.field.model.RadianceField` (or anything with ``density(x)``,
            ``color(x, d)``, ``bounds``; optional ``occupancy``, ``background_color()``, ``render_options``).
        origins: ``(N, 3)`` ray origins (any point; novel views use origins != 0).
        dirs: ``(N, 3)`` unit directions.
        near, far: clip the sampled range (``far``: float or ``(N,)``; default the box exit).
        n_samples: force ``n_samples`` uniform samples per ray (ignores the occupancy grid).
        options: overrides of :data:`DEFAULT_RENDER_OPTIONS` / ``field.render_options``.
        perturb, generator: stratified jitter of the samples (training) and its random generator.
        chunk: rays per chunk (memory bound for big images); ``None`` renders all at once.
        compute_normals: add ``normal (N, 3)``.
        return_samples: keep the per-sample tensors (``weights``, ``sigma``, ``t``, ``delta``, ``valid`` ``(N, K)``).

    Returns:
        dict with ``rgb (N, 3)``, ``distance (N,)``, ``opacity (N,)``, ``n_density``, ``n_color`` and the optional
        entries above.
    """
    if origins.ndim != 2 or origins.shape[-1] != 3 or dirs.shape != origins.shape:
        raise ValueError(f"render_rays: origins and dirs must both be (N, 3); got {tuple(origins.shape)} and "
                         f"{tuple(dirs.shape)}")
    opts = _options(field, options)
    n = origins.shape[0]
    step = n if not chunk else int(chunk)
    outs = []
    for s in range(0, max(n, 1), max(step, 1)):
        sl = slice(s, s + step)
        far_c = far[sl] if isinstance(far, torch.Tensor) and far.ndim > 0 else far
        samples, t_far = _sample_rays(
            field, origins[sl], dirs[sl], opts, near=near, far=far_c,
            n_samples=n_samples, perturb=perturb, generator=generator)
        if isinstance(samples, SegmentRounds):
            o = _render_rounds(field, origins[sl], dirs[sl], samples, t_far, opts,
                               perturb=perturb, generator=generator, compute_normals=compute_normals,
                               return_samples=return_samples)
        else:
            o = render_samples(field, origins[sl], dirs[sl], samples, t_far,
                               color_weight_threshold=float(opts["color_weight_threshold"]),
                               max_color_samples=opts["color_samples"] or None,
                               renormalize_color=bool(opts["color_samples"]),
                               compute_normals=compute_normals)
        if not return_samples:
            for key in ("weights", "sigma", "t", "delta", "valid"):
                o.pop(key, None)
        outs.append(o)
    if len(outs) == 1:
        return outs[0]
    merged = {}
    for key, val in outs[0].items():
        if isinstance(val, torch.Tensor):
            merged[key] = torch.cat([o[key] for o in outs], 0)
        else:
            merged[key] = sum(o[key] for o in outs)
    return merged


@torch.no_grad()
def render_panorama(field, height: int, width: int, *, position=(0.0, 0.0, 0.0), chunk: int = 16384,
                    compute_normals: bool = False, options: Mapping | None = None) -> dict:
    """Render an equirectangular panorama ``(H, W)`` from ``position`` (world, axes as in ``sphere.py``).

    Returns numpy ``rgb (H,W,3)`` float32, ``distance (H,W)``, ``opacity (H,W)`` (and ``normal (H,W,3)``).
    """

    dev = next(iter(field.parameters())).device if hasattr(field, "parameters") else torch.device("cpu")
    d = torch.from_numpy(sphere.erp_directions(height, width)).reshape(-1, 3).to(dev)
    o = torch.as_tensor(position, dtype=torch.float32, device=dev).reshape(1, 3).expand_as(d).contiguous()
    out = render_rays(field, o, d, chunk=chunk, compute_normals=compute_normals, options=options)
    res = {
        "rgb": out["rgb"].clamp(0, 1).reshape(height, width, 3).cpu().numpy(),
        "distance": out["distance"].reshape(height, width).cpu().numpy(),
        "opacity": out["opacity"].reshape(height, width).cpu().numpy(),
    }
    if compute_normals:
        res["normal"] = out["normal"].reshape(height, width, 3).cpu().numpy()
    return res
