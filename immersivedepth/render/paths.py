"""Camera paths through the free space seen in the distance panorama.

Everything a single panorama observed is *star-shaped* around its centre: along direction
``d`` the space is empty up to the distance ``D(d)`` of the distance map. A position ``p`` is
therefore safe when ``|p| <= min(max_fraction * D_e(p/|p|), D_e(p/|p|) - margin)``, where
``D_e`` is the distance map eroded (an angular minimum filter) so the camera keeps clear of
thin structures. Path generators place key positions as fractions of ``D_e``, smooth them
(periodic cubic spline resampled by arc length, Gaussian-smoothed headings), and every path is
checked with :func:`validate_positions`: violations are clamped radially back into the free
region with a warning naming the poses, or (``on_violation="error"``) rejected.

Path kinds (``make_path``): ``tour`` (PERF-style loop through anchors on rings at 0.2/0.4/0.6 of
the wall distance), ``circle``, ``spiral``, ``forward`` (a walk from the centre towards the
most open direction) and ``file`` (a poses file or nerfstudio camera path, see ``poses.py``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from immersivedepth import sphere
from immersivedepth.config import from_mapping
from immersivedepth.errors import InputError
from immersivedepth.render.config import DEFAULT_FPS, PATH_KINDS, PathSpec
from immersivedepth.render.poses import CameraPose, load_poses_file, normalize_pose_type

__all__ = [
    "FreeSpace",
    "PathViolationError",
    "smooth_positions",
    "headings_from_positions",
    "poses_from_positions",
    "tour_positions",
    "circle_positions",
    "spiral_positions",
    "forward_positions",
    "validate_positions",
    "validate_poses",
    "make_path",
    "PATH_KINDS",
]

log = logging.getLogger(__name__)


class PathViolationError(InputError):
    """A camera pose leaves the scene bounds or enters geometry (with ``on_violation='error'``)."""


class FreeSpace:
    """Free-space model of a distance panorama centred at the world origin.

    ``distance`` ``(H, W)`` world units (invalid = 0 / non-finite; filled with the median valid
    distance). ``erode_deg`` is the angular radius of the minimum filter; ``margin`` (world
    units) and ``max_fraction`` bound how close to geometry a camera may go; ``bounds`` is an
    optional ``(min (3,), max (3,))`` box the camera must also stay inside (by ``margin``).
    """

    def __init__(self, distance: np.ndarray, *, erode_deg: float = 3.0, margin: float = 0.1,
                 max_fraction: float = 0.8, bounds=None):
        d = np.asarray(distance, dtype=np.float64)
        if d.ndim != 2 or d.shape[1] < 2 or d.shape[0] < 2:
            raise ValueError(f"distance map must be (H, W), got shape {d.shape}.")
        valid = np.isfinite(d) & (d > 0)
        if not valid.any():
            raise ValueError("distance map has no valid pixel (all <= 0 or non-finite); cannot plan a camera path.")
        d = np.where(valid, d, np.median(d[valid]))
        h, w = d.shape
        r = max(0, int(round(erode_deg / 180.0 * h)))
        if r > 0:
            d = ndimage.minimum_filter(d, size=(2 * r + 1, 2 * r + 1), mode=("nearest", "wrap"))
        if not 0.0 < max_fraction <= 1.0:
            raise ValueError(f"max_fraction must lie in (0, 1], got {max_fraction}.")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}.")
        self.eroded = d.astype(np.float32)
        self.margin = float(margin)
        self.max_fraction = float(max_fraction)
        self.bounds = None if bounds is None else (np.asarray(bounds[0], float), np.asarray(bounds[1], float))

    def wall_distance(self, dirs: np.ndarray) -> np.ndarray:
        """Eroded distance to geometry along unit directions ``(..., 3)`` -> ``(...)``."""
        return np.asarray(sphere.erp_sample_dirs(self.eroded, np.asarray(dirs, np.float64)), np.float64)

    def max_radius(self, dirs: np.ndarray) -> np.ndarray:
        """Largest safe distance from the centre along ``dirs`` ``(..., 3)`` -> ``(...)``."""
        de = self.wall_distance(dirs)
        return np.maximum(0.0, np.minimum(self.max_fraction * de, de - self.margin))

    def horizontal_radius(self, azimuth: np.ndarray, height: float = 0.0) -> np.ndarray:
        """Safe horizontal radius at azimuth(s) (radians, 0 = -z, toward +x) for a camera at ``height``."""
        az = np.asarray(azimuth, np.float64)
        d0 = sphere.lonlat_to_dir(az, np.zeros_like(az))
        r = self.max_radius(d0)
        if height:
            # the direction to (r, height) differs from horizontal; shrink until consistent (2 fixed-point steps)
            for _ in range(2):
                lat = np.arctan2(height, np.maximum(r, 1e-6))
                rr = self.max_radius(sphere.lonlat_to_dir(az, lat))
                r = np.sqrt(np.maximum(rr * rr - height * height, 0.0))
        return r

    def clamp(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clamp ``(N, 3)`` positions into the free region -> (clamped ``(N, 3)``, violated ``(N,)`` bool)."""
        p = np.asarray(positions, np.float64).reshape(-1, 3).copy()
        bad = np.zeros(len(p), bool)
        if self.bounds is not None:
            lo, hi = self.bounds[0] + self.margin, self.bounds[1] - self.margin
            q = np.clip(p, np.minimum(lo, 0.0), np.maximum(hi, 0.0))
            bad |= np.any(np.abs(q - p) > 1e-9, axis=1)
            p = q
        r = np.linalg.norm(p, axis=1)
        nz = r > 1e-9
        dirs = np.where(nz[:, None], p / np.where(nz, r, 1.0)[:, None], np.array([0.0, 0.0, -1.0]))
        rmax = self.max_radius(dirs)
        over = r > rmax + 1e-9
        bad |= over
        p[over] = dirs[over] * rmax[over, None]
        return p, bad


