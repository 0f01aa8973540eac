"""Mesh and point cloud straight from the distance panorama (no training; seconds).

The ERP grid is a sphere grid: vertex ``(v, u)`` sits at ``D(v, u) * dir(v, u)``. Neighbouring
pixels form quads (the seam column wraps to column 0), split along the shorter diagonal, and the
two poles are closed by fans to a pole vertex at the median distance of the first / last row.
A triangle is cut when

* any corner is invalid (distance <= 0 or non-finite),
* it spans a depth discontinuity: ``max(D) / min(D) > 1 + max_depth_ratio`` over its corners, or
* it is seen at a grazing angle: ``|cos(angle between its normal and the ray to its centroid)| <
  cos(max_grazing_deg)`` — the stretched "rubber sheet" triangles between foreground and background.

Faces are wound so normals point toward the panorama centre (from the surface into the free space
the camera saw; the floor's normal is +y). ``stride`` subsamples the grid (distance at block
centres, colour averaged over the block). The seam column is duplicated (same point) and every pole
fan triangle has its own pole vertex, so the mesh carries texture coordinates into the panorama itself
(``mesh.uv``): :func:`export_textured` writes an OBJ + MTL + PNG (and a textured GLB) that any viewer shows
at the panorama's full resolution, whatever the mesh's stride.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from immersivedepth import sphere
from immersivedepth.depth.outputs import depth_point_cloud
from immersivedepth.render.mesh import Mesh, remove_small_components, vertex_normals

__all__ = ["DepthMeshOptions", "depth_mesh", "point_cloud"]


@dataclass
class DepthMeshOptions:
    """Options of :func:`depth_mesh` (``render.export.depth_mesh`` in the config)."""

    stride: int = 1
    max_depth_ratio: float = 0.1
    max_grazing_deg: float = 85.0
    close_poles: bool = True
    min_component_fraction: float = 0.0

    @classmethod
    def from_mapping(cls, m) -> DepthMeshOptions:
        known = set(cls.__dataclass_fields__)
        extra = set(m) - known - {"enabled"}
        if extra:
            raise ValueError(f"render.export.depth_mesh: unknown option(s) {sorted(extra)}; known: {sorted(known)}.")
        return cls(**{k: v for k, v in m.items() if k in known})


def _check_inputs(rgb, distance):
    d = np.asarray(distance, np.float64)
    if d.ndim != 2:
        raise ValueError(f"distance must be an (H, W) map, got shape {d.shape}.")
    if rgb is not None:
        c = np.asarray(rgb)
        if c.shape[:2] != d.shape or c.ndim != 3 or c.shape[2] < 3:
            raise ValueError(f"rgb must be (H, W, 3) matching distance {d.shape}, got {c.shape}.")
        c = c[..., :3].astype(np.float32)
        if c.max(initial=0) > 1.0 + 1e-6:
            c = c / 255.0
    else:
        c = None
    return c, d


def _subsample(rgb, d, stride: int):
    if stride == 1:
        return rgb, d
    h, w = d.shape
    if h % stride or w % stride:
        raise ValueError(f"depth mesh stride {stride} must divide the panorama size {h}x{w}.")
    dd = d[stride // 2::stride, stride // 2::stride]
    if rgb is not None:
        rgb = rgb.reshape(h // stride, stride, w // stride, stride, 3).mean(axis=(1, 3))
    return rgb, dd


def depth_mesh(rgb: np.ndarray | None, distance: np.ndarray, options: DepthMeshOptions | None = None) -> Mesh:
    """Triangulate a distance panorama ``(H, W)`` (world units) with colours from ``rgb`` ``(H, W, 3)`` in [0, 1].

    Returns a :class:`Mesh` (vertex colours if ``rgb`` given, vertex normals toward the centre);
    ``mesh.info["pixel_index"]`` ``(V,)`` is each vertex's flat index in the (strided) grid, -1 for a pole.
    """
    o = options or DepthMeshOptions()
    if o.stride < 1 or o.max_depth_ratio <= 0 or not 0 < o.max_grazing_deg <= 90:
        raise ValueError(f"depth mesh options out of range: stride >= 1, max_depth_ratio > 0, "
                         f"0 < max_grazing_deg <= 90; got {o}.")
    rgb, d = _check_inputs(rgb, distance)
    rgb, d = _subsample(rgb, d, int(o.stride))
    h, w = d.shape
    dirs = sphere.erp_directions(h, w, np.float64)
    valid = np.isfinite(d) & (d > 0)
    dz = np.where(valid, d, 0.0)
    # grid vertices (h, w + 1): column w repeats column 0 (same point) so texture coordinates never wrap
    gpix = (np.arange(h)[:, None] * w + np.arange(w + 1)[None, :] % w).reshape(-1)
    pts = (dirs * dz[..., None]).reshape(-1, 3)
    verts = pts[gpix]
    vvalid = valid.reshape(-1)[gpix]
    dist_v = dz.reshape(-1)[gpix]
    colors = None if rgb is None else rgb.reshape(-1, 3).astype(np.float32)[gpix]
    rows, cols = np.divmod(np.arange(h * (w + 1)), w + 1)
    uv = np.stack([(cols + 0.5) / w, 1.0 - (rows + 0.5) / h], axis=1)
    pixel = gpix.copy()
    idx = np.arange(h * (w + 1)).reshape(h, w + 1)
    a, b, c, e = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    # quad a b / c e (a top-left, b top-right, c bottom-left, e bottom-right); split on the shorter diagonal
    diag_ae = np.linalg.norm(verts[a] - verts[e], axis=-1)
    diag_bc = np.linalg.norm(verts[b] - verts[c], axis=-1)
    use_ae = (diag_ae <= diag_bc).reshape(-1)
    a, b, c, e = (x.reshape(-1) for x in (a, b, c, e))
    t1 = np.where(use_ae[:, None], np.stack([a, c, e], 1), np.stack([a, c, b], 1))
    t2 = np.where(use_ae[:, None], np.stack([a, e, b], 1), np.stack([b, c, e], 1))
    faces = np.concatenate([t1, t2], axis=0)
    extra = {"v": [], "c": [], "d": [], "uv": []}
    if o.close_poles:
        for row, sign in ((0, 1.0), (h - 1, -1.0)):
            ok = valid[row]
            if ok.sum() < 3:
                continue
            r = float(np.median(d[row][ok]))
            # one pole vertex per fan triangle, so each keeps its own texture coordinate
            first = len(verts) + sum(len(x) for x in extra["v"])
            poles = first + np.arange(w)
            extra["v"].append(np.tile([0.0, sign * r, 0.0], (w, 1)))
            extra["d"].append(np.full(w, r))
            extra["uv"].append(np.stack([(np.arange(w) + 1.0) / w, np.full(w, 1.0 if sign > 0 else 0.0)], 1))
            if colors is not None:
                extra["c"].append(np.tile(rgb[row][ok].mean(0), (w, 1)))
            ring = idx[row]
            fan = np.stack([poles, ring[:-1], ring[1:]], 1)
            faces = np.concatenate([faces, fan], axis=0)
    if extra["v"]:
        n_extra = sum(len(x) for x in extra["v"])
        verts = np.concatenate([verts, *extra["v"]], axis=0)
        vvalid = np.concatenate([vvalid, np.ones(n_extra, bool)])
        dist_v = np.concatenate([dist_v, *extra["d"]])
        uv = np.concatenate([uv, *extra["uv"]], axis=0)
        pixel = np.concatenate([pixel, np.full(n_extra, -1)])
        if colors is not None:
            colors = np.concatenate([colors, *[x.astype(np.float32) for x in extra["c"]]], axis=0)
    # orientation: normals toward the centre, i.e. opposite to the ray through the centroid
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    cen = tri.mean(axis=1)
    flip = np.einsum("ij,ij->i", n, cen) > 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    n[flip] *= -1
    # cuts
    keep = vvalid[faces].all(axis=1)
    df = dist_v[faces]
    keep &= df.max(axis=1) <= (1.0 + o.max_depth_ratio) * np.maximum(df.min(axis=1), 1e-12)
    nn = np.linalg.norm(n, axis=1)
    cn = np.linalg.norm(cen, axis=1)
    cosang = np.abs(np.einsum("ij,ij->i", n, cen)) / np.maximum(nn * cn, 1e-20)
    keep &= (nn > 0) & (cosang >= math.cos(math.radians(o.max_grazing_deg)))
    faces = faces[keep]
    used = np.zeros(len(verts), bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    verts, pixel, uv = verts[used], pixel[used], uv[used]
    colors = None if colors is None else colors[used]
    faces = remap[faces]
    if o.min_component_fraction > 0:
        verts, faces, kept, _ = remove_small_components(verts, faces, o.min_component_fraction)
        colors, pixel, uv = (None if colors is None else colors[kept]), pixel[kept], uv[kept]
    if len(faces) == 0:
        raise ValueError("depth mesh is empty: every triangle was cut (invalid distances, or max_depth_ratio / "
                         "max_grazing_deg too strict).")
    mesh = Mesh(verts.astype(np.float32), faces.astype(np.int64), colors=colors, uv=uv.astype(np.float32))
    normals = vertex_normals(mesh.vertices, mesh.faces).astype(np.float64)
    # the seam column's two copies share one normal
    g = pixel >= 0
    acc = np.zeros((h * w, 3))
    np.add.at(acc, pixel[g], normals[g])
    normals[g] = acc[pixel[g]]
    mesh.normals = (normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)).astype(np.float32)
    mesh.info = {"grid": [h, w], "faces": int(len(faces)), "cut_faces": int((~keep).sum()), "pixel_index": pixel}
    return mesh


def point_cloud(rgb: np.ndarray | None, distance: np.ndarray, normals: np.ndarray | None = None, *, stride: int = 1):
    """Coloured point cloud of a distance panorama: points ``(N, 3)``, colours ``(N, 3)`` or None,
    normals ``(N, 3)`` or None (``normals`` ``(H, W, 3)`` world-frame, subsampled with the grid).

    Checks the inputs (8-bit colours are scaled to [0, 1]) and calls the one implementation,
    :func:`immersivedepth.depth.outputs.depth_point_cloud`."""
    rgb, d = _check_inputs(rgb, distance)
    if normals is not None:
        normals = np.asarray(normals, np.float32)
        if normals.shape != d.shape + (3,):
            raise ValueError(f"normals must be (H, W, 3) matching distance {d.shape}, got {normals.shape}.")
    return depth_point_cloud(rgb, d, normals, point_stride=stride)
