"""Meshing a trained density field: density threshold, visibility carving, vertex colours.

The surface is the density level set extracted by :func:`immersivedepth.render.isosurface.extract_isosurface`.
With ``clip_to_visible`` space the panorama centre cannot see is solid (the field is not evaluated there): along
each central ray, everything beyond the field's first crossing of the level inside a band around the distance map
``D`` (or beyond ``(1 + rel) * D + abs`` when it does not cross) — so unobserved space behind the walls and the
unconstrained, often empty, inside of thin density shells become interior instead of floaters, back faces and
double walls. Triangles are wound so their normals point from dense into free space (the floor's normal is +y).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from immersivedepth import sphere
from immersivedepth.render.isosurface import extract_isosurface
from immersivedepth.render.mesh_geometry import Mesh, decimate, remove_small_components, vertex_normals

__all__ = ["FieldMeshOptions", "SOLID_DENSITY", "auto_density_threshold", "field_colors", "field_mesh"]


# --------------------------------------------------------------------------- threshold
@torch.no_grad()
def auto_density_threshold(density_fn: Callable[[np.ndarray], np.ndarray], distance: np.ndarray, *,
                           n_rays: int = 4096, n_samples: int = 128, window: tuple[float, float] = (0.5, 1.5),
                           n_candidates: int = 64, seed: int = 0) -> tuple[float, float]:
    """Density level whose first crossing along rays from the panorama centre best matches the distance map.

    Samples ``n_rays`` valid pixels of ``distance`` ``(H, W)`` (area-uniform), evaluates the density at
    ``n_samples`` distances in ``window * D`` along each, and searches (``n_candidates`` log-spaced levels,
    three coarse-to-fine rounds) the level minimising the median relative error ``|t_hit - D| / D`` of the
    first crossing ``t_hit`` (linearly interpolated between samples). Returns (level, that error).
    """
    d = np.asarray(distance, np.float64)
    valid = np.isfinite(d) & (d > 0)
    if not valid.any():
        raise ValueError("auto threshold: the distance map has no valid pixel.")
    hgt, wid = d.shape
    w = (sphere.cos_lat_weights(hgt, wid, np.float64) * valid).reshape(-1)
    rng = np.random.default_rng(seed)
    pix = rng.choice(hgt * wid, size=min(n_rays, int(valid.sum())), replace=False, p=w / w.sum())
    dirs = sphere.erp_directions(hgt, wid, np.float64).reshape(-1, 3)[pix]
    dd = d.reshape(-1)[pix]
    s = np.linspace(window[0], window[1], n_samples)
    t = dd[:, None] * s[None, :]
    pts = (dirs[:, None, :] * t[..., None]).reshape(-1, 3)
    sig = np.asarray(density_fn(pts), np.float64).reshape(len(pix), n_samples)
    pos = sig[sig > 0]
    if pos.size == 0:
        raise ValueError("auto threshold: the field's density is zero everywhere near the depth-map surface; "
                         "is the checkpoint trained? Set render.export.field_mesh.threshold to a number.")
    lo, hi = np.quantile(pos, [0.02, 0.98])
    if not hi > lo:
        hi = lo * 10 + 1e-12
    r = np.arange(len(pix))

    def rel_error(c):
        above = sig >= c
        hit = above.any(axis=1)
        k = np.argmax(above, axis=1)
        km = np.maximum(k - 1, 0)
        s0, s1 = sig[r, km], sig[r, k]
        frac = np.where((k > 0) & (s1 > s0), (c - s0) / np.where(s1 > s0, s1 - s0, 1.0), 0.0)
        th = t[r, km] + frac * (t[r, k] - t[r, km])
        return float(np.median(np.where(hit, np.abs(th - dd) / dd, 1.0)))

    # coarse-to-fine search over log-spaced levels (3 rounds, each zooming into the best candidate's neighbours)
    a, b = math.log(max(lo, 1e-12)), math.log(hi)
    best, best_err = math.exp(a), np.inf
    for _ in range(3):
        cands = np.linspace(a, b, n_candidates)
        errs = [rel_error(math.exp(c)) for c in cands]
        i = int(np.argmin(errs))
        if errs[i] < best_err:
            best, best_err = float(math.exp(cands[i])), errs[i]
        step = cands[1] - cands[0]
        a, b = cands[i] - step, cands[i] + step
    return best, best_err


# --------------------------------------------------------------------------- field mesh
@dataclass
class FieldMeshOptions:
    """Options of :func:`field_mesh` (``render.export.field_mesh`` in the config)."""

    resolution: int = 256
    threshold: Any = "auto"  # a density level, or "auto"
    interp: str = "linear"
    refine_steps: int = 4
    slab: int = 16
    brick: int = 16
    sparse: bool = True
    coarse_per_brick: int = 4
    chunk: int = 262144
    clip_to_visible: bool = True
    carve_front: float = 0.2
    carve_height: int = 256
    carve_samples: int = 48
    use_occupancy: bool = True
    visible_rel_margin: float = 0.05
    visible_abs_voxels: float = 2.0
    min_component_fraction: float = 0.01
    decimate_faces: int = 0
    colors: bool = True
    auto_n_rays: int = 4096
    auto_n_samples: int = 128
    auto_window: tuple[float, float] = (0.5, 1.5)
    view_origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def from_mapping(cls, m) -> FieldMeshOptions:
        known = {f for f in cls.__dataclass_fields__}
        extra = set(m) - known - {"enabled"}
        if extra:
            raise ValueError(f"render.export.field_mesh: unknown option(s) {sorted(extra)}; known: {sorted(known)}.")
        kw = {k: (tuple(v) if isinstance(v, list | tuple) else v) for k, v in m.items() if k in known}
        return cls(**kw)


#: Density given to empty occupancy cells behind the observed surface (far above any surface level).
SOLID_DENSITY = 1e6


def _density_fn(field, chunk: int, device, use_occupancy: bool = True, behind_fn=None):
    """Batched ``density(points (N, 3) float64) -> (N,)`` as the renderer sees the field.

    With ``use_occupancy`` and a field that has an occupancy grid, the field is only evaluated in occupied cells:
    an empty cell reads 0 in front of the observed surface and :data:`SOLID_DENSITY` behind it (``behind_fn(p)
    -> (N,) bool``; without it, 0 everywhere). The renderer never samples empty cells, so whatever the density
    network says there (typically a faint fog it was never asked about) is not part of the scene.
    """
    occ = getattr(field, "occupancy", None) if use_occupancy else None

    @torch.no_grad()
    def fn(pts: np.ndarray) -> np.ndarray:
        out = np.zeros(len(pts), np.float64)
        for s in range(0, len(pts), chunk):
            x = torch.as_tensor(pts[s:s + chunk], dtype=torch.float32, device=device)
            if occ is None:
                out[s:s + chunk] = field.density(x).reshape(-1).double().cpu().numpy()
                continue
            busy = occ.query(x).reshape(-1).cpu().numpy()
            if busy.any():
                out[s:s + chunk][busy] = field.density(x[torch.from_numpy(busy).to(x.device)]).reshape(-1).double(
                ).cpu().numpy()
            if behind_fn is not None and (~busy).any():
                idx = np.flatnonzero(~busy) + s
                out[idx[behind_fn(pts[idx])]] = SOLID_DENSITY
        return out
    return fn


@torch.no_grad()
def field_colors(field, vertices: np.ndarray, *, view_origin=(0.0, 0.0, 0.0), chunk: int = 262144,
                 device="cpu") -> np.ndarray:
    """Colour ``(V, 3)`` of the field at ``vertices`` ``(V, 3)`` seen from ``view_origin`` (the panorama centre)."""
    out = []
    vo = np.asarray(view_origin, np.float32)
    for s in range(0, len(vertices), chunk):
        x = torch.as_tensor(vertices[s:s + chunk], dtype=torch.float32, device=device)
        d = x - torch.as_tensor(vo, device=device)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        rgb = field.color(x, d) if hasattr(field, "color") else field(x, d)[1]
        out.append(rgb.reshape(-1, 3).float().clamp(0, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def _carve_distances(dens, dmap: np.ndarray, thr: float, *, rel_margin: float, abs_margin: float, front: float,
                     height: int, n_samples: int) -> np.ndarray:
    """Per direction (ERP grid ``(height, 2 height)``) the distance beyond which space counts as solid.

    Along each central ray the band ``[(1 - front) D, (1 + rel_margin) D + abs_margin]`` around the distance
    map ``D`` is searched for the field's first crossing of ``thr``; beyond it (or beyond the band's end when
    there is none) nothing is visible from the panorama centre. A 3x3 maximum filter keeps silhouettes generous.
    """
    d = np.where(np.isfinite(dmap) & (dmap > 0), dmap, 0.0)
    h0, w0 = d.shape
    gh = int(min(height, h0))
    gw = 2 * gh
    # generous distance per coarse pixel: max over the (max-filtered) fine pixels it covers
    dfill = ndimage.maximum_filter(np.where(d > 0, d, np.inf), size=3, mode=("nearest", "wrap"))
    dirs = sphere.erp_directions(gh, gw, np.float64)
    dg = np.asarray(sphere.erp_sample_dirs(np.where(np.isinf(dfill), 1e30, dfill), dirs), np.float64)
    known = dg < 1e29
    t0 = np.where(known, dg * (1.0 - front), 0.0)
    t1 = np.where(known, dg * (1.0 + rel_margin) + abs_margin, 0.0)
    s = np.linspace(0.0, 1.0, n_samples)
    t = t0[..., None] + (t1 - t0)[..., None] * s
    out = np.where(known, t1, np.inf)
    k = np.flatnonzero(known.reshape(-1))
    if len(k):
        tk = t.reshape(-1, n_samples)[k]
        sig = dens((dirs.reshape(-1, 3)[k][:, None, :] * tk[..., None]).reshape(-1, 3)).reshape(len(k), n_samples)
        above = sig >= thr
        hit = above.any(axis=1)
        j = np.argmax(above, axis=1)
        jm = np.maximum(j - 1, 0)
        r = np.arange(len(k))
        s0, s1 = sig[r, jm], sig[r, j]
        frac = np.where((j > 0) & (s1 > s0), (thr - s0) / np.where(s1 > s0, s1 - s0, 1.0), 0.0)
        th = tk[r, jm] + np.clip(frac, 0, 1) * (tk[r, j] - tk[r, jm])
        flat = out.reshape(-1)
        flat[k] = np.where(hit, th, tk[:, -1])
    out = ndimage.maximum_filter(out, size=3, mode=("nearest", "wrap"))
    return np.where(np.isinf(out), 1e30, out)


def field_mesh(field, options: FieldMeshOptions | None = None, *, distance: np.ndarray | None = None,
               bounds=None, device="cpu", progress: bool = True) -> Mesh:
    """Mesh of a density field: iso-surface, vertex colours, small components removed, optional decimation.

    ``distance`` ``(H, W)`` (the run's distance panorama, world units) enables the automatic threshold and
    ``clip_to_visible``; ``bounds`` ``(min, max)`` defaults to ``field.bounds`` intersected with the box of the
    visible points (+ margin).
    """
    o = options or FieldMeshOptions()
    if o.interp not in ("log", "linear"):
        raise ValueError(f"field_mesh interp must be 'log' or 'linear', got {o.interp!r}.")
    lo, hi = (torch.as_tensor(b).detach().cpu().double().numpy().reshape(3) for b in field.bounds)
    if bounds is not None:
        lo, hi = np.maximum(lo, bounds[0]), np.minimum(hi, bounds[1])
    dmap = None
    if distance is not None:
        dmap = np.asarray(distance, np.float64)
        valid = np.isfinite(dmap) & (dmap > 0)
        if valid.any():
            pts = sphere.erp_directions(*dmap.shape, np.float64)[valid] * dmap[valid][:, None]
            pad = (np.ptp(pts, axis=0).max() * o.visible_rel_margin) + 1e-6
            lo, hi = np.maximum(lo, pts.min(0) - pad), np.minimum(hi, pts.max(0) + pad)
    behind_fn = None
    if dmap is not None:
        dbehind = np.where(np.isfinite(dmap) & (dmap > 0), dmap, 1e30)

        def behind_fn(p):
            return np.linalg.norm(p, axis=1) > np.asarray(sphere.erp_sample_dirs(dbehind, p), np.float64)

    dens = _density_fn(field, o.chunk, device, o.use_occupancy, behind_fn)
    thr_info = {}
    if isinstance(o.threshold, str):
        if o.threshold != "auto":
            raise ValueError(f"field_mesh threshold must be a number or 'auto', got {o.threshold!r}.")
        if dmap is None:
            # a voxel-thick slab with opacity 1/2: sigma * h = ln 2
            h = float((hi - lo).max()) / (o.resolution - 1)
            thr = math.log(2.0) / h
            thr_info = {"threshold_method": "half-opaque voxel (no distance map)"}
        else:
            thr, err = auto_density_threshold(dens, dmap, n_rays=o.auto_n_rays, n_samples=o.auto_n_samples,
                                              window=tuple(o.auto_window))
            thr_info = {"threshold_method": "auto (first crossing matches distance map)", "threshold_rel_err": err}
    else:
        thr = float(o.threshold)
        if thr <= 0:
            raise ValueError(f"field_mesh threshold must be > 0 (a density), got {thr}.")
    if o.interp == "log":
        floor = thr * 1e-6
        value_fn = lambda p: np.log(np.maximum(dens(p), floor))
        level = math.log(thr)
        solid_value = level + math.log(1e3)
    else:
        value_fn, level, solid_value = dens, thr, thr * 1e3
    solid_fn = None
    if o.clip_to_visible and dmap is not None:
        h = float((hi - lo).max()) / (o.resolution - 1)
        t_solid = _carve_distances(dens, dmap, thr, rel_margin=o.visible_rel_margin,
                                   abs_margin=o.visible_abs_voxels * h, front=o.carve_front,
                                   height=o.carve_height, n_samples=o.carve_samples)

        def solid_fn(p):
            r = np.linalg.norm(p, axis=1)
            return r > np.asarray(sphere.erp_sample_dirs(t_solid, p), np.float64) + h

    verts, faces, info = extract_isosurface(value_fn, lo, hi, o.resolution, level, slab=o.slab, brick=o.brick,
                                            sparse=o.sparse, coarse_per_brick=o.coarse_per_brick, solid_fn=solid_fn,
                                            solid_value=solid_value, refine_steps=o.refine_steps,
                                            progress=progress)
    info.update(thr_info, threshold=float(thr), raw_faces=int(len(faces)))
    verts, faces, _, n_rm = remove_small_components(verts, faces, o.min_component_fraction)
    info["removed_components"] = n_rm
    mesh = Mesh(verts, faces, info=info)
    if o.decimate_faces:
        mesh, msg = decimate(mesh, o.decimate_faces)
        mesh.info["decimation"] = msg
    if len(mesh.faces) == 0:
        raise ValueError(f"field mesh is empty at density threshold {thr:.4g} over box {lo.round(3).tolist()} - "
                         f"{hi.round(3).tolist()}; lower render.export.field_mesh.threshold or use 'auto'.")
    if o.colors:
        mesh.colors = field_colors(field, mesh.vertices, view_origin=o.view_origin, chunk=o.chunk, device=device)
    mesh.normals = vertex_normals(mesh.vertices, mesh.faces)
    return mesh