# --------------------------------------------------------------------------- smoothing / headings
def smooth_positions(points: np.ndarray, n: int, *, closed: bool) -> np.ndarray:
    """Cubic-spline through key points ``(K, 3)`` resampled to ``n`` positions equally spaced in arc length."""
    pts = np.asarray(points, np.float64)
    if len(pts) == 1 or n == 1:
        return np.repeat(pts[:1], n, axis=0)
    if closed:
        pts = np.concatenate([pts, pts[:1]], axis=0)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    pts = pts[keep]
    if len(pts) < 2:
        return np.repeat(pts[:1], n, axis=0)
    t = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    if closed and len(pts) >= 3 and np.allclose(pts[0], pts[-1]):
        spline = CubicSpline(t, pts, bc_type="periodic")
    else:
        spline = CubicSpline(t, pts, bc_type="natural")
    # arc-length reparametrisation on a fine grid
    fine = np.linspace(0.0, t[-1], 16 * max(n, len(pts)) + 1)
    fp = spline(fine)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(fp, axis=0), axis=1))])
    targets = np.linspace(0.0, s[-1], n, endpoint=not closed)
    return spline(np.interp(targets, s, fine))


def headings_from_positions(positions: np.ndarray, *, closed: bool, smooth_frames: float = 3.0,
                            fallback_yaw: float = 0.0) -> np.ndarray:
    """Smoothed yaw (radians, 0 = -z, toward +x) of the motion direction along ``(N, 3)`` positions -> ``(N,)``."""
    p = np.asarray(positions, np.float64)
    n = len(p)
    if n < 2:
        return np.full(n, fallback_yaw)
    if closed:
        tang = np.roll(p, -1, axis=0) - np.roll(p, 1, axis=0)
    else:
        tang = np.gradient(p, axis=0)
    speed = np.linalg.norm(tang[:, [0, 2]], axis=1)
    yaw = np.arctan2(tang[:, 0], -tang[:, 2])
    # where the camera does not move horizontally keep the last heading
    if not np.any(speed > 1e-9):
        return np.full(n, fallback_yaw)
    first = int(np.argmax(speed > 1e-9))
    last = yaw[first]
    for i in range(n):
        if speed[i] > 1e-9:
            last = yaw[i]
        else:
            yaw[i] = last
    yaw = np.unwrap(yaw)
    if smooth_frames > 0:
        if closed:
            turns = (yaw[-1] - yaw[0] + (yaw[0] - yaw[-1] + np.pi) % (2 * np.pi) - np.pi)  # total winding
            ramp = np.arange(n) * (turns / n)
            yaw = ndimage.gaussian_filter1d(yaw - ramp, smooth_frames, mode="wrap") + ramp
        else:
            yaw = ndimage.gaussian_filter1d(yaw, smooth_frames, mode="nearest")
    return yaw


