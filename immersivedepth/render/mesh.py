"""Meshes from a density field: seamless chunked marching tetrahedra, colours, clean-up, export.

Surface extraction is marching tetrahedra on the Kuhn (Freudenthal) split of every lattice cell
into 6 tetrahedra sharing the cell's main diagonal. Its edges are exactly the lattice segments
``p -> p + delta`` with ``delta`` in ``{0,1}^3 \\ 0``, so every surface vertex has a *global* key
``(linear index of p) * 8 + code(delta)``: vertices computed in different chunks are merged
exactly by key, and since the lattice values of a chunk's last layer are handed on to the next
chunk (never re-evaluated), neighbouring chunks see identical values — no seams, no cracks.

Evaluation is chunked in slabs along x and, with ``sparse=True``, restricted to bricks of
``brick`` cells where a coarse pass (every ``brick // coarse_per_brick`` lattice points) sees
both sides of the level (dilated by one brick). Features thinner than that coarse spacing can be
missed; ``sparse=False`` evaluates every lattice point. With ``clip_to_visible`` space the panorama
centre cannot see is solid (the field is not evaluated there): along each central ray, everything
beyond the field's first crossing of the level inside a band around the distance map ``D`` (or beyond
``(1 + rel) * D + abs`` when it does not cross) — so unobserved space behind the walls and the
unconstrained, often empty, inside of thin density shells become interior instead of floaters,
back faces and double walls.

Triangles are wound so their normals point from dense into free space (the floor's normal is +y).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from immersivedepth import sphere

__all__ = [
    "Mesh",
    "FieldMeshOptions",
    "marching_tetrahedra",
    "extract_isosurface",
    "auto_density_threshold",
    "remove_small_components",
    "decimate",
    "vertex_normals",
    "field_mesh",
    "export_mesh",
]

log = logging.getLogger(__name__)


@dataclass
class Mesh:
    """Triangle mesh: ``vertices`` ``(V, 3)`` float32 world units, ``faces`` ``(F, 3)`` int64,
    optional ``colors`` ``(V, 3)`` float32 in [0, 1], ``normals`` ``(V, 3)`` unit and texture
    coordinates ``uv`` ``(V, 2)`` (origin bottom-left, as in OBJ)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    uv: np.ndarray | None = None

    def to_trimesh(self):
        import trimesh

        colors = None if self.colors is None else (np.clip(self.colors, 0, 1) * 255 + 0.5).astype(np.uint8)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=colors, process=False)


# --------------------------------------------------------------------------- tetra tables
_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)), dtype=np.int64)  # (8, 3), x slowest


def _kuhn_tets() -> list[np.ndarray]:
    """The 6 tetrahedra ``(4, 3)`` corner offsets of a unit cell (monotone chains 0 -> 1,1,1)."""
    tets = []
    for perm in itertools.permutations(range(3)):
        c = np.zeros(3, np.int64)
        chain = [c.copy()]
        for a in perm:
            c[a] = 1
            chain.append(c.copy())
        tets.append(np.stack(chain))
    return tets


def _case_triangles(case: int, tet: np.ndarray) -> list[tuple[tuple[int, int], ...]]:
    """Triangles (each three tet edges ``(i, j)``, ``i < j``) of a tet case, wound dense -> free.

    Bit ``k`` of ``case`` is set when tet vertex ``k`` is inside (dense, value > level).
    """
    ins = [k for k in range(4) if case >> k & 1]
    out = [k for k in range(4) if not case >> k & 1]
    e = lambda a, b: (min(a, b), max(a, b))
    if len(ins) == 1:
        tris = [(e(ins[0], out[0]), e(ins[0], out[1]), e(ins[0], out[2]))]
    elif len(out) == 1:
        tris = [(e(out[0], ins[0]), e(out[0], ins[1]), e(out[0], ins[2]))]
    elif len(ins) == 2:
        a, b = ins
        c, d = out
        tris = [(e(a, c), e(a, d), e(b, d)), (e(a, c), e(b, d), e(b, c))]
    else:
        return []
    # orient with the canonical geometry (edge midpoints): normal along (mean outside - mean inside)
    pts = tet.astype(np.float64)
    g = pts[out].mean(0) - pts[ins].mean(0)
    oriented = []
    for t in tris:
        p = [0.5 * (pts[i] + pts[j]) for i, j in t]
        n = np.cross(p[1] - p[0], p[2] - p[0])
        oriented.append(t if np.dot(n, g) > 0 else (t[0], t[2], t[1]))
    return oriented


