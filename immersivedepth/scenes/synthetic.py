"""Procedural test scenes with exact geometry: analytic ray casting of a textured room.

A :class:`Scene` is an axis-aligned room (an *inverted* box: rays start inside and hit its inner
walls) holding solid primitives: axis-aligned boxes, spheres and vertical capped cylinders.
Everything is in world metres in the project's frame (y up, the panorama centre at the origin,
longitude 0 looking along -z; see :mod:`immersivedepth.sphere`).

Geometry is exact: ray/primitive intersections are closed-form in float64 (slab test for boxes and
the room, the stable quadratic root for spheres and cylinder sides, planes for cylinder caps), so
the returned distances are the true Euclidean distances along each ray up to float64 rounding.

Appearance:

* Albedo is a *solid* procedural texture: a base colour plus a sum of 3D cosine waves
  ``amp_j * cos(2 pi k_j . p + phase_j)`` (``k_j`` in cycles per metre). Stripes, wood-like
  grain, soft checkers (products of two sinusoids = two waves) and low-frequency noise (random
  waves drawn from a fixed seed) are all of this form, so the texture's spectrum is known exactly.
* Anti-aliasing is analytic: when a ray carries a footprint ``cone`` (the angular standard
  deviation of its pixel, radians) each wave is multiplied by the Fourier transform of the
  pixel's Gaussian footprint on the surface, ``exp(-2 pi^2 s^2 (|k_t|^2 + (k_t . d)^2 / cos^2))``
  with ``s = distance * cone``, ``k_t`` the wave vector projected on the surface and ``cos`` the
  incidence cosine (the footprint stretches along the ray's in-surface direction). Textures are
  therefore band-limited for the resolution being rendered; supersampling then box-filters the
  remaining geometric edges.
* Shading is Lambert: ``rgb = albedo * (ambient + sum_i I_i max(0, n . l_i))`` with directional
  lights and point lights (smooth falloff ``1 / (1 + (r / r0)^2)``), white light, **no shadows**
  (lights shine through objects), no inter-reflection. Colours are clipped to [0, 1]. Shading
  does not depend on the viewing direction, so every surface point has one colour from every
  viewpoint (what a radiance field without view dependence can represent exactly).

Openings and the far background: a room face may have rectangular :class:`Opening` s (an open door, a window).
A ray that leaves the room through one sees the scene's ``far`` material at infinity: a texture of the ray
*direction* only (evaluated on the unit sphere, prefiltered with the pixel's angular footprint, not lit), so it
does not shift when the camera moves. Such rays report ``distance = inf`` and ``object_id = -1``; the bundled data
marks them invalid (distance 0) the way real depth sensors do. Surface sampling and meshes ignore openings.

Cameras must sit in free space (inside the room, outside every object): rays that start inside
a solid are not handled (they see through it); :meth:`Scene.render_panorama` and
:meth:`Scene.render_camera` refuse such positions. :meth:`Scene.occupancy` tells free space apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from immersivedepth import sphere

__all__ = [
    "SCENE_VERSION",
    "ray_box_slabs",
    "SCENE_NAMES",
    "Wave",
    "stripes",
    "soft_checker",
    "value_noise",
    "Material",
    "Lighting",
    "Opening",
    "Room",
    "Box",
    "Sphere",
    "Cylinder",
    "Scene",
    "make_scene",
]

#: Bump when anything that changes rendered pixels changes (geometry, textures, lights, shading).
SCENE_VERSION = "1.0"

_TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------------------------------------------------
# materials and lights


@dataclass(frozen=True)
class Wave:
    """One texture component ``amp * cos(2 pi k . p + phase)``: ``k`` (3,) cycles/metre, ``amp`` (3,) RGB."""

    k: tuple[float, float, float]
    amp: tuple[float, float, float]
    phase: float = 0.0


def stripes(axis: int, period: float, amp, phase: float = 0.0) -> list[Wave]:
    """Sinusoidal stripes varying along world ``axis`` (0=x, 1=y, 2=z) with ``period`` metres."""
    k = [0.0, 0.0, 0.0]
    k[axis] = 1.0 / period
    return [Wave(tuple(k), tuple(np.broadcast_to(amp, 3).tolist()), phase)]


def soft_checker(axis_a: int, axis_b: int, period: float, amp, phase_a: float = 0.0,
                 phase_b: float = 0.0) -> list[Wave]:
    """``amp * sin(2 pi a / period + phase_a) * sin(2 pi b / period + phase_b)``: a checker with sinusoidal edges.

    Written as the two cosine waves of the product-to-sum identity so the spectrum stays explicit.
    """
    ka = np.zeros(3)
    kb = np.zeros(3)
    ka[axis_a] = 1.0 / period
    kb[axis_b] = 1.0 / period
    half = np.broadcast_to(np.asarray(amp, dtype=np.float64) / 2.0, 3)
    # sin A sin B = (cos(A - B) - cos(A + B)) / 2
    return [
        Wave(tuple((ka - kb).tolist()), tuple(half.tolist()), phase_a - phase_b),
        Wave(tuple((ka + kb).tolist()), tuple((-half).tolist()), phase_a + phase_b),
    ]


def value_noise(seed: int, n_waves: int, min_freq: float, max_freq: float, amp,
                planar_axis: int | None = None) -> list[Wave]:
    """Smooth random texture: ``n_waves`` waves with random directions, frequencies in [min_freq, max_freq]
    cycles/metre and phases, from a fixed ``seed`` (deterministic). ``amp`` (scalar or (3,)) is the total
    amplitude budget, split evenly. ``planar_axis`` zeroes that axis of every wave vector (noise that
    is constant along it, e.g. across a wall's thickness)."""
    rng = np.random.default_rng(seed)
    amp = np.broadcast_to(np.asarray(amp, dtype=np.float64), 3) / n_waves
    out = []
    for _ in range(n_waves):
        v = rng.normal(size=3)
        if planar_axis is not None:
            v[planar_axis] = 0.0
        v /= np.linalg.norm(v)
        f = rng.uniform(min_freq, max_freq)
        sign = rng.choice([-1.0, 1.0])
        out.append(Wave(tuple((v * f).tolist()), tuple((sign * amp).tolist()), float(rng.uniform(0.0, _TWO_PI))))
    return out


@dataclass(frozen=True)
class Material:
    """Albedo = ``base`` (3,) + sum of :class:`Wave` s, clipped to [0, 1]."""

    name: str
    base: tuple[float, float, float]
    waves: tuple[Wave, ...] = ()
    min_cos: float = 0.02  # incidence cosine floor of the footprint stretch (grazing rays)

    def albedo(self, points: np.ndarray, normals: np.ndarray, dirs: np.ndarray,
               footprint: np.ndarray | None = None) -> np.ndarray:
        """Albedo ``(N,3)`` at surface ``points`` ``(N,3)`` with unit ``normals`` and ray ``dirs`` ``(N,3)``.

        ``footprint`` ``(N,)``: standard deviation (metres, measured perpendicular to the ray) of each
        ray's Gaussian pixel footprint at the hit; ``None`` = point sampling (no prefilter).
        """
        out = np.empty((points.shape[0], 3), dtype=np.float64)
        out[:] = self.base
        if footprint is not None:
            cos = np.maximum(np.abs(np.einsum("ij,ij->i", normals, dirs)), self.min_cos)
            s2 = np.square(footprint)
        for w in self.waves:
            k = np.asarray(w.k, dtype=np.float64)
            val = np.cos(_TWO_PI * (points @ k) + w.phase)
            if footprint is not None:
                kt = k[None, :] - (normals @ k)[:, None] * normals  # wave vector in the tangent plane
                kd = np.einsum("ij,ij->i", kt, dirs)
                quad = np.einsum("ij,ij->i", kt, kt) + np.square(kd / cos)
                val *= np.exp(-2.0 * math.pi**2 * s2 * quad)
            out += val[:, None] * np.asarray(w.amp, dtype=np.float64)[None, :]
        return np.clip(out, 0.0, 1.0)

    def describe(self) -> dict:
        return {"name": self.name, "base": list(self.base), "n_waves": len(self.waves)}


@dataclass(frozen=True)
class Lighting:
    """White Lambert lighting, no shadows.

    ``directional``: tuples (direction *toward* the light (3,), intensity).
    ``point``: tuples (position (3,), intensity, falloff radius r0 in metres; intensity / (1 + (r/r0)^2)).
    """

    ambient: float = 0.35
    directional: tuple = ()
    point: tuple = ()

    def shade(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """Irradiance factor ``(N,)`` at ``points`` ``(N,3)`` with outward/facing unit ``normals`` ``(N,3)``."""
        e = np.full(points.shape[0], self.ambient, dtype=np.float64)
        for direction, intensity in self.directional:
            ld = np.asarray(direction, dtype=np.float64)
            ld = ld / np.linalg.norm(ld)
            e += intensity * np.maximum(normals @ ld, 0.0)
        for position, intensity, r0 in self.point:
            lv = np.asarray(position, dtype=np.float64)[None, :] - points
            r = np.linalg.norm(lv, axis=1)
            lamb = np.maximum(np.einsum("ij,ij->i", normals, lv) / np.maximum(r, 1e-12), 0.0)
            e += intensity * lamb / (1.0 + np.square(r / r0))
        return e

    def describe(self) -> dict:
        return {
            "ambient": self.ambient,
            "directional": [{"toward": list(map(float, d)), "intensity": float(i)} for d, i in self.directional],
            "point": [{"position": list(map(float, p)), "intensity": float(i), "falloff_radius": float(r)}
                      for p, i, r in self.point],
            "shadows": False,
        }


# ----------------------------------------------------------------------------------------------------------------------
# primitives

_T_MIN = 1e-9  # hits closer than this along the ray are ignored (self-intersection guard), metres


class _Rays:
    """A batch of rays as contiguous per-axis columns (fast elementwise numpy), with ``1/d`` precomputed.

    ``o``, ``d`` ``(N,3)`` float64; ``oc[i]``, ``dc[i]``, ``inv[i]`` ``(N,)``; ``1/0 = +-inf``.
    """

    def __init__(self, o: np.ndarray, d: np.ndarray):
        self.o, self.d, self.n = o, d, o.shape[0]
        self.oc = [np.ascontiguousarray(o[:, i]) for i in range(3)]
        self.dc = [np.ascontiguousarray(d[:, i]) for i in range(3)]
        with np.errstate(divide="ignore"):
            self.inv = [1.0 / c for c in self.dc]


def _slabs(rays: _Rays, lo, hi):
    """Slab test of ``rays`` against the box ``lo <= x <= hi``.

    Returns ``tnear``, ``tfar`` ``(N,)`` (the ray is inside the box for ``tnear <= t <= tfar``) and the axes
    ``(N,)`` that set them. A ray parallel to a slab gets (-inf, inf) strictly inside it and an empty range
    outside (``fmin``/``fmax`` drop the NaN of ``0 * inf`` for a ray lying exactly in a face plane).
    """
    tnear = np.full(rays.n, -np.inf)
    tfar = np.full(rays.n, np.inf)
    anear = np.zeros(rays.n, dtype=np.int64)
    afar = np.zeros(rays.n, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for i in range(3):
            t1 = (lo[i] - rays.oc[i]) * rays.inv[i]
            t2 = (hi[i] - rays.oc[i]) * rays.inv[i]
            a, b = np.fmin(t1, t2), np.fmax(t1, t2)
            up = a > tnear
            tnear = np.where(up, a, tnear)
            anear[up] = i
            down = b < tfar
            tfar = np.where(down, b, tfar)
            afar[down] = i
    return tnear, tfar, anear, afar


def ray_box_slabs(origins: np.ndarray, dirs: np.ndarray, lo, hi):
    """Slab test of rays ``origins, dirs`` ``(N, 3)`` against the box ``lo <= x <= hi`` ``(3,)``, in float64.

    Returns ``tnear, tfar`` ``(N,)`` (inside the box for ``tnear <= t <= tfar``; a miss has ``tnear > tfar``) and
    the axes ``(N,)`` of the faces that set them. The scene's boxes and the oracle's box room both use it; the
    field's sampler has the torch counterpart for tensors (``field.sampler.ray_box_intersect``).
    """
    rays = _Rays(np.asarray(origins, np.float64), np.asarray(dirs, np.float64))
    return _slabs(rays, np.asarray(lo, np.float64), np.asarray(hi, np.float64))


def _axis_normal_fn(rays: _Rays, axis: np.ndarray):
    """Normals ``(M,3)`` along ``axis`` facing the rays, computed for a selection ``sel`` only."""
    def normal(sel: np.ndarray) -> np.ndarray:
        ax = axis[sel]
        rows = np.arange(ax.shape[0])
        n = np.zeros((ax.shape[0], 3), dtype=np.float64)
        n[rows, ax] = -np.sign(rays.d[sel][rows, ax])
        return n
    return normal


def _rect_sampler(axis: int, value: float, lo: np.ndarray, hi: np.ndarray, normal_sign: float):
    """Area-uniform sampler of the axis-aligned rectangle ``x_axis = value``, other axes in [lo, hi]."""
    def sample(rng: np.random.Generator, n: int):
        p = lo[None, :] + rng.random((n, 3)) * (hi - lo)[None, :]
        p[:, axis] = value
        nrm = np.zeros((n, 3))
        nrm[:, axis] = normal_sign
        return p, nrm
    return sample


def _box_patches(lo: np.ndarray, hi: np.ndarray, inward: bool):
    ext = hi - lo
    patches = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        area = float(ext[others[0]] * ext[others[1]])
        for value, outward in ((lo[axis], -1.0), (hi[axis], 1.0)):
            sign = -outward if inward else outward
            patches.append((area, _rect_sampler(axis, float(value), lo, hi, sign)))
    return patches


def _box_mesh(lo: np.ndarray, hi: np.ndarray, inward: bool):
    """8 corners and 12 triangles, counter-clockwise seen from the side the normal points to."""
    c = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    # corner index = 4*ix + 2*iy + iz; quads listed CCW seen from outside
    quads = [
        (0, 1, 3, 2),  # -x
        (4, 6, 7, 5),  # +x
        (0, 4, 5, 1),  # -y
        (2, 3, 7, 6),  # +y
        (0, 2, 6, 4),  # -z
        (1, 5, 7, 3),  # +z
    ]
    f = []
    for a, b, cc, d in quads:
        f += [(a, b, cc), (a, cc, d)]
    f = np.asarray(f, dtype=np.int64)
    if inward:
        f = f[:, ::-1].copy()
    return c, f


@dataclass(frozen=True)
class Opening:
    """A rectangular hole in one room face: ``face`` (0..5, the order of :class:`Room` materials) and the
    rectangle ``lo <= x <= hi`` on that face's plane (the face's own axis of ``lo``/``hi`` is ignored)."""

    name: str
    face: int
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def __post_init__(self):
        if self.face not in range(6):
            raise ValueError(f"Opening {self.name!r}: face must be 0..5 (-x, +x, -y, +y, -z, +z), got {self.face}")

    def contains(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` True where points ``(N,3)`` on the face plane lie inside the rectangle."""
        axis = self.face // 2
        inside = np.ones(points.shape[0], dtype=bool)
        for a in range(3):
            if a != axis:
                inside &= (points[:, a] >= self.lo[a]) & (points[:, a] <= self.hi[a])
        return inside

    def describe(self) -> dict:
        return {"name": self.name, "face": self.face, "min": list(self.lo), "max": list(self.hi)}


@dataclass(frozen=True)
class Room:
    """The room's interior ``lo <= x <= hi`` (an inverted box); normals point into the room.

    ``materials``: six materials for the faces, order (-x, +x, -y (floor), +y (ceiling), -z, +z).
    ``openings``: holes in the faces (rays leaving through them hit nothing: the scene's far background).
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    materials: tuple[Material, ...]
    name: str = "room"
    openings: tuple[Opening, ...] = ()
    kind = "room"

    def __post_init__(self):
        if len(self.materials) != 6:
            raise ValueError(f"Room needs 6 face materials (-x, +x, -y, +y, -z, +z), got {len(self.materials)}")
        if not np.all(np.asarray(self.hi) > np.asarray(self.lo)):
            raise ValueError(f"Room bounds must satisfy lo < hi on every axis, got lo={self.lo}, hi={self.hi}")

    def intersect(self, rays: _Rays):
        """Exit point of the rays through the room box: t ``(N,)`` (inf = miss or through an opening) and
        ``normal(sel)`` -> inward unit normals ``(M,3)`` of the selected rays."""
        tnear, tfar, _, afar = _slabs(rays, self.lo, self.hi)
        hit = (tnear <= tfar) & (tfar > _T_MIN) & np.isfinite(tfar)
        if self.openings:
            p = rays.o + np.where(hit, tfar, 0.0)[:, None] * rays.d
            face = 2 * afar + (rays.d[np.arange(rays.n), afar] > 0)  # exit through the lo (-) or hi (+) face
            for op in self.openings:
                hit &= ~((face == op.face) & op.contains(p))
        return np.where(hit, tfar, np.inf), _axis_normal_fn(rays, afar)

    def face_index(self, normals: np.ndarray) -> np.ndarray:
        """Face index (0..5 as in ``materials``) of inward ``normals`` ``(N,3)``."""
        axis = np.abs(normals).argmax(axis=1)
        inward = normals[np.arange(normals.shape[0]), axis]
        return 2 * axis + (inward < 0)  # the -x wall's inward normal is +x, ...

    def albedo(self, points, normals, dirs, footprint=None):
        out = np.empty((points.shape[0], 3))
        face = self.face_index(normals)
        for f in np.unique(face):
            m = face == f
            out[m] = self.materials[f].albedo(points[m], normals[m], dirs[m],
                                              None if footprint is None else footprint[m])
        return out

    def outside(self, p: np.ndarray) -> np.ndarray:
        """``(N,)`` True where points ``(N,3)`` are outside the closed interior box."""
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return np.any((p < lo[None, :]) | (p > hi[None, :]), axis=1)

    def patches(self):
        return _box_patches(np.asarray(self.lo, float), np.asarray(self.hi, float), inward=True)

    def mesh(self):
        return _box_mesh(np.asarray(self.lo, float), np.asarray(self.hi, float), inward=True)

    def describe(self) -> dict:
        out = {"kind": "room", "name": self.name, "min": list(self.lo), "max": list(self.hi),
               "materials": [m.name for m in self.materials]}
        if self.openings:
            out["openings"] = [o.describe() for o in self.openings]
        return out


@dataclass(frozen=True)
class Box:
    """A solid axis-aligned box ``lo <= x <= hi``."""

    name: str
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    material: Material
    kind = "box"

    def __post_init__(self):
        if not np.all(np.asarray(self.hi) > np.asarray(self.lo)):
            raise ValueError(f"Box {self.name!r} needs lo < hi on every axis, got lo={self.lo}, hi={self.hi}")

    def intersect(self, rays: _Rays):
        """Entry point of rays from outside: t ``(N,)`` (inf = miss), ``normal(sel)`` -> outward normals."""
        tnear, tfar, anear, _ = _slabs(rays, self.lo, self.hi)
        hit = (tnear <= tfar) & (tnear > _T_MIN) & np.isfinite(tnear)
        return np.where(hit, tnear, np.inf), _axis_normal_fn(rays, anear)

    def albedo(self, points, normals, dirs, footprint=None):
        return self.material.albedo(points, normals, dirs, footprint)

    def contains(self, p: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return np.all((p >= lo[None, :]) & (p <= hi[None, :]), axis=1)

    def patches(self):
        return _box_patches(np.asarray(self.lo, float), np.asarray(self.hi, float), inward=False)

    def mesh(self):
        return _box_mesh(np.asarray(self.lo, float), np.asarray(self.hi, float), inward=False)

    def describe(self) -> dict:
        return {"kind": "box", "name": self.name, "min": list(self.lo), "max": list(self.hi),
                "material": self.material.name}


@dataclass(frozen=True)
class Sphere:
    """A solid sphere ``|x - center| <= radius``."""

    name: str
    center: tuple[float, float, float]
    radius: float
    material: Material
    kind = "sphere"

    def __post_init__(self):
        if not self.radius > 0:
            raise ValueError(f"Sphere {self.name!r} needs radius > 0, got {self.radius}")

    def intersect(self, rays: _Rays):
        """Near root of ``|o + t d - c|^2 = r^2`` for rays from outside (stable form ``t = c / (-b + sqrt)``).

        Returns t ``(N,)`` (inf = miss) and ``normal(sel)`` -> outward normals ``(p - c) / r``.
        """
        c = np.asarray(self.center, dtype=np.float64)
        oc = [rays.oc[i] - c[i] for i in range(3)]
        b = oc[0] * rays.dc[0] + oc[1] * rays.dc[1] + oc[2] * rays.dc[2]
        cc = oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - self.radius**2
        disc = b * b - cc
        hit = (disc >= 0.0) & (b < 0.0) & (cc > 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = cc / (-b + np.sqrt(np.maximum(disc, 0.0)))
        t = np.where(hit & (t > _T_MIN), t, np.inf)

        def normal(sel):
            p = rays.o[sel] + t[sel, None] * rays.d[sel]
            return (p - c[None, :]) / self.radius

        return t, normal

    def albedo(self, points, normals, dirs, footprint=None):
        return self.material.albedo(points, normals, dirs, footprint)

    def contains(self, p: np.ndarray) -> np.ndarray:
        return np.sum(np.square(p - np.asarray(self.center)[None, :]), axis=1) <= self.radius**2

    def patches(self):
        c = np.asarray(self.center, dtype=np.float64)

        def sample(rng, n):
            v = rng.normal(size=(n, 3))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            return c[None, :] + self.radius * v, v

        return [(4.0 * math.pi * self.radius**2, sample)]

    def mesh(self, level: int = 3):
        v, f = sphere.subdivided_icosahedron(level)
        return np.asarray(self.center)[None, :] + self.radius * v, f

    def describe(self) -> dict:
        return {"kind": "sphere", "name": self.name, "center": list(self.center), "radius": self.radius,
                "material": self.material.name}


@dataclass(frozen=True)
class Cylinder:
    """A solid vertical cylinder: ``(x-cx)^2 + (z-cz)^2 <= r^2``, ``y0 <= y <= y1`` (capped at both ends)."""

    name: str
    center_xz: tuple[float, float]
    radius: float
    y0: float
    y1: float
    material: Material
    kind = "cylinder"

    def __post_init__(self):
        if not (self.radius > 0 and self.y1 > self.y0):
            raise ValueError(f"Cylinder {self.name!r} needs radius > 0 and y1 > y0, got r={self.radius}, "
                             f"y0={self.y0}, y1={self.y1}")

    def intersect(self, rays: _Rays):
        """Nearest of the side (infinite cylinder clipped to [y0, y1]) and the two caps, rays from outside.

        Returns t ``(N,)`` (inf = miss) and ``normal(sel)`` -> outward normals ``(M,3)``.
        """
        cx, cz = self.center_xz
        r = self.radius
        ox, oz = rays.oc[0] - cx, rays.oc[2] - cz
        dx, dy, dz = rays.dc
        oy = rays.oc[1]
        a = dx * dx + dz * dz
        b = dx * ox + dz * oz
        c = ox * ox + oz * oz - r * r
        disc = b * b - a * c
        side_ok = (a > 0.0) & (disc >= 0.0) & (b < 0.0) & (c > 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ts = c / (-b + np.sqrt(np.maximum(disc, 0.0)))
        ys = oy + ts * dy
        side_ok &= (ts > _T_MIN) & (ys >= self.y0) & (ys <= self.y1)
        ts = np.where(side_ok, ts, np.inf)
        # caps: a ray going down can only enter through the top cap, going up through the bottom one
        ycap = np.where(dy < 0.0, self.y1, self.y0)
        with np.errstate(invalid="ignore", divide="ignore"):
            tc = (ycap - oy) * rays.inv[1]
        px = ox + np.where(np.isfinite(tc), tc, 0.0) * dx
        pz = oz + np.where(np.isfinite(tc), tc, 0.0) * dz
        cap_ok = (dy != 0.0) & (tc > _T_MIN) & (px * px + pz * pz <= r * r)
        tc = np.where(cap_ok, tc, np.inf)
        t = np.minimum(ts, tc)

        def normal(sel):
            tt, cap = t[sel], tc[sel] < ts[sel]
            n = np.stack([(ox[sel] + tt * dx[sel]) / r, np.zeros_like(tt), (oz[sel] + tt * dz[sel]) / r], axis=1)
            n[cap] = 0.0
            n[cap, 1] = np.where(dy[sel][cap] < 0.0, 1.0, -1.0)
            return n

        return t, normal

    def albedo(self, points, normals, dirs, footprint=None):
        return self.material.albedo(points, normals, dirs, footprint)

    def contains(self, p: np.ndarray) -> np.ndarray:
        cx, cz = self.center_xz
        rr = np.square(p[:, 0] - cx) + np.square(p[:, 2] - cz)
        return (rr <= self.radius**2) & (p[:, 1] >= self.y0) & (p[:, 1] <= self.y1)

    def patches(self):
        cx, cz = self.center_xz
        r, h = self.radius, self.y1 - self.y0

        def side(rng, n):
            phi = rng.uniform(0.0, _TWO_PI, n)
            nrm = np.stack([np.cos(phi), np.zeros(n), np.sin(phi)], axis=1)
            p = np.stack([cx + r * nrm[:, 0], rng.uniform(self.y0, self.y1, n), cz + r * nrm[:, 2]], axis=1)
            return p, nrm

        def cap(y, sign):
            def sample(rng, n):
                rho = r * np.sqrt(rng.random(n))
                phi = rng.uniform(0.0, _TWO_PI, n)
                p = np.stack([cx + rho * np.cos(phi), np.full(n, y), cz + rho * np.sin(phi)], axis=1)
                nrm = np.zeros((n, 3))
                nrm[:, 1] = sign
                return p, nrm
            return sample

        disk = math.pi * r * r
        return [(_TWO_PI * r * h, side), (disk, cap(self.y0, -1.0)), (disk, cap(self.y1, 1.0))]

    def mesh(self, segments: int = 48):
        cx, cz = self.center_xz
        phi = np.arange(segments) * (_TWO_PI / segments)
        ring = np.stack([cx + self.radius * np.cos(phi), np.zeros(segments), cz + self.radius * np.sin(phi)], axis=1)
        bot, top = ring.copy(), ring.copy()
        bot[:, 1], top[:, 1] = self.y0, self.y1
        centers = np.array([[cx, self.y0, cz], [cx, self.y1, cz]])
        v = np.concatenate([bot, top, centers])
        i = np.arange(segments)
        j = (i + 1) % segments
        cb, ct = 2 * segments, 2 * segments + 1
        # outward CCW: angle grows from +x toward +z, i.e. clockwise seen from above (+y)
        side = np.concatenate([np.stack([i, segments + i, segments + j], 1), np.stack([i, segments + j, j], 1)])
        bottom = np.stack([np.full(segments, cb), i, j], 1)
        topf = np.stack([np.full(segments, ct), segments + j, segments + i], 1)
        return v, np.concatenate([side, bottom, topf]).astype(np.int64)

    def describe(self) -> dict:
        return {"kind": "cylinder", "name": self.name, "center_xz": list(self.center_xz), "radius": self.radius,
                "y0": self.y0, "y1": self.y1, "material": self.material.name}


# ----------------------------------------------------------------------------------------------------------------------
# scene


def _as_points(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{what} must have shape (N,3), got {a.shape}")
    return a


@dataclass
class Scene:
    """A room with solid objects; see the module docstring for geometry, textures and shading.

    ``objects``: boxes, spheres, cylinders. Object ids: 0 = the room, ``i + 1`` = ``objects[i]``,
    -1 = no hit (rays through a room opening, or leaving a room they did not start in). ``far``: the material
    seen at infinity by rays that hit nothing (a function of the direction only; ``None``: black).
    ``chunk_size`` bounds memory (rays per vectorised batch). ``footprint_scale``: pixel footprint standard
    deviation as a fraction of the pixel's angular size used by the renderers' texture prefilter.
    """

    name: str
    room: Room
    objects: list
    lighting: Lighting = field(default_factory=Lighting)
    far: Material | None = None
    chunk_size: int = 1 << 16
    footprint_scale: float = 0.5

    @property
    def primitives(self) -> list:
        return [self.room, *self.objects]

    @property
    def object_names(self) -> list[str]:
        return [p.name for p in self.primitives]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The room's interior box ``(min (3,), max (3,))`` in metres; the panorama centre is the origin."""
        return np.asarray(self.room.lo, dtype=np.float64), np.asarray(self.room.hi, dtype=np.float64)

    # ------------------------------------------------------------------ ray casting
    def cast(self, origins, dirs, cone=None, *, progress: bool | None = False) -> dict:
        """Nearest hit of each ray.

        ``origins`` ``(N,3)`` (or ``(3,)``, shared), ``dirs`` ``(N,3)`` unit directions; ``cone``: optional
        per-ray (``(N,)``) or scalar angular footprint std (radians) for the analytic texture prefilter
        (``None``: point-sampled texture). Returns ``distance`` ``(N,)`` float64 (inf = no hit), ``rgb``
        ``(N,3)`` float32 in [0,1], ``normal`` ``(N,3)`` float64 unit, facing the ray, ``object_id`` ``(N,)`` int64,
        ``point`` ``(N,3)`` float64 hit points (NaN where nothing is hit).
        """
        d = _as_points(dirs, "cast: dirs")
        o = np.asarray(origins, dtype=np.float64)
        if o.shape == (3,):
            o = np.broadcast_to(o, d.shape)
        o = _as_points(o, "cast: origins")
        if o.shape != d.shape:
            raise ValueError(f"cast: origins {o.shape} and dirs {d.shape} must have the same shape (N,3)")
        norms = np.linalg.norm(d, axis=1)
        if d.shape[0] and not np.all(np.abs(norms - 1.0) < 1e-6):
            bad = int(np.argmax(np.abs(norms - 1.0)))
            raise ValueError(f"cast: dirs must be unit vectors (|d| = {norms[bad]:.6g} at row {bad}); "
                             "normalise them first, distances are measured in units of |d|")
        n = d.shape[0]
        cone_arr = None
        if cone is not None:
            cone_arr = np.broadcast_to(np.asarray(cone, dtype=np.float64), (n,))
        out = {
            "distance": np.empty(n, dtype=np.float64),
            "rgb": np.empty((n, 3), dtype=np.float32),
            "normal": np.empty((n, 3), dtype=np.float64),
            "object_id": np.empty(n, dtype=np.int64),
            "point": np.empty((n, 3), dtype=np.float64),
        }
        starts = range(0, n, self.chunk_size)
        for s in tqdm(starts, desc=f"cast {self.name}", disable=(not progress) if progress is not None else None,
                      leave=False):
            e = min(s + self.chunk_size, n)
            self._cast_chunk(o[s:e], d[s:e], None if cone_arr is None else cone_arr[s:e], out, s, e)
        return out

    def _cast_chunk(self, o, d, cone, out, s, e):
        m = o.shape[0]
        rays = _Rays(o, d)
        best_t = np.full(m, np.inf)
        best_id = np.full(m, -1, dtype=np.int64)
        normal_fns = []
        for pid, prim in enumerate(self.primitives):
            t, normal_fn = prim.intersect(rays)
            normal_fns.append(normal_fn)
            closer = t < best_t
            best_t = np.where(closer, t, best_t)
            best_id[closer] = pid
        hit = best_id >= 0
        best_n = np.zeros((m, 3))
        for pid in np.unique(best_id[hit]):
            sel = best_id == pid
            best_n[sel] = normal_fns[pid](sel)
        p = o + np.where(hit, best_t, 0.0)[:, None] * d
        rgb = np.zeros((m, 3))
        footprint = None if cone is None else best_t * cone
        for pid in np.unique(best_id[hit]):
            sel = best_id == pid
            fp = None if footprint is None else footprint[sel]
            alb = self.primitives[pid].albedo(p[sel], best_n[sel], d[sel], fp)
            rgb[sel] = alb * self.lighting.shade(p[sel], best_n[sel])[:, None]
        if self.far is not None and not hit.all():
            rgb[~hit] = self.far_color(d[~hit], None if cone is None else cone[~hit])
        out["distance"][s:e] = best_t
        out["rgb"][s:e] = np.clip(rgb, 0.0, 1.0)
        out["normal"][s:e] = best_n
        out["object_id"][s:e] = best_id
        out["point"][s:e] = np.where(hit[:, None], p, np.nan)

    def far_color(self, dirs: np.ndarray, cone: np.ndarray | None = None) -> np.ndarray:
        """Colour ``(N,3)`` of the far background along unit ``dirs`` ``(N,3)``: the ``far`` material on the unit
        sphere (so it depends on the direction only), prefiltered with the angular footprint ``cone`` ``(N,)``."""
        if self.far is None:
            return np.zeros((dirs.shape[0], 3))
        return self.far.albedo(dirs, -dirs, dirs, cone)

    # ------------------------------------------------------------------ free space
    def occupancy(self, points) -> np.ndarray:
        """``(N,)`` bool: True where ``points`` ``(N,3)`` lie inside/on a solid object or outside the room."""
        p = _as_points(points, "occupancy: points")
        occ = self.room.outside(p)
        for obj in self.objects:
            occ |= obj.contains(p)
        return occ

    def _check_position(self, position) -> np.ndarray:
        pos = np.asarray(position, dtype=np.float64)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise ValueError(f"camera position must be 3 finite numbers, got {position!r}")
        if self.occupancy(pos[None, :])[0]:
            lo, hi = self.bounds
            raise ValueError(f"camera position {pos.tolist()} is inside an object or outside the room of scene "
                             f"{self.name!r} (room {lo.tolist()}..{hi.tolist()}); choose a point in free space "
                             "(Scene.occupancy(points) tells)")
        return pos

    # ------------------------------------------------------------------ rendering
    def _render(self, dirs_at, shape, pos, supersample, cone_at, progress) -> dict:
        """Shared renderer: ``dirs_at(du, dv)`` -> unit dirs ``shape + (3,)`` for a sub-pixel offset (pixels)."""
        k = int(supersample)
        if k < 1:
            raise ValueError(f"supersample must be an integer >= 1, got {supersample}")
        d0 = dirs_at(0.0, 0.0).reshape(-1, 3)
        res = self.cast(pos, d0, None if cone_at is None else cone_at(d0, 1), progress=progress)
        rgb = res["rgb"].astype(np.float64)
        if k > 1:
            acc = np.zeros_like(rgb)
            offsets = (np.arange(k) + 0.5) / k - 0.5
            for dv in offsets:
                for du in offsets:
                    if du == 0.0 and dv == 0.0:
                        acc += rgb  # odd k: the centre sample is the centre ray
                        continue
                    dd = dirs_at(du, dv).reshape(-1, 3)
                    acc += self.cast(pos, dd, None if cone_at is None else cone_at(dd, k),
                                     progress=progress)["rgb"]
            rgb = acc / (k * k)
        return {
            "rgb": rgb.reshape(*shape, 3).astype(np.float32),
            "distance": res["distance"].reshape(shape).astype(np.float32),
            "normal": res["normal"].reshape(*shape, 3).astype(np.float32),
            "object_id": res["object_id"].reshape(shape),
            "distance64": res["distance"].reshape(shape),
        }

    def render_panorama(self, height: int, width: int, position=(0.0, 0.0, 0.0), *, supersample: int = 1,
                        window: tuple[int, int, int, int] | None = None, prefilter: bool = True,
                        progress: bool | None = False) -> dict:
        """Equirectangular render from ``position`` (metres).

        Returns ``rgb`` ``(H,W,3)`` float32 in [0,1] (mean of ``supersample x supersample`` sub-pixel rays on a
        regular grid), ``distance`` ``(H,W)`` float32 metres of the pixel-centre ray, ``normal`` ``(H,W,3)``,
        ``object_id`` ``(H,W)``, ``distance64`` ``(H,W)`` float64. ``window=(row0, row1, col0, col1)`` renders
        only that block of the ``height x width`` panorama (same pixels as the full render's crop).
        ``prefilter``: band-limit textures to the sample spacing (see the module docstring).
        """
        if int(height) < 1 or int(width) < 1:
            raise ValueError(f"render_panorama: height and width must be >= 1, got {height}x{width}")
        pos = self._check_position(position)
        r0, r1, c0, c1 = window if window is not None else (0, height, 0, width)
        if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
            raise ValueError(f"render_panorama: window {window} must satisfy 0 <= row0 < row1 <= {height} and "
                             f"0 <= col0 < col1 <= {width}")
        v, u = np.meshgrid(np.arange(r0, r1, dtype=np.float64), np.arange(c0, c1, dtype=np.float64), indexing="ij")

        def dirs_at(du, dv):
            return sphere.pixel_to_dir(u + du, v + dv, width, height)

        cone = None
        if prefilter:
            ang = math.pi / height  # angular pixel size (latitude step; the longitude step is never larger)
            cone = lambda dd, k: self.footprint_scale * ang / k  # noqa: E731
        return self._render(dirs_at, u.shape, pos, supersample, cone, progress)

    def render_camera(self, camera: sphere.TangentCamera, position=(0.0, 0.0, 0.0), *, supersample: int = 1,
                      prefilter: bool = True, progress: bool | None = False) -> dict:
        """Perspective render of an OpenCV pinhole ``camera`` (``R``, ``K``) placed at ``position``.

        Returns ``rgb`` ``(h,w,3)``, ``depth`` ``(h,w)`` planar z (= distance / ray-norm factor), ``distance``
        ``(h,w)`` along the ray, ``normal`` ``(h,w,3)``, ``object_id`` ``(h,w)`` (float32 except the ids).
        """
        pos = self._check_position(position)
        h, w = camera.height, camera.width
        kinv = np.linalg.inv(camera.K)
        i, j = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")

        def cam_rays(du, dv):
            pix = np.stack([j + 0.5 + du, i + 0.5 + dv, np.ones_like(i)], axis=-1)
            return pix @ kinv.T

        def dirs_at(du, dv):
            rc = cam_rays(du, dv)
            return (rc / np.linalg.norm(rc, axis=-1, keepdims=True)) @ camera.R.T

        cone = None
        if prefilter:
            focal = math.sqrt(camera.K[0, 0] * camera.K[1, 1])
            fwd = camera.R[:, 2]

            def cone(dd, k):  # angular pixel size ~ cos(angle to the axis) / f (tangential direction)
                return self.footprint_scale * np.clip(dd @ fwd, 1e-6, 1.0) / (focal * k)

        res = self._render(dirs_at, (h, w), pos, supersample, cone, progress)
        factor = np.linalg.norm(cam_rays(0.0, 0.0), axis=-1)
        res["depth"] = (res["distance64"] / factor).astype(np.float32)
        return res

    # ------------------------------------------------------------------ surfaces
    def _patches(self):
        out = []
        for prim in self.primitives:
            out += prim.patches()
        return out

    def surface_area(self) -> float:
        """Total area (m^2) of all surfaces: room walls and every object's full boundary."""
        return float(sum(a for a, _ in self._patches()))

    def sample_surface(self, n: int, seed: int = 0, *, visible_from=None, max_rounds: int = 50,
                       visibility_tol: float = 1e-7) -> tuple:
        """``n`` area-uniform random points on all surfaces: ``(points (n,3), normals (n,3))`` float64.

        Normals point out of the objects and into the room. Deterministic for a given ``seed``. With
        ``visible_from`` (a position (3,)) only points seen from there are kept (rejection sampling: the
        ray toward the point must hit it first, within ``visibility_tol`` relative distance), e.g. to compare a
        single-panorama reconstruction by Chamfer; at most ``max_rounds`` batches are drawn.
        """
        if int(n) < 0:
            raise ValueError(f"sample_surface: n must be >= 0, got {n}")
        n = int(n)
        rng = np.random.default_rng(seed)
        patches = self._patches()
        areas = np.array([a for a, _ in patches])
        probs = areas / areas.sum()

        def draw(m):
            counts = rng.multinomial(m, probs)
            pts, nrms = [], []
            for (_, sampler), c in zip(patches, counts):
                if c:
                    p, q = sampler(rng, int(c))
                    pts.append(p)
                    nrms.append(q)
            if not pts:
                return np.zeros((0, 3)), np.zeros((0, 3))
            p, q = np.concatenate(pts), np.concatenate(nrms)
            perm = rng.permutation(len(p))
            return p[perm], q[perm]

        if visible_from is None:
            return draw(n)
        pos = self._check_position(visible_from)
        keep_p, keep_n, have = [], [], 0
        for _ in range(max_rounds):
            if have >= n:
                break
            p, q = draw(max(2 * (n - have), 1024))
            v = p - pos[None, :]
            dist = np.linalg.norm(v, axis=1)
            ok = dist > 1e-9
            p, q, v, dist = p[ok], q[ok], v[ok], dist[ok]
            hit = self.cast(pos, v / dist[:, None])["distance"]
            vis = np.abs(hit - dist) <= visibility_tol * np.maximum(dist, 1.0)
            keep_p.append(p[vis])
            keep_n.append(q[vis])
            have += int(vis.sum())
        if have < n:
            raise RuntimeError(f"sample_surface: only {have} of {n} points visible from {pos.tolist()} after "
                               f"{max_rounds} rounds; raise max_rounds or move the position into the open")
        return np.concatenate(keep_p)[:n], np.concatenate(keep_n)[:n]

    def mesh(self, sphere_level: int = 3, cylinder_segments: int = 48) -> tuple[np.ndarray, np.ndarray]:
        """Triangle mesh of all surfaces: ``(vertices (V,3) float64, faces (F,3) int64)``.

        Room walls face inward, objects outward (counter-clockwise seen from the side the surface faces).
        Spheres are subdivided icosahedra (``sphere_level``), cylinders ``cylinder_segments``-gon prisms.
        """
        verts, faces, off = [], [], 0
        for prim in self.primitives:
            if prim.kind == "sphere":
                v, f = prim.mesh(sphere_level)
            elif prim.kind == "cylinder":
                v, f = prim.mesh(cylinder_segments)
            else:
                v, f = prim.mesh()
            verts.append(v)
            faces.append(f + off)
            off += len(v)
        return np.concatenate(verts).astype(np.float64), np.concatenate(faces).astype(np.int64)

    def describe(self) -> dict:
        """JSON-able description (metres): bounds, objects, materials, lights."""
        lo, hi = self.bounds
        return {
            "name": self.name,
            "units": "metres",
            "frame": "right-handed, y up, longitude 0 along -z, origin = panorama centre",
            "version": SCENE_VERSION,
            "bounds": {"min": lo.tolist(), "max": hi.tolist()},
            "room": self.room.describe(),
            "objects": [o.describe() for o in self.objects],
            "lighting": self.lighting.describe(),
        } | ({"far": self.far.describe()} if self.far is not None else {})


# ----------------------------------------------------------------------------------------------------------------------
# the bundled scenes


def _living_room() -> Scene:
    floor_y, ceil_y = -1.4, 1.4
    lo, hi = (-3.0, floor_y, -4.0), (3.5, ceil_y, 2.8)

    def wall(name, base, axis_along, seed):
        # vertical wallpaper stripes along the wall + a broad vertical gradient band + smooth noise
        waves = stripes(axis_along, 0.55, (0.06, 0.05, 0.04))
        waves += stripes(1, 2.8, (0.05, 0.05, 0.06), phase=0.7)
        waves += value_noise(seed, 5, 0.3, 1.6, (0.10, 0.09, 0.08))
        return Material(name, base, tuple(waves))

    floor = Material("floor_wood", (0.52, 0.36, 0.22), tuple(
        stripes(2, 0.22, (0.06, 0.045, 0.03))          # plank rows along z
        + soft_checker(0, 2, 1.6, (0.08, 0.06, 0.04), 0.3, 1.1)  # plank-to-plank tone changes
        + [Wave((2.1, 0.0, 0.35), (0.035, 0.025, 0.015), 0.4)]  # grain
        + value_noise(11, 4, 0.25, 1.2, (0.06, 0.05, 0.03), planar_axis=1)
    ))
    ceiling = Material("ceiling", (0.88, 0.86, 0.82), tuple(value_noise(12, 4, 0.2, 0.9, (0.10, 0.10, 0.09),
                                                                         planar_axis=1)))
    room = Room(lo, hi, (
        wall("wall_west", (0.62, 0.66, 0.58), 2, 21),   # -x, stripes along z
        wall("wall_east", (0.70, 0.60, 0.50), 2, 22),   # +x
        floor,
        ceiling,
        wall("wall_north", (0.55, 0.62, 0.70), 0, 23),  # -z (straight ahead), stripes along x
        wall("wall_south", (0.68, 0.64, 0.55), 0, 24),  # +z
    ))

    wood = Material("table_wood", (0.45, 0.28, 0.15), tuple(
        [Wave((3.2, 0.0, 0.4), (0.07, 0.05, 0.03), 0.0), Wave((1.3, 0.9, -0.6), (0.05, 0.035, 0.02), 1.9)]
        + value_noise(31, 3, 0.5, 1.5, (0.05, 0.03, 0.02))
    ))
    cabinet = Material("cabinet_checker", (0.35, 0.42, 0.50), tuple(
        soft_checker(1, 2, 0.7, (0.16, 0.14, 0.10), 0.5, 0.2)
        + soft_checker(0, 1, 0.7, (0.10, 0.08, 0.06), 0.3, 0.9)
    ))
    fabric = Material("sofa_fabric", (0.55, 0.22, 0.20), tuple(
        stripes(0, 0.35, (0.06, 0.03, 0.03)) + value_noise(41, 4, 0.4, 1.8, (0.10, 0.06, 0.06))
    ))
    ball = Material("ball_stripes", (0.45, 0.50, 0.25), tuple(
        stripes(1, 0.25, (0.25, 0.20, 0.10)) + [Wave((1.6, 0.0, 1.6), (0.08, -0.05, 0.10), 0.5)]
    ))
    marble = Material("marble", (0.70, 0.70, 0.72), tuple(value_noise(51, 5, 1.0, 3.0, (0.20, 0.20, 0.18))))
    stool = Material("stool_rings", (0.30, 0.45, 0.40), tuple(stripes(1, 0.15, (0.10, 0.12, 0.10))
                                                               + value_noise(61, 3, 0.8, 2.0, (0.08, 0.06, 0.06))))
    lamp = Material("lamp_brass", (0.62, 0.50, 0.24), tuple(stripes(1, 0.3, (0.10, 0.08, 0.04))
                                                             + value_noise(71, 3, 0.8, 2.5, (0.06, 0.05, 0.02))))

    f = floor_y
    top_lo, top_hi = (-0.5, -0.70, -2.5), (1.1, -0.64, -1.6)
    leg = 0.07
    legs = []
    for ix, x in enumerate((top_lo[0] + 0.05, top_hi[0] - 0.05 - leg)):
        for iz, z in enumerate((top_lo[2] + 0.05, top_hi[2] - 0.05 - leg)):
            legs.append(Box(f"table_leg_{2 * ix + iz}", (x, f, z), (x + leg, top_lo[1], z + leg), wood))
    objects = [
        Box("table_top", top_lo, top_hi, wood),
        *legs,
        Box("cabinet", (-2.95, f, -3.3), (-2.45, 0.45, -1.9), cabinet),
        Box("sofa_seat", (-1.6, f, 1.75), (1.0, -0.95, 2.7), fabric),
        Box("sofa_back", (-1.6, -0.95, 2.42), (1.0, -0.30, 2.7), fabric),
        Box("sofa_arm_left", (-1.85, f, 1.75), (-1.6, -0.72, 2.7), fabric),
        Box("sofa_arm_right", (1.0, f, 1.75), (1.25, -0.72, 2.7), fabric),
        Sphere("ball_floor", (2.2, f + 0.32, -0.7), 0.32, ball),
        Sphere("ball_table", (0.65, top_hi[1] + 0.17, -2.05), 0.17, marble),
        Cylinder("stool", (-1.6, 0.15), 0.28, f, -0.95, stool),
        Cylinder("floor_lamp", (2.85, -3.35), 0.12, f, 0.85, lamp),
    ]
    lighting = Lighting(
        ambient=0.38,
        directional=(((0.35, 0.8, 0.45), 0.30),),
        point=(((0.6, 1.15, -0.9), 0.55, 2.6),),
    )
    return Scene("living_room", room, objects, lighting)


def _empty_room() -> Scene:
    """The living room's walls without furniture (handy for analytic tests)."""
    lr = _living_room()
    return Scene("empty_room", lr.room, [], lr.lighting)


def _cluttered_room() -> Scene:
    """A smaller room crowded with furniture 0.7-1.6 m from the centre (the inpainting benchmark scene).

    Floor-to-ceiling pillars, a thin screen, crates and balls close to the camera hide large parts of the walls and
    floor, so panoramas taken 0.5 m from the centre see several percent of their area that the centre never saw.
    Materials and lights are the living room's.
    """
    lr = _living_room()
    mat = {m.name: m for m in lr.room.materials}
    mat.update({o.material.name: o.material for o in lr.objects})
    floor_y, ceil_y = lr.room.lo[1], lr.room.hi[1]
    room = Room((-2.6, floor_y, -3.0), (2.9, ceil_y, 2.6), lr.room.materials)
    f = floor_y
    objects = [
        Cylinder("pillar_front", (0.0, -1.1), 0.2, f, ceil_y, mat["stool_rings"]),
        Cylinder("pillar_right", (1.1, 0.6), 0.18, f, ceil_y, mat["lamp_brass"]),
        Box("screen", (-0.9, -0.6, -1.45), (-0.3, 0.8, -1.35), mat["cabinet_checker"]),
        Box("shelf", (-1.5, f, -0.6), (-1.0, 0.6, 0.2), mat["table_wood"]),
        Box("crate", (0.55, f, -1.3), (1.05, -0.5, -0.8), mat["cabinet_checker"]),
        Box("chest", (-1.3, f, 0.9), (-0.8, 0.2, 1.3), mat["sofa_fabric"]),
        Sphere("ball_low", (-0.6, -0.2, 1.0), 0.3, mat["ball_stripes"]),
        Sphere("ball_high", (1.2, 0.3, -0.5), 0.2, mat["marble"]),
        Cylinder("stool", (0.3, 1.2), 0.25, f, -0.6, mat["stool_rings"]),
    ]
    return Scene("cluttered_room", room, objects, lr.lighting)



def _open_room() -> Scene:
    """The living room with an open door (east wall) and a window (north wall) onto a far, textured background at
    infinity: sky-like gradient above the horizon, ground-like bands below, smooth clouds (all in direction)."""
    lr = _living_room()
    lo, hi = lr.room.lo, lr.room.hi
    openings = (
        Opening("door_east", 1, (hi[0], lo[1], -1.7), (hi[0], 0.9, -0.2)),
        Opening("window_north", 4, (-2.3, -0.4, lo[2]), (-0.5, 1.0, lo[2])),
    )
    room = Room(lo, hi, lr.room.materials, lr.room.name, openings)
    # waves in the unit direction d (d_y = sin(latitude)): blue sky above, grey-brown ground below, horizon bands,
    # then smooth noise (clouds / far hills); frequencies in cycles per unit of d
    far = Material("far_background", (0.45, 0.55, 0.62), tuple(
        stripes(1, 4.0, (0.05, 0.12, 0.25), phase=-math.pi / 2)   # amp * sin(pi/2 d_y)
        + stripes(1, 0.5, (0.05, 0.06, 0.03), phase=0.4)
        + value_noise(81, 6, 1.0, 4.0, (0.18, 0.16, 0.12))
    ))
    return Scene("open_room", room, lr.objects, lr.lighting, far)


_SCENES = {"living_room": _living_room, "empty_room": _empty_room, "cluttered_room": _cluttered_room,
           "open_room": _open_room}
SCENE_NAMES = tuple(_SCENES)


def make_scene(name: str = "living_room") -> Scene:
    """Build a bundled scene by name (see ``SCENE_NAMES``)."""
    if name not in _SCENES:
        raise ValueError(f"unknown synthetic scene {name!r}; available: {', '.join(SCENE_NAMES)}")
    return _SCENES[name]()