def erp_yaw_rotation(yaw: float) -> np.ndarray:
    """Rotation ``(3, 3)`` turning an ERP's centre column (lon 0) toward longitude ``yaw``."""
    return sphere.rotation_about_axis((0.0, 1.0, 0.0), -float(yaw))


def poses_from_positions(positions: np.ndarray, *, pose_type: str = "equirectangular", width: int = 512,
                         height: int = 256, fov_deg: float = 90.0, heading: str = "auto", closed: bool = False,
                         smooth_frames: float = 3.0, pitch_deg: float = 0.0, look_at=None,
                         fallback_yaw: float = 0.0) -> list[CameraPose]:
    """Turn ``(N, 3)`` positions into poses.

    ``heading``: ``motion`` (look along the smoothed direction of travel), ``fixed`` (world-aligned
    panorama / perspective camera looking at ``fallback_yaw``), ``look_at`` (face the point
    ``look_at``), ``auto`` = ``fixed`` for equirectangular and ``motion`` for perspective.
    """
    pose_type = normalize_pose_type(pose_type)
    p = np.asarray(positions, np.float64)
    if heading == "auto":
        heading = "fixed" if pose_type == "equirectangular" else "motion"
    if heading == "motion":
        yaw = headings_from_positions(p, closed=closed, smooth_frames=smooth_frames, fallback_yaw=fallback_yaw)
    elif heading == "fixed":
        yaw = np.full(len(p), fallback_yaw)
    elif heading == "look_at":
        target = np.asarray((0.0, 0.0, 0.0) if look_at is None else look_at, np.float64)
        v = target - p
        yaw = np.unwrap(np.arctan2(v[:, 0], -v[:, 2]))
    else:
        raise ValueError(f"heading must be auto|motion|fixed|look_at, got {heading!r}.")
    poses = []
    for i, (pos, y) in enumerate(zip(p, yaw)):
        if pose_type == "equirectangular":
            rot = erp_yaw_rotation(y) if heading != "fixed" or fallback_yaw else np.eye(3)
        else:
            rot = sphere.yaw_pitch_roll(float(y), math.radians(pitch_deg))
        poses.append(CameraPose(position=pos, rotation=rot, type=pose_type, width=width, height=height,
                                fov_deg=fov_deg, name=f"{i:05d}"))
    return poses


