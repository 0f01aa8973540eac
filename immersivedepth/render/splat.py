"""Gaussian-splat export of a distance panorama: one flat oriented Gaussian per (strided) pixel.

Every kept sample of the strided grid becomes a 3D Gaussian in the standard 3D Gaussian Splatting PLY layout
(Kerbl et al. 2023; what SuperSplat, gsplat-based viewers and Gradio's ``Model3D`` read)::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

all float32, with ``f_dc`` the degree-0 spherical-harmonic colour ``(rgb - 0.5) / C0``, ``opacity`` as a logit,
``scale_*`` as natural logs of standard deviations and ``rot`` a unit quaternion ``(w, x, y, z)``. The
covariance is ``R diag(exp(scale))^2 R^T``; ``R``'s columns are the two in-plane axes and the normal, so
``scale_2`` is the (thin) extent along the surface normal.

Geometry, in the project's world frame (y up, world units, origin at the panorama centre):

* centre: ``D * dir(lon, lat)`` of the centre pixel ``(s // 2, s // 2)`` of each ``stride x stride`` block;
* normal: :func:`immersivedepth.depth.normals.normals_from_distance` of the strided map (toward the centre),
  also written to ``nx ny nz``;
* in-plane shape: the pixel's footprint on the tangent plane. An angular step ``delta`` along the unit
  east / north vectors ``e`` of the ray ``r`` hits the plane ``n . p = D n . r`` at
  ``D (e - (n . e) / (n . r) r) delta`` (first order), so the footprint is spanned by
  ``a = D cos(lat) dlon (e_lon - ...)`` and ``b = D dlat (e_lat - ...)``; the Gaussian's in-plane
  covariance is ``sigma_per_footprint^2 (a a^T + b b^T)`` (0.5: its 1-sigma ellipse reaches the pixel's edges);
* cuts, like the depth mesh: invalid distance; samples that have no continuous neighbour (distance ratio
  within ``1 + max_depth_ratio``) along the row or along the column (the mesh would give them no triangle,
  e.g. flying pixels on an object's silhouette); surfaces seen more obliquely than ``max_grazing_deg`` (their
  footprint would stretch toward the background like the mesh's rubber-sheet triangles).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement
from scipy.spatial.transform import Rotation

from immersivedepth import io, sphere
from immersivedepth.config import positive, require
from immersivedepth.depth.normals import normals_from_distance
from immersivedepth.errors import InputError

__all__ = ["SH_C0", "SPLAT_PROPERTIES", "SplatOptions", "Splats", "splats_from_distance", "write_splat_ply",
           "export_splat"]

#: Degree-0 real spherical harmonic, 1 / (2 sqrt(pi)): ``colour = 0.5 + SH_C0 * f_dc``.
SH_C0 = 0.28209479177387814

#: Vertex properties of the standard 3DGS PLY (degree-0 colour only, so no ``f_rest_*``), in file order.
SPLAT_PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


@dataclass
class SplatOptions:
    """Options of :func:`splats_from_distance` (``render.export.splat`` in the config, see ``render/config.py``)."""

    stride: int = 2  # one Gaussian per stride x stride block (a smaller divisor if it does not divide the size)
    max_depth_ratio: float = 0.1  # cut: a sample needs a neighbour within this distance ratio along row and column
    max_grazing_deg: float = 85.0  # cut: surfaces seen more obliquely than this
    sigma_per_footprint: float = 0.5  # in-plane standard deviation as a fraction of the pixel's footprint
    thickness: float = 0.02  # extent along the normal as a fraction of the smaller in-plane extent (flat Gaussians)
    opacity: float = 0.95  # every Gaussian's opacity (written as a logit)

    def __post_init__(self):
        key = "render.export.splat"
        positive(self.stride, f"{key}.stride")
        positive(self.max_depth_ratio, f"{key}.max_depth_ratio")
        require(0 < self.max_grazing_deg < 90, f"{key}.max_grazing_deg", f"must be in (0, 90), got "
                f"{self.max_grazing_deg}")
        positive(self.sigma_per_footprint, f"{key}.sigma_per_footprint")
        positive(self.thickness, f"{key}.thickness")
        require(0 < self.opacity < 1, f"{key}.opacity", f"must be in (0, 1) (it is stored as a logit), got "
                f"{self.opacity}")


@dataclass
class Splats:
    """Gaussians as arrays: ``means`` ``(N, 3)``, ``normals`` ``(N, 3)`` (unit, toward the centre), ``colors``
    ``(N, 3)`` in [0, 1], ``opacity`` ``(N,)`` in (0, 1), ``scales`` ``(N, 3)`` standard deviations (world
    units), ``quats`` ``(N, 4)`` unit ``(w, x, y, z)``, ``pixel`` ``(N, 2)`` int ``(row, col)`` in the strided
    grid, ``grid`` ``(h, w)`` of that grid."""

    means: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    opacity: np.ndarray
    scales: np.ndarray
    quats: np.ndarray
    pixel: np.ndarray
    grid: tuple[int, int]

    def __len__(self) -> int:
        return len(self.means)


def _dividing_stride(stride: int, height: int, width: int) -> int:
    """``stride``, or the largest smaller one that divides both sizes (with a warning): a panorama resampled to 2:1
    may have an odd height, and the splat must not fail the whole render stage for it."""
    s = next(k for k in range(stride, 0, -1) if height % k == 0 and width % k == 0)
    if s != stride:
        warnings.warn(f"render.export.splat.stride={stride} does not divide the panorama size {width}x{height}; "
                      f"using stride {s} (set a divisor of both to silence this)", stacklevel=3)
    return s


def _block_mean(rgb: np.ndarray, stride: int) -> np.ndarray:
    """``(H, W, 3)`` -> ``(H/s, W/s, 3)`` block average (colour of the whole footprint, not one pixel)."""
    h, w = rgb.shape[:2]
    return rgb.reshape(h // stride, stride, w // stride, stride, 3).mean(axis=(1, 3))


def _continuous(d: np.ndarray, other: np.ndarray, ok: np.ndarray, ok_other: np.ndarray, ratio: float) -> np.ndarray:
    """Whether each sample and its neighbour are both valid and within ``1 + ratio`` of each other."""
    hi = np.maximum(d, other)
    lo = np.maximum(np.minimum(d, other), 1e-30)
    return ok & ok_other & (hi <= (1.0 + ratio) * lo)


def _kept_by_discontinuity(d: np.ndarray, ok: np.ndarray, ratio: float) -> np.ndarray:
    """``(h, w)`` bool: a continuous neighbour exists along the row (wrapping the seam) and along the column
    (the pole rows only have one vertical neighbour)."""
    left = _continuous(d, np.roll(d, 1, axis=1), ok, np.roll(ok, 1, axis=1), ratio)
    right = _continuous(d, np.roll(d, -1, axis=1), ok, np.roll(ok, -1, axis=1), ratio)
    up = np.zeros_like(ok)
    down = np.zeros_like(ok)
    up[1:] = _continuous(d[1:], d[:-1], ok[1:], ok[:-1], ratio)
    down[:-1] = _continuous(d[:-1], d[1:], ok[:-1], ok[1:], ratio)
    return (left | right) & (up | down)


def _plane_footprint(r: np.ndarray, n: np.ndarray, t: np.ndarray, n_dot_r: np.ndarray) -> np.ndarray:
    """First-order image on the plane (normal ``n``) of a unit angular step along ``t`` from the ray ``r``,
    per unit distance: ``t - (n . t) / (n . r) r``; all ``(N, 3)``."""
    return t - (np.einsum("ij,ij->i", n, t) / n_dot_r)[:, None] * r


def splats_from_distance(rgb: np.ndarray | None, distance: np.ndarray, options: SplatOptions | None = None) -> Splats:
    """Flat oriented Gaussians of a distance panorama ``(H, W)`` (world units), coloured by ``rgb`` ``(H, W, 3)``
    in [0, 1] (None: mid grey). See the module docstring for the geometry."""
    o = options or SplatOptions()
    d_full = np.asarray(distance, np.float64)
    if d_full.ndim != 2:
        raise ValueError(f"distance must be an (H, W) map, got shape {d_full.shape}")
    H, W = d_full.shape
    s = _dividing_stride(int(o.stride), H, W)
    d = d_full[s // 2::s, s // 2::s]
    h, w = d.shape
    ok = np.isfinite(d) & (d > 0)
    d = np.where(ok, d, 0.0)
    if rgb is None:
        colors = np.full((h, w, 3), 0.5)
    else:
        c = np.asarray(rgb, np.float64)
        if c.shape != (H, W, 3):
            raise ValueError(f"rgb must be (H, W, 3) matching distance {d_full.shape}, got {c.shape}")
        colors = _block_mean(c, s)
    normals = normals_from_distance(d).astype(np.float64)
    # each sample sits on its own pixel's ray (the block's centre pixel), not on the coarse grid's block centre
    # (half a full-resolution pixel away for an even stride): the centres lie exactly on the distance map's surface
    lon, lat = (g[s // 2::s, s // 2::s] for g in sphere.erp_lonlat_grid(H, W, np.float64))
    rays = sphere.erp_directions(H, W, np.float64)[s // 2::s, s // 2::s]
    n_dot_r = np.einsum("hwk,hwk->hw", normals, rays)
    keep = ok & (np.linalg.norm(normals, axis=-1) > 0.5)
    keep &= _kept_by_discontinuity(d, ok, float(o.max_depth_ratio))
    keep &= np.abs(n_dot_r) >= math.cos(math.radians(float(o.max_grazing_deg)))
    rows, cols = np.nonzero(keep)
    r, n, dist, la, lo = rays[keep], normals[keep], d[keep], lat[keep], lon[keep]
    ndr = n_dot_r[keep]
    # unit east / north vectors: d dir / d lon / cos(lat) and d dir / d lat
    east = np.stack([np.cos(lo), np.zeros_like(lo), np.sin(lo)], axis=1)
    north = np.stack([-np.sin(la) * np.sin(lo), np.cos(la), np.sin(la) * np.cos(lo)], axis=1)
    dlon, dlat = 2.0 * math.pi / w, math.pi / h
    a = (dist * np.cos(la) * dlon)[:, None] * _plane_footprint(r, n, east, ndr)
    b = (dist * dlat)[:, None] * _plane_footprint(r, n, north, ndr)
    # in-plane covariance a a^T + b b^T in the basis (u, v) of the plane, then its principal axes
    u = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)
    v = np.cross(n, u)
    bu, bv = np.einsum("ij,ij->i", b, u), np.einsum("ij,ij->i", b, v)
    au = np.einsum("ij,ij->i", a, u)
    m2 = np.empty((len(a), 2, 2))
    m2[:, 0, 0] = au**2 + bu**2
    m2[:, 0, 1] = m2[:, 1, 0] = bu * bv
    m2[:, 1, 1] = bv**2
    evals, evecs = np.linalg.eigh(m2)  # ascending
    major = evecs[:, 0, 1, None] * u + evecs[:, 1, 1, None] * v
    minor = np.cross(n, major)  # (major, minor, n) is right-handed
    sig_major = float(o.sigma_per_footprint) * np.sqrt(np.maximum(evals[:, 1], 0.0))
    sig_minor = float(o.sigma_per_footprint) * np.sqrt(np.maximum(evals[:, 0], 0.0))
    sig_minor = np.maximum(sig_minor, 1e-6 * sig_major)  # near-degenerate footprints keep a finite log-scale
    scales = np.stack([sig_major, sig_minor, float(o.thickness) * sig_minor], axis=1)
    rot = np.stack([major, minor, n], axis=2)  # columns = the axes of scale_0, scale_1, scale_2
    xyzw = Rotation.from_matrix(rot).as_quat()
    quats = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    return Splats(
        means=(r * dist[:, None]).astype(np.float32),
        normals=n.astype(np.float32),
        colors=np.clip(colors[keep], 0.0, 1.0).astype(np.float32),
        opacity=np.full(len(r), float(o.opacity), np.float32),
        scales=scales.astype(np.float32),
        quats=quats.astype(np.float32),
        pixel=np.stack([rows, cols], axis=1),
        grid=(h, w),
    )


def write_splat_ply(path, splats: Splats) -> Path:
    """Write ``splats`` as a binary little-endian 3DGS PLY (:data:`SPLAT_PROPERTIES`), atomically."""
    path = Path(path)
    columns = {
        "x": splats.means[:, 0], "y": splats.means[:, 1], "z": splats.means[:, 2],
        "nx": splats.normals[:, 0], "ny": splats.normals[:, 1], "nz": splats.normals[:, 2],
        **{f"f_dc_{i}": (splats.colors[:, i] - 0.5) / SH_C0 for i in range(3)},
        "opacity": np.log(splats.opacity) - np.log1p(-splats.opacity),
        **{f"scale_{i}": np.log(splats.scales[:, i]) for i in range(3)},
        **{f"rot_{i}": splats.quats[:, i] for i in range(4)},
    }
    vertex = np.empty(len(splats), dtype=[(name, "<f4") for name in SPLAT_PROPERTIES])
    for name in SPLAT_PROPERTIES:
        vertex[name] = columns[name]
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    with io.atomic_path(path) as tmp:
        ply.write(str(tmp))
    return path


def export_splat(path, rgb: np.ndarray | None, distance: np.ndarray, options: SplatOptions | None = None) -> dict:
    """:func:`splats_from_distance` + :func:`write_splat_ply` -> ``{"splat": path, "n_splats": N}``."""
    splats = splats_from_distance(rgb, distance, options)
    if len(splats) == 0:
        raise InputError("Gaussian splat is empty: no distance-map pixel survived the cuts (invalid distances, "
                         "or render.export.splat.max_depth_ratio / max_grazing_deg too strict); check the "
                         "distance map or relax those keys")
    write_splat_ply(path, splats)
    return {"splat": str(path), "n_splats": len(splats)}