_TETS = _kuhn_tets()
_TABLE = [[_case_triangles(c, t) for c in range(16)] for t in _TETS]


_EMPTY = (np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 2)))


def marching_tetrahedra(values: np.ndarray, level: float, *, origin=(0.0, 0.0, 0.0), spacing: float = 1.0,
                        index_offset: Sequence[int] = (0, 0, 0), global_shape: Sequence[int] | None = None):
    """Iso-surface ``values == level`` of a lattice ``(X, Y, Z)`` (NaN = unknown; cells touching one are skipped).

    Lattice point ``(i, j, k)`` sits at ``origin + (index_offset + (i, j, k)) * spacing``. Returns
    ``keys`` ``(V,)`` int64 global edge keys (see module doc; ``global_shape`` is the full lattice),
    ``vertices`` ``(V, 3)`` float64, ``faces`` ``(F, 3)`` int64 into them (wound dense -> free) and the
    values at each vertex's edge ends ``(V, 2)``.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3 or min(v.shape) < 2:
        return _EMPTY
    gshape = np.asarray(v.shape if global_shape is None else global_shape, np.int64)
    off = np.asarray(index_offset, np.int64)
    origin = np.asarray(origin, np.float64)
    nx, ny, nz = (s - 1 for s in v.shape)
    known = np.isfinite(v)
    inside = known & (v > level)
    cin = {tuple(c): inside[c[0]:c[0] + nx, c[1]:c[1] + ny, c[2]:c[2] + nz] for c in _CORNERS}
    ck = np.ones((nx, ny, nz), bool)
    for c in _CORNERS:
        ck &= known[c[0]:c[0] + nx, c[1]:c[1] + ny, c[2]:c[2] + nz]
    # cells that are all-in or all-out cannot hold the surface
    n_in = sum(cin[tuple(c)].astype(np.uint8) for c in _CORNERS)
    cand = ck & (n_in > 0) & (n_in < 8)
    ci = np.nonzero(cand)
    if len(ci[0]) == 0:
        return _EMPTY
    cells = np.stack(ci, axis=1)  # (C, 3) local cell indices
    faces_l = []
    for t_idx, tet in enumerate(_TETS):
        case = np.zeros(len(cells), np.int64)
        for k in range(4):
            case |= cin[tuple(tet[k])][ci].astype(np.int64) << k
        for cv in np.unique(case):
            tris = _TABLE[t_idx][cv]
            if not tris:
                continue
            sel = cells[case == cv]
            for tri in tris:
                faces_l.append(np.stack([_edge_keys(sel, tet[i], tet[j], off, gshape) for i, j in tri], axis=1))
    faces_k = np.concatenate(faces_l, axis=0)  # (F, 3) keys
    keys, inv = np.unique(faces_k.reshape(-1), return_inverse=True)
    faces = inv.reshape(-1, 3).astype(np.int64)
    verts, ends = _key_positions(keys, v, level, off, gshape, origin, spacing)
    return keys, verts, faces, ends


def _edge_keys(cells, ca, cb, off, gshape):
    p = cells + ca + off
    code = int((cb - ca) @ np.array([1, 2, 4]))
    return ((p[:, 0] * gshape[1] + p[:, 1]) * gshape[2] + p[:, 2]) * 8 + code


_DELTAS = np.array([[c & 1, c >> 1 & 1, c >> 2 & 1] for c in range(8)], np.int64)


def _key_positions(keys, v, level, off, gshape, origin, spacing):
    code = keys % 8
    lin = keys // 8
    p = np.stack([lin // (gshape[1] * gshape[2]), lin // gshape[2] % gshape[1], lin % gshape[2]], axis=1)
    q = p + _DELTAS[code]
    pl, ql = p - off, q - off
    va = v[pl[:, 0], pl[:, 1], pl[:, 2]]
    vb = v[ql[:, 0], ql[:, 1], ql[:, 2]]
    den = vb - va
    t = np.where(np.abs(den) > 1e-30, (level - va) / np.where(np.abs(den) > 1e-30, den, 1.0), 0.5)
    t = np.clip(t, 0.0, 1.0)
    return origin + (p + t[:, None] * (q - p)) * spacing, np.stack([va, vb], axis=1)


# --------------------------------------------------------------------------- chunked extraction
def _lattice(bmin, bmax, resolution: int):
    bmin, bmax = np.asarray(bmin, np.float64), np.asarray(bmax, np.float64)
    ext = bmax - bmin
    if np.any(ext <= 0):
        raise ValueError(f"mesh region is empty: min {bmin.tolist()} max {bmax.tolist()}.")
    if resolution < 2:
        raise ValueError(f"mesh resolution must be >= 2 lattice points, got {resolution}.")
    h = float(ext.max()) / (resolution - 1)
    shape = np.maximum(2, np.ceil(ext / h - 1e-9).astype(np.int64) + 1)
    return bmin, h, shape


def _points(origin, h, ix, iy, iz):
    """World points ``(len(ix)*len(iy)*len(iz), 3)`` of lattice index ranges (x slowest)."""
    g = np.stack(np.meshgrid(ix, iy, iz, indexing="ij"), axis=-1).reshape(-1, 3)
    return origin + g * h


def _brick_mask_for_points(active, brick, lo, hi, ny, nz):
    """Points (x in [lo, hi], all y, z) that belong to an active brick -> bool ``(hi-lo+1, ny, nz)``."""
    nb = np.array(active.shape)

    def owners(n, start=0):
        p = np.arange(start, start + n)
        return np.clip(p // brick, 0, None), np.clip((p - 1) // brick, 0, None)

    bx = owners(hi - lo + 1, lo)
    by = owners(ny)
    bz = owners(nz)
    need = np.zeros((hi - lo + 1, ny, nz), bool)
    for a in bx:
        for b in by:
            for c in bz:
                need |= active[np.ix_(np.minimum(a, nb[0] - 1), np.minimum(b, nb[1] - 1), np.minimum(c, nb[2] - 1))]
    return need


def extract_isosurface(value_fn: Callable[[np.ndarray], np.ndarray], bmin, bmax, resolution: int, level: float, *,
                       slab: int = 16, brick: int = 16, sparse: bool = True, coarse_per_brick: int = 4,
                       solid_fn: Callable[[np.ndarray], np.ndarray] | None = None, solid_value: float | None = None,
                       refine_steps: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Seamless chunked iso-surface of ``value_fn`` over the box ``[bmin, bmax]``.

    ``value_fn(points (N, 3) float64) -> (N,)``; the surface is ``value == level`` with larger
    values inside. ``resolution`` lattice points along the longest box side (cubic voxels).
    ``solid_fn(points) -> (N,) bool`` marks points forced to ``solid_value`` (> level) without
    evaluating ``value_fn``. ``refine_steps`` > 0 bisects each vertex's lattice edge that many times with
    real evaluations (then interpolates in the last bracket), removing the bias of linear interpolation
    across a sharp density step; vertices are refined once, after merging, so chunks stay seamless.
    Returns (vertices ``(V, 3)`` float32, faces ``(F, 3)`` int64, info).
    """
    t0 = time.perf_counter()
    origin, h, shape = _lattice(bmin, bmax, resolution)
    nx, ny, nz = (int(s) for s in shape)
    if solid_value is None:
        solid_value = level + 1.0
    n_eval = 0

    def evaluate(pts):
        nonlocal n_eval
        out = np.empty(len(pts), np.float64)
        if solid_fn is not None:
            solid = np.asarray(solid_fn(pts), bool)
        else:
            solid = np.zeros(len(pts), bool)
        out[solid] = solid_value
        if (~solid).any():
            out[~solid] = np.asarray(value_fn(pts[~solid]), np.float64).reshape(-1)
            n_eval += int((~solid).sum())
        return out

    brick = max(1, int(brick))
    active = None
    if sparse:
        step = max(1, brick // max(1, coarse_per_brick))
        cx, cy, cz = (np.unique(np.append(np.arange(0, n, step), n - 1)) for n in (nx, ny, nz))
        coarse = np.empty((len(cx), len(cy), len(cz)), np.float64)
        for i in range(len(cx)):
            coarse[i] = evaluate(_points(origin, h, cx[i:i + 1], cy, cz)).reshape(len(cy), len(cz))
        cin = coarse > level
        nb = [max(1, math.ceil((n - 1) / brick)) for n in (nx, ny, nz)]
        any_in = np.zeros(nb, bool)
        any_out = np.zeros(nb, bool)
        # a coarse sample on a brick border belongs to the bricks on both sides
        lower = [np.minimum(np.maximum(c - 1, 0) // brick, b - 1) for c, b in zip((cx, cy, cz), nb)]
        upper = [np.minimum(c // brick, b - 1) for c, b in zip((cx, cy, cz), nb)]
        for sx in (lower, upper):
            for sy in (lower, upper):
                for sz in (lower, upper):
                    ix = np.ix_(sx[0], sy[1], sz[2])
                    idx = tuple(np.broadcast_arrays(*ix))
                    np.logical_or.at(any_in, idx, cin)
                    np.logical_or.at(any_out, idx, ~cin)
        active = ndimage.binary_dilation(any_in & any_out, structure=np.ones((3, 3, 3), bool))

    keys_all, verts_all, faces_all, ends_all = [], [], [], []
    n_verts = 0
    prev_layer = None  # values of the last x-layer of the previous slab, (ny, nz)
    slab = max(1, int(slab))
    starts = list(range(0, nx - 1, slab))
    for x0 in tqdm(starts, desc="marching tetrahedra", unit="slab", disable=not progress or None, leave=False):
        x1 = min(x0 + slab, nx - 1)
        vals = np.full((x1 - x0 + 1, ny, nz), np.nan)
        if active is not None:
            need = _brick_mask_for_points(active, brick, x0, x1, ny, nz)
        else:
            need = np.ones(vals.shape, bool)
        if prev_layer is not None:
            have = np.isfinite(prev_layer)
            vals[0][have] = prev_layer[have]
            need[0] &= ~have
        for i in range(vals.shape[0]):  # one lattice layer at a time keeps the temporaries small
            if need[i].any():
                jk = np.argwhere(need[i])
                pts = origin + np.column_stack([np.full(len(jk), x0 + i), jk]) * h
                vals[i, jk[:, 0], jk[:, 1]] = evaluate(pts)
        # unknown points in the first layer that the previous slab never needed stay NaN for this slab's
        # cells only when this slab does not need them either, so no cell sees two different values
        prev_layer = vals[-1].copy()
        keys, verts, faces, ends = marching_tetrahedra(vals, level, origin=origin, spacing=h,
                                                       index_offset=(x0, 0, 0), global_shape=shape)
        if len(faces):
            keys_all.append(keys)
            verts_all.append(verts)
            ends_all.append(ends)
            faces_all.append(faces + n_verts)
            n_verts += len(verts)
    info = {"lattice_shape": [nx, ny, nz], "spacing": h, "origin": origin.tolist(), "evaluated_points": n_eval,
            "dense_points": nx * ny * nz, "level": float(level)}
    if not faces_all:
        info["seconds"] = time.perf_counter() - t0
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), info
    keys = np.concatenate(keys_all)
    verts = np.concatenate(verts_all)
    faces = np.concatenate(faces_all)
    ends = np.concatenate(ends_all)
    del keys_all, verts_all, faces_all, ends_all  # free the per-slab pieces before the merge
    ukeys, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    verts = verts[first]
    faces = inv[faces]
    if refine_steps > 0:
        verts = _refine_on_edges(ukeys, ends[first], evaluate, level, origin, h, shape, refine_steps)
    del ends
    info["refine_steps"] = int(refine_steps)
    # drop degenerate triangles (a vertex exactly on a lattice point shared by two edges)
    area2 = np.concatenate([np.linalg.norm(_face_cross(verts, faces[s:s + _FACE_BLOCK]), axis=1)
                            for s in range(0, len(faces), _FACE_BLOCK)])
    faces = faces[area2 > (1e-9 * h) ** 2]
    info["seconds"] = time.perf_counter() - t0
    return verts.astype(np.float32), faces.astype(np.int64), info


def _refine_on_edges(keys, ends, evaluate, level, origin, h, gshape, steps):
    """Bisection of the level crossing on each vertex's lattice edge -> vertices ``(V, 3)`` float64."""
    gshape = np.asarray(gshape, np.int64)
    code, lin = keys % 8, keys // 8
    p = np.stack([lin // (gshape[1] * gshape[2]), lin // gshape[2] % gshape[1], lin % gshape[2]], axis=1)
    pa = origin + p * h
    pb = origin + (p + _DELTAS[code]) * h
    fa, fb = ends[:, 0].copy(), ends[:, 1].copy()
    ta, tb = np.zeros(len(keys)), np.ones(len(keys))
    a_in = fa > level
    for _ in range(int(steps)):
        tm = 0.5 * (ta + tb)
        fm = evaluate(pa + tm[:, None] * (pb - pa))
        like_a = (fm > level) == a_in
        ta, fa = np.where(like_a, tm, ta), np.where(like_a, fm, fa)
        tb, fb = np.where(like_a, tb, tm), np.where(like_a, fb, fm)
    den = fb - fa
    ok = np.abs(den) > 1e-30
    frac = np.clip(np.where(ok, (level - fa) / np.where(ok, den, 1.0), 0.5), 0.0, 1.0)
    t = ta + frac * (tb - ta)
    return pa + t[:, None] * (pb - pa)


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


# --------------------------------------------------------------------------- clean-up
def remove_small_components(vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.01):
    """Keep connected components with at least ``min_fraction`` of all faces (the largest always stays).

    Returns (vertices ``(V', 3)``, faces ``(F', 3)``, kept ``(V,)`` bool mask of the input vertices — index
    per-vertex attributes with it —, number of removed components). Unused vertices are dropped.
    """
    nv = len(vertices)
    if len(faces) == 0 or min_fraction <= 0:
        return vertices, faces, np.ones(nv, bool), 0
    # two edges per triangle already connect its three vertices
    i = np.concatenate([faces[:, 0], faces[:, 1]])
    j = np.concatenate([faces[:, 1], faces[:, 2]])
    adj = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(nv, nv))
    n, labels = connected_components(adj, directed=False)
    flab = labels[faces[:, 0]]
    counts = np.bincount(flab, minlength=n)
    keep_lab = counts >= min_fraction * len(faces)
    keep_lab[np.argmax(counts)] = True
    n_removed = int(np.sum((counts > 0) & ~keep_lab))
    faces = faces[keep_lab[flab]]
    used = np.zeros(nv, bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces], used, n_removed


_FACE_BLOCK = 1 << 18  # faces per block in face-wise loops (bounds the temporaries)


def _face_cross(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``(p1 - p0) x (p2 - p0)`` ``(F, 3)`` float64 of faces ``f`` ``(F, 3)`` over vertices ``v``."""
    p0 = v[f[:, 0]].astype(np.float64)
    return np.cross(v[f[:, 1]] - p0, v[f[:, 2]] - p0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)`` following the face winding."""
    v = np.asarray(vertices, np.float64)
    n = np.zeros_like(v)
    for s in range(0, len(faces), _FACE_BLOCK):
        f = faces[s:s + _FACE_BLOCK]
        fn = _face_cross(v, f)
        for k in range(3):
            n[:, 0] += np.bincount(f[:, k], weights=fn[:, 0], minlength=len(v))
            n[:, 1] += np.bincount(f[:, k], weights=fn[:, 1], minlength=len(v))
            n[:, 2] += np.bincount(f[:, k], weights=fn[:, 2], minlength=len(v))
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)).astype(np.float32)


def decimate(mesh: Mesh, target_faces: int) -> tuple[Mesh, str]:
    """Quadric decimation to about ``target_faces`` (needs the optional ``fast_simplification`` package).

    Returns (mesh, message); without the package the mesh is returned unchanged with a message
    saying so. Colours are dropped (the caller re-samples them at the new vertices).
    """
    if target_faces <= 0 or len(mesh.faces) <= target_faces:
        return mesh, "decimation not needed"
    try:
        import fast_simplification  # noqa: F401
    except ImportError:
        msg = "decimation skipped: install the optional package fast_simplification (pip install fast-simplification)"
        log.warning(msg)
        return mesh, msg
    tm = mesh.to_trimesh().simplify_quadric_decimation(face_count=int(target_faces))
    out = Mesh(np.asarray(tm.vertices, np.float32), np.asarray(tm.faces, np.int64), info=dict(mesh.info))
    return out, f"decimated {len(mesh.faces)} -> {len(out.faces)} faces"


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


# --------------------------------------------------------------------------- export
def export_mesh(mesh: Mesh, out_dir, stem: str = "mesh", formats: Sequence[str] = ("glb", "ply", "obj")) -> list:
    """Write ``<out_dir>/<stem>.<fmt>`` for each format via :func:`immersivedepth.io.write_mesh` (atomic)."""
    from pathlib import Path

    from immersivedepth.io import write_mesh

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        fmt = fmt.lower().lstrip(".")
        if fmt not in ("glb", "ply", "obj"):
            raise ValueError(f"mesh export format {fmt!r} unsupported; use glb, ply or obj.")
        p = out_dir / f"{stem}.{fmt}"
        write_mesh(p, mesh.vertices, mesh.faces, vertex_colors=mesh.colors, vertex_normals=mesh.normals)
        paths.append(p)
    return paths


def export_textured_mesh(mesh: Mesh, texture: np.ndarray, out_dir, stem: str = "depth_mesh") -> list:
    """Textured export of a mesh with ``mesh.uv``: ``<stem>_textured.obj`` + ``.mtl`` + ``<stem>_texture.png``
    and ``<stem>_textured.glb`` (texture embedded). ``texture`` ``(H, W, 3)`` float in [0, 1] or uint8.
    Every file is written atomically."""
    from pathlib import Path

    import trimesh
    from PIL import Image

    from immersivedepth.io import atomic_path

    if mesh.uv is None:
        raise ValueError("export_textured_mesh: the mesh has no texture coordinates (mesh.uv).")
    tex = np.asarray(texture)
    if tex.ndim != 3 or tex.shape[2] < 3:
        raise ValueError(f"export_textured_mesh: texture must be (H, W, 3), got {tex.shape}.")
    if tex.dtype != np.uint8:
        tex = (np.clip(tex[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # white diffuse so viewers that multiply Kd by the texture show the panorama's own colours
    mat = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(tex[..., :3]), name=f"{stem}_texture",
                                                 diffuse=(255, 255, 255, 255), ambient=(255, 255, 255, 255),
                                                 specular=(0, 0, 0, 255))
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=mesh.normals, process=False, validate=False,
                         visual=trimesh.visual.TextureVisuals(uv=mesh.uv, material=mat))
    obj_text, files = trimesh.exchange.obj.export_obj(tm, include_normals=mesh.normals is not None,
                                                      include_texture=True, return_texture=True,
                                                      mtl_name=f"{stem}_textured.mtl")
    written = []
    for name, data in files.items():
        with atomic_path(out_dir / name) as tmp:
            Path(tmp).write_bytes(data)
        written.append(out_dir / name)
    with atomic_path(out_dir / f"{stem}_textured.obj") as tmp:
        Path(tmp).write_text(obj_text)
    written.append(out_dir / f"{stem}_textured.obj")
    glb = trimesh.exchange.gltf.export_glb(trimesh.Scene(tm), include_normals=mesh.normals is not None)
    with atomic_path(out_dir / f"{stem}_textured.glb") as tmp:
        Path(tmp).write_bytes(glb)
    written.append(out_dir / f"{stem}_textured.glb")
    return written