# --------------------------------------------------------------------------- generators
def tour_positions(free: FreeSpace, n_frames: int, *, fractions: Sequence[float] = (0.2, 0.4, 0.6),
                   anchors_per_ring: int = 8, height: float = 0.0, seed: int = 0) -> np.ndarray:
    """PERF-style tour: anchors on rings at ``fractions`` of the safe horizontal radius, visited in
    azimuth order (radii alternating between rings), joined by a periodic spline -> ``(n_frames, 3)``."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}.")
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"tour fractions must lie in [0, 1], got {list(fractions)}.")
    rng = np.random.default_rng(seed)
    n_rings = len(fractions)
    m = max(3, int(anchors_per_ring)) * n_rings
    az = np.arange(m) * (2 * np.pi / m) + rng.uniform(0, 2 * np.pi / m)
    ring = np.arange(m) % n_rings
    # visit rings in a zig-zag 0,1,2,1,0,... so neighbouring anchors differ by one ring
    if n_rings > 1:
        cycle = list(range(n_rings)) + list(range(n_rings - 2, 0, -1))
        ring = np.asarray([cycle[i % len(cycle)] for i in range(m)])
    frac = np.asarray(fractions, np.float64)[ring]
    r = frac * free.horizontal_radius(az, height)
    keys = np.stack([r * np.sin(az), np.full(m, height), -r * np.cos(az)], axis=1)
    return smooth_positions(keys, n_frames, closed=True)


def circle_positions(n_frames: int, radius: float, *, height: float = 0.0, turns: float = 1.0,
                     start_deg: float = 0.0) -> np.ndarray:
    """Horizontal circle about the y axis -> ``(n_frames, 3)`` (not repeating the start)."""
    a = math.radians(start_deg) + np.arange(n_frames) * (2 * np.pi * turns / max(n_frames, 1))
    return np.stack([radius * np.sin(a), np.full(n_frames, height), -radius * np.cos(a)], axis=1)


def spiral_positions(n_frames: int, radius0: float, radius1: float, *, height0: float = 0.0, height1: float = 0.0,
                     turns: float = 2.0, start_deg: float = 0.0) -> np.ndarray:
    """Spiral from (radius0, height0) to (radius1, height1) over ``turns`` -> ``(n_frames, 3)``."""
    t = np.linspace(0.0, 1.0, n_frames)
    a = math.radians(start_deg) + t * 2 * np.pi * turns
    r = radius0 + (radius1 - radius0) * t
    y = height0 + (height1 - height0) * t
    return np.stack([r * np.sin(a), y, -r * np.cos(a)], axis=1)


def forward_positions(free: FreeSpace, n_frames: int, *, yaw_deg: float | None = None, fraction: float = 0.8,
                      height: float = 0.0) -> tuple[np.ndarray, float]:
    """Straight walk from the centre toward ``yaw_deg`` (default: the most open direction), ``fraction``
    of the safe radius -> (``(n_frames, 3)``, yaw radians)."""
    if yaw_deg is None:
        az = np.linspace(-np.pi, np.pi, 360, endpoint=False)
        yaw = float(az[np.argmax(free.horizontal_radius(az, height))])
    else:
        yaw = math.radians(yaw_deg)
    rmax = float(free.horizontal_radius(np.array([yaw]), height)[0]) * fraction
    t = np.linspace(0.0, 1.0, n_frames)[:, None]
    d = np.array([math.sin(yaw), 0.0, -math.cos(yaw)])
    return np.array([0.0, height, 0.0]) + t * rmax * d, yaw


# --------------------------------------------------------------------------- validation
def validate_positions(positions: np.ndarray, free: FreeSpace, *, on_violation: str = "clamp",
                       names: Sequence[str] | None = None, what: str = "camera path") -> np.ndarray:
    """Check ``(N, 3)`` positions against ``free``; clamp with a warning or raise :class:`PathViolationError`."""
    if on_violation not in ("clamp", "error"):
        raise ValueError(f"on_violation must be 'clamp' or 'error', got {on_violation!r}.")
    p = np.asarray(positions, np.float64).reshape(-1, 3)
    q, bad = free.clamp(p)
    if bad.any():
        idx = np.flatnonzero(bad)
        names = [f"#{i}" for i in range(len(p))] if names is None else list(names)
        i0 = int(idx[0])
        msg = (f"{what}: {len(idx)} of {len(p)} poses leave the scene bounds or come within {free.margin:g} of "
               f"geometry (first: pose {names[i0]} at {np.round(p[i0], 4).tolist()}, allowed up to "
               f"{np.round(q[i0], 4).tolist()})")
        if on_violation == "error":
            raise PathViolationError(msg + "; move the poses into free space or set render.on_violation=clamp.")
        warnings.warn(msg + "; clamped into free space.", stacklevel=2)
        log.warning(msg + "; clamped into free space.")
    return q


def validate_poses(poses: Sequence[CameraPose], free: FreeSpace, *, on_violation: str = "clamp",
                   what: str = "camera path") -> list[CameraPose]:
    """:func:`validate_positions` on poses -> new list with (possibly) clamped positions."""
    pos = np.stack([p.position for p in poses])
    q = validate_positions(pos, free, on_violation=on_violation, names=[p.name for p in poses], what=what)
    out = []
    for p, x in zip(poses, q):
        out.append(CameraPose(position=x, rotation=p.rotation, type=p.type, width=p.width, height=p.height,
                              fov_deg=p.fov_deg, name=p.name))
    return out


def make_path(spec: PathSpec | Mapping, free: FreeSpace | None, *,
              on_violation: str = "clamp") -> tuple[list[CameraPose], float]:
    """Build a named path from its config -> (poses, fps).

    ``spec``: a :class:`~immersivedepth.render.config.PathSpec` or a mapping of its keys (unknown keys are an
    error naming them); see that class for every key and default.
    """
    spec = from_mapping(PathSpec, spec, "render path")
    kind, n, fps = spec.kind, spec.n_frames, spec.fps or DEFAULT_FPS
    ptype = normalize_pose_type(spec.type, where=f"render path {spec.name!r}")
    width = spec.width
    height = spec.height or (256 if ptype == "equirectangular" else 512)
    common = dict(pose_type=ptype, width=width, height=height, fov_deg=spec.fov_deg, heading=spec.heading,
                  smooth_frames=spec.smooth_frames, pitch_deg=spec.pitch_deg)
    cam_y = spec.camera_height
    if kind == "file":
        poses, file_fps = load_poses_file(spec.file, default_width=width, default_height=height,
                                          default_fov_deg=spec.fov_deg)
        fps = float(spec.fps or file_fps or DEFAULT_FPS)
        if free is not None:
            poses = validate_poses(poses, free, on_violation=on_violation, what=f"camera path {spec.file}")
        return poses, fps
    if free is None:
        raise InputError(f"render path {kind!r} needs the distance map (depth/distance.npy) to stay in free space.")
    closed = False
    az = np.linspace(-np.pi, np.pi, 720, endpoint=False)
    r_min = float(np.min(free.horizontal_radius(az, cam_y)))
    fallback_yaw = 0.0
    if kind == "tour":
        pos = tour_positions(free, n, fractions=tuple(spec.fractions), anchors_per_ring=spec.anchors_per_ring,
                             height=cam_y, seed=spec.seed)
        closed = True
    elif kind == "circle":
        radius = spec.radius if spec.radius is not None else spec.radius_fraction * r_min
        turns = 1.0 if spec.turns is None else spec.turns
        pos = circle_positions(n, radius, height=cam_y, turns=turns)
        closed = float(turns).is_integer()
    elif kind == "spiral":
        f0, f1 = spec.radius_fractions
        y0, y1 = spec.heights or (cam_y, cam_y)
        pos = spiral_positions(n, f0 * r_min, f1 * r_min, height0=float(y0), height1=float(y1),
                               turns=2.0 if spec.turns is None else spec.turns)
    else:  # forward
        pos, fallback_yaw = forward_positions(free, n, yaw_deg=spec.yaw_deg, fraction=spec.fraction, height=cam_y)
        if common["heading"] == "auto" and ptype == "perspective":
            common["heading"] = "fixed"
    pos = validate_positions(pos, free, on_violation=on_violation, what=f"render path {kind!r}")
    poses = poses_from_positions(pos, closed=closed, fallback_yaw=fallback_yaw, **common)
    return poses, fps
