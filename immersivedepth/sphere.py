"""Spherical geometry: the one place for the project's conventions.

World frame: right-handed, y up; longitude 0 (the panorama's centre column) looks
along -z; longitude grows to the right (toward +x)::

    dir(lon, lat) = (cos(lat) sin(lon), sin(lat), -cos(lat) cos(lon))

Pixel centres of an H x W equirectangular (ERP) image::

    lon = ((u + 0.5) / W) * 2*pi - pi        lat = pi/2 - ((v + 0.5) / H) * pi

Row 0 is the top (zenith).  Perspective (tangent) cameras use OpenCV axes
(x right, y down, z forward); pixel (i, j)'s centre ray is ``R @ K^-1 [j+0.5, i+0.5, 1]``
with ``R`` the camera-to-world rotation.

Every function accepts numpy arrays or torch tensors and returns the same kind
(the "array-agnostic" functions), unless its docstring says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "pixel_to_lonlat",
    "lonlat_to_pixel",
    "lonlat_to_dir",
    "dir_to_lonlat",
    "pixel_to_dir",
    "dir_to_pixel",
    "erp_lonlat_grid",
    "erp_directions",
    "cos_lat_weights",
    "pixel_solid_angle",
    "rotation_about_axis",
    "look_at_rotation",
    "yaw_pitch_roll",
    "icosahedron",
    "subdivided_icosahedron",
    "icosahedron_face_centers",
    "TangentCamera",
    "tangent_cameras",
    "erp_sample",
    "erp_sample_dirs",
    "tangent_image_from_erp",
    "planar_depth_to_distance",
    "erp_points",
    "panorama_depth_test",
    "erp_pad",
]


# --------------------------------------------------------------------------- helpers
def _xp(x):
    """The array module of ``x``: ``torch`` for tensors, else ``numpy``."""
    return torch if isinstance(x, torch.Tensor) else np


def _stack(xs, axis=-1):
    if isinstance(xs[0], torch.Tensor):
        return torch.stack(xs, dim=axis)
    return np.stack(xs, axis=axis)


def _as_float(x):
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.float64)
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


# --------------------------------------------------------------------------- ERP <-> sphere
def pixel_to_lonlat(u, v, width: int, height: int):
    """Continuous ERP pixel coordinates -> (lon, lat) in radians.

    Integer ``u, v`` are pixel centres. ``lon`` in [-pi, pi), ``lat`` in (-pi/2, pi/2).
    """
    u, v = _as_float(u), _as_float(v)
    lon = (u + 0.5) / width * (2.0 * math.pi) - math.pi
    lat = math.pi / 2.0 - (v + 0.5) / height * math.pi
    return lon, lat


def lonlat_to_pixel(lon, lat, width: int, height: int):
    """(lon, lat) -> continuous ERP pixel coordinates (inverse of :func:`pixel_to_lonlat`).

    ``u`` is wrapped into [-0.5, W - 0.5).
    """
    lon, lat = _as_float(lon), _as_float(lat)
    u = (lon + math.pi) / (2.0 * math.pi) * width - 0.5
    u = (u + 0.5) % width - 0.5
    v = (math.pi / 2.0 - lat) / math.pi * height - 0.5
    return u, v


def lonlat_to_dir(lon, lat):
    """(lon, lat) -> unit direction ``(..., 3)`` in the world frame."""
    xp = _xp(lon)
    cl = xp.cos(lat)
    return _stack([cl * xp.sin(lon), xp.sin(lat), -cl * xp.cos(lon)])


def dir_to_lonlat(d):
    """Direction ``(..., 3)`` (need not be unit) -> (lon, lat)."""
    xp = _xp(d)
    d = _as_float(d)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    lon = xp.arctan2(x, -z)
    r = xp.sqrt(x * x + z * z)
    lat = xp.arctan2(y, r)
    return lon, lat


def pixel_to_dir(u, v, width: int, height: int):
    """ERP pixel coordinates -> unit directions ``(..., 3)``."""
    return lonlat_to_dir(*pixel_to_lonlat(u, v, width, height))


def dir_to_pixel(d, width: int, height: int):
    """Directions ``(..., 3)`` -> continuous ERP pixel coordinates ``(u, v)``."""
    return lonlat_to_pixel(*dir_to_lonlat(d), width, height)


def erp_lonlat_grid(height: int, width: int, dtype=np.float64):
    """(lon, lat), each ``(H, W)`` numpy, of the ERP pixel centres."""
    v, u = np.meshgrid(np.arange(height, dtype=dtype), np.arange(width, dtype=dtype), indexing="ij")
    return pixel_to_lonlat(u, v, width, height)


@lru_cache(maxsize=16)
def _erp_dirs_cached(height: int, width: int) -> np.ndarray:
    d = lonlat_to_dir(*erp_lonlat_grid(height, width))
    d.setflags(write=False)
    return d


def erp_directions(height: int, width: int, dtype=np.float32) -> np.ndarray:
    """Unit ray directions ``(H, W, 3)`` of the ERP pixel centres (numpy)."""
    return _erp_dirs_cached(height, width).astype(dtype)


def cos_lat_weights(height: int, width: int, dtype=np.float32) -> np.ndarray:
    """``cos(lat)`` of each pixel centre, ``(H, W)``: the usual ERP area weight."""
    _, lat = erp_lonlat_grid(height, width)
    return np.cos(lat).astype(dtype)


def pixel_solid_angle(height: int, width: int, dtype=np.float64) -> np.ndarray:
    """Exact solid angle (steradians) of every ERP pixel, ``(H, W)``; sums to 4*pi."""
    edges = math.pi / 2.0 - np.arange(height + 1) / height * math.pi
    band = (np.sin(edges[:-1]) - np.sin(edges[1:])) * (2.0 * math.pi / width)
    return np.repeat(band[:, None], width, axis=1).astype(dtype)


# --------------------------------------------------------------------------- rotations
def rotation_about_axis(axis, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix ``(3, 3)`` (right-handed, angle in radians)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def look_at_rotation(forward, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera-to-world rotation ``(3, 3)`` of an OpenCV camera (x right, y down,
    z forward) looking along ``forward`` with world ``up`` pointing up in the image.

    Columns are the camera axes in world coordinates. When ``forward`` is parallel
    to ``up`` a fallback up vector (-z, i.e. the panorama centre) is used.
    """
    f = np.asarray(forward, dtype=np.float64)
    f = f / np.linalg.norm(f)
    u = np.asarray(up, dtype=np.float64)
    right = np.cross(f, u)  # camera x (right) = forward x up; camera y (down) = forward x right
    if np.linalg.norm(right) < 1e-8:
        u = np.array([0.0, 0.0, -1.0]) if abs(f[1]) > 0.5 else np.array([0.0, 1.0, 0.0])
        right = np.cross(f, u)
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    return np.stack([right, down, f], axis=1)


def yaw_pitch_roll(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation of an OpenCV camera from angles in radians.

    ``yaw`` turns right like longitude (0 looks along -z), ``pitch`` looks up like
    latitude, ``roll`` turns the image clockwise about the viewing axis.
    """
    f = lonlat_to_dir(np.float64(yaw), np.float64(pitch))
    r = look_at_rotation(f)
    if roll:
        r = rotation_about_axis(f, roll) @ r
    return r


# --------------------------------------------------------------------------- icosahedron
def icosahedron():
    """Level-0 icosahedron: unit vertices ``(12, 3)`` and faces ``(20, 3)`` (int),
    faces wound counter-clockwise seen from outside."""
    p = (1.0 + math.sqrt(5.0)) / 2.0
    v = np.array(
        [
            [-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0],
            [0, -1, p], [0, 1, p], [0, -1, -p], [0, 1, -p],
            [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1],
        ],
        dtype=np.float64,
    )
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    f = np.array(
        [
            [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
            [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
            [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
            [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
        ],
        dtype=np.int64,
    )
    return v, f


def _midpoint(verts: list, cache: dict, a: int, b: int) -> int:
    """Index of the unit midpoint of edge (a, b), appending it to ``verts`` once."""
    key = (min(a, b), max(a, b))
    if key not in cache:
        m = np.asarray(verts[a]) + np.asarray(verts[b])
        verts.append(tuple(m / np.linalg.norm(m)))
        cache[key] = len(verts) - 1
    return cache[key]


def subdivided_icosahedron(level: int = 0):
    """Icosahedron with every face split into 4, ``level`` times; vertices on the unit sphere.

    Returns vertices ``(V, 3)`` and faces ``(20 * 4**level, 3)``.
    """
    if level < 0:
        raise ValueError(f"icosahedron subdivision level must be >= 0, got {level}")
    v, f = icosahedron()
    verts = [tuple(x) for x in v]
    for _ in range(level):
        cache: dict[tuple[int, int], int] = {}
        nf = []
        for a, b, c in f:
            ab, bc, ca = (_midpoint(verts, cache, i, j) for i, j in ((a, b), (b, c), (c, a)))
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = np.asarray(nf, dtype=np.int64)
    return np.asarray(verts, dtype=np.float64), f


def icosahedron_face_centers(level: int = 0) -> np.ndarray:
    """Unit centres ``(20 * 4**level, 3)`` of the (subdivided) icosahedron's faces."""
    v, f = subdivided_icosahedron(level)
    c = v[f].mean(axis=1)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


# --------------------------------------------------------------------------- tangent cameras
@dataclass(frozen=True)
class TangentCamera:
    """A pinhole camera at the sphere centre (OpenCV axes).

    ``R`` ``(3, 3)`` camera-to-world rotation, ``K`` ``(3, 3)`` pixel intrinsics,
    image ``height x width``.
    """

    R: np.ndarray
    K: np.ndarray
    height: int
    width: int
    index: int = 0

    @property
    def forward(self) -> np.ndarray:
        return self.R[:, 2]

    @property
    def fov_deg(self) -> tuple[float, float]:
        """(horizontal, vertical) field of view in degrees."""
        fx, fy = self.K[0, 0], self.K[1, 1]
        return (
            math.degrees(2 * math.atan(self.width / (2 * fx))),
            math.degrees(2 * math.atan(self.height / (2 * fy))),
        )

    def rays_camera(self, normalize: bool = False) -> np.ndarray:
        """Per-pixel ray directions in camera coordinates ``(H, W, 3)`` (z = 1 unless normalised)."""
        i, j = np.meshgrid(np.arange(self.height), np.arange(self.width), indexing="ij")
        pix = np.stack([j + 0.5, i + 0.5, np.ones_like(i, dtype=np.float64)], axis=-1)
        d = pix @ np.linalg.inv(self.K).T
        if normalize:
            d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        return d

    def rays(self) -> np.ndarray:
        """Unit world-frame ray directions of the pixel centres ``(H, W, 3)``."""
        return self.rays_camera(normalize=True) @ self.R.T

    def project(self, dirs):
        """World directions ``(..., 3)`` -> (pixel ``x`` (column), pixel ``y`` (row), valid).

        Pixel coordinates are continuous with pixel centres at integers (x = j, y = i);
        ``valid`` is True where the direction is in front of the camera and inside the image.
        """
        d = np.asarray(dirs, dtype=np.float64) @ self.R  # world -> camera (R orthonormal)
        z = d[..., 2]
        front = z > 1e-9
        zs = np.where(front, z, 1.0)
        x = self.K[0, 0] * d[..., 0] / zs + self.K[0, 2] - 0.5
        y = self.K[1, 1] * d[..., 1] / zs + self.K[1, 2] - 0.5
        valid = front & (x >= -0.5) & (x <= self.width - 0.5) & (y >= -0.5) & (y <= self.height - 0.5)
        return x, y, valid

    def erp_footprint(self, erp_height: int, erp_width: int):
        """ERP pixels this tile sees: (mask ``(He, We)`` bool, tile x, tile y) for every ERP pixel."""
        x, y, valid = self.project(erp_directions(erp_height, erp_width, np.float64))
        return valid, x, y

    def ray_norm_factor(self) -> np.ndarray:
        """``(H, W)`` factor ``sqrt(x^2 + y^2 + 1)`` turning planar depth into ray distance."""
        return np.linalg.norm(self.rays_camera(), axis=-1)


def _intrinsics(width: int, height: int, fov_x_deg: float, fov_y_deg: float) -> np.ndarray:
    fx = width / (2 * math.tan(math.radians(fov_x_deg) / 2))
    fy = height / (2 * math.tan(math.radians(fov_y_deg) / 2))
    return np.array([[fx, 0, width / 2.0], [0, fy, height / 2.0], [0, 0, 1.0]])


def face_half_extent(level: int = 0) -> float:
    """Largest tangent-plane coordinate ``tan(angle)`` of a face vertex seen from its centre."""
    v, f = subdivided_icosahedron(level)
    c = v[f].mean(axis=1)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    ext = 0.0
    for k in range(len(f)):
        r = look_at_rotation(c[k])
        p = v[f[k]] @ r
        ext = max(ext, float(np.max(np.abs(p[:, :2] / p[:, 2:3]))))
    return ext


def tangent_cameras(
    size: int | tuple[int, int] = 512,
    level: int = 0,
    padding: float = 0.3,
    fov_deg: float | None = None,
) -> list[TangentCamera]:
    """Tangent-image cameras, one per face of the (subdivided) icosahedron.

    Each camera looks at its face centre with world up (+y) up in the image (faces
    near the poles fall back to -z as up). ``size`` is ``S`` or ``(H, W)``. The field
    of view is ``fov_deg`` if given, else the face's gnomonic extent times ``1 + padding``
    (level 0, padding 0.3: about 89.6 degrees, the 360MonoDepth setting).
    """
    h, w = (size, size) if isinstance(size, int) else size
    if fov_deg is None:
        if padding < 0:
            raise ValueError(f"tangent tile padding must be >= 0, got {padding}")
        fov = math.degrees(2 * math.atan(face_half_extent(level) * (1 + padding)))
    else:
        if not 1.0 < fov_deg < 179.0:
            raise ValueError(f"tangent tile fov_deg must lie in (1, 179), got {fov_deg}")
        fov = float(fov_deg)
    fov_y = math.degrees(2 * math.atan(math.tan(math.radians(fov) / 2) * h / w))
    K = _intrinsics(w, h, fov, fov_y)
    cams = []
    for k, c in enumerate(icosahedron_face_centers(level)):
        cams.append(TangentCamera(R=look_at_rotation(c), K=K.copy(), height=h, width=w, index=k))
    return cams


def planar_depth_to_distance(depth, camera: TangentCamera):
    """Planar (z) depth ``(H, W)`` of a tangent tile -> ray distance ``(H, W)``."""
    f = camera.ray_norm_factor()
    if isinstance(depth, torch.Tensor):
        return depth * torch.as_tensor(f, dtype=depth.dtype, device=depth.device)
    return depth * f.astype(np.asarray(depth).dtype)


# --------------------------------------------------------------------------- ERP sampling
def _wrap_rows_cols(r, c, height: int, width: int, xp):
    """Map integer (row, col) that may fall off the poles or the seam onto valid pixels.

    A row above the zenith (-1, -2, ...) is the mirrored row on the other side of the pole,
    half a turn away in longitude; the same below the nadir. Columns wrap.
    """
    over_top = r < 0
    over_bot = r > height - 1
    r = xp.where(over_top, -1 - r, r)
    r = xp.where(over_bot, 2 * height - 1 - r, r)
    flip = over_top | over_bot
    c = xp.where(flip, c + width // 2, c)
    c = c % width
    return r, c


def erp_sample(erp, u, v):
    """Bilinear sample of an ERP image at continuous pixel coordinates.

    ``erp``: ``(H, W)`` or ``(H, W, C)`` numpy, or torch ``(C, H, W)`` / ``(H, W)``.
    ``u, v``: arrays of equal shape ``S`` (column, row; integer = pixel centre).
    Longitude wraps; rows past a pole continue on the opposite meridian (exact for even W).
    Returns ``S`` or ``S + (C,)`` (numpy) / ``(C,) + S`` (torch, channel-first input).
    """
    xp = _xp(u)
    is_torch = isinstance(erp, torch.Tensor)
    if is_torch:
        chw = erp.ndim == 3
        img = erp.permute(1, 2, 0) if chw else erp
    else:
        img = np.asarray(erp)
    height, width = img.shape[:2]
    u0 = xp.floor(u)
    v0 = xp.floor(v)
    fu = u - u0
    fv = v - v0
    if xp is torch:
        u0, v0 = u0.long(), v0.long()
    else:
        u0, v0 = u0.astype(np.int64), v0.astype(np.int64)
    out = 0
    for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
        r, c = _wrap_rows_cols(v0 + dr, u0 + dc, height, width, xp)
        w = (fv if dr else 1 - fv) * (fu if dc else 1 - fu)
        val = img[r, c]
        if val.ndim > w.ndim:
            w = w[..., None]
        out = out + val * w
    if is_torch and chw:
        out = out.permute(-1, *range(out.ndim - 1))
    return out


def erp_sample_dirs(erp, dirs):
    """Bilinear sample of an ERP image (numpy ``(H, W[, C])``) along directions ``(..., 3)``."""
    if isinstance(erp, torch.Tensor):
        h, w = erp.shape[-2:]
    else:
        h, w = np.asarray(erp).shape[:2]
    u, v = dir_to_pixel(dirs, w, h)
    return erp_sample(erp, u, v)


def tangent_image_from_erp(erp: np.ndarray, camera: TangentCamera, supersample: int = 1) -> np.ndarray:
    """Render the perspective view ``(h, w[, C])`` of ``camera`` from an ERP image (numpy).

    ``supersample`` > 1 averages ``s x s`` bilinear samples per tile pixel (anti-aliasing when
    the tile is coarser than the ERP).
    """
    s = int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    h, w = camera.height, camera.width
    kinv = np.linalg.inv(camera.K)
    acc = 0
    for a in range(s):
        for b in range(s):
            i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
            pix = np.stack([j + (b + 0.5) / s, i + (a + 0.5) / s, np.ones((h, w))], axis=-1)
            d = pix @ kinv.T @ camera.R.T
            acc = acc + erp_sample_dirs(erp, d)
    out = acc / (s * s)
    return out.astype(np.asarray(erp).dtype) if np.issubdtype(np.asarray(erp).dtype, np.floating) else out


# --------------------------------------------------------------------------- depth tests between panoramas
def erp_points(position, distance: np.ndarray) -> np.ndarray:
    """World points ``(H, W, 3)`` float64 of a world-aligned ERP ``distance`` ``(H, W)`` taken at ``position`` ``(3,)``.

    Pixels without a valid distance (non-finite or <= 0) map to ``position`` itself.
    """
    d = np.asarray(distance, np.float64)
    h, w = d.shape
    valid = np.isfinite(d) & (d > 0)
    return (np.asarray(position, np.float64).reshape(1, 1, 3)
            + erp_directions(h, w, np.float64) * np.where(valid, d, 0.0)[..., None])


def panorama_depth_test(points: np.ndarray, position, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where ``points`` ``(..., 3)`` sit relative to what a world-aligned ERP panorama at ``position`` saw.

    Returns ``(r, seen)``, both ``(...)`` float64: ``r`` the distance of each point from ``position`` and
    ``seen`` the panorama's distance along the same direction (bilinear; 0 where the panorama has no valid
    distance). The point is *visible* from the panorama when ``r <= seen (1 + rel) + abs`` and lies *in front
    of* a surface the panorama saw when ``r < seen (1 - rel) - abs``; the tolerances are the caller's
    (``eval`` and ``inpaint`` state theirs in their configs).
    """
    d = np.asarray(distance, np.float64)
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0)
    v = np.asarray(points, np.float64) - np.asarray(position, np.float64)
    r = np.linalg.norm(v, axis=-1)
    seen = np.asarray(erp_sample_dirs(d, v), np.float64)
    # a bilinear tap on an invalid neighbour would pull the distance toward 0: call such directions unseen
    invalid_near = np.asarray(erp_sample_dirs((d <= 0).astype(np.float64), v), np.float64) > 0
    return r, np.where(invalid_near | (r <= 0), 0.0, seen)


def erp_pad(img: np.ndarray, pad: int) -> np.ndarray:
    """``(H, W[, C])`` ERP image padded by ``pad`` pixels on every side with its true spherical neighbours.

    Columns wrap around in longitude; rows beyond a pole continue on the opposite meridian (row ``-1 - k`` is row
    ``k`` shifted by ``W / 2``). Returns ``(H + 2 pad, W + 2 pad[, C])``; ``pad`` must not exceed ``H`` or ``W``.
    """
    a = np.asarray(img)
    h, w = a.shape[:2]
    if pad == 0:
        return a.copy()
    if not 0 < pad <= min(h, w):
        raise ValueError(f"erp_pad: pad must lie in [0, {min(h, w)}], got {pad}")
    rows = np.arange(-pad, h + pad)
    cols = np.arange(-pad, w + pad)
    r, c = _wrap_rows_cols(rows[:, None], cols[None, :], h, w, np)
    return a[r, c]
