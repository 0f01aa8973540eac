"""Tangent tiles of an equirectangular panorama: cameras, anti-aliased extraction, coverage geometry.

A tile set is one :class:`~immersivedepth.sphere.TangentCamera` per face of the (optionally subdivided)
icosahedron, optionally repeated for several fields of view (PERF uses 3 fovs per face). Every tile
looks at its face centre from the sphere centre; OpenCV axes (x right, y down, z forward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from immersivedepth import sphere

__all__ = [
    "make_tile_cameras",
    "antialias_factor",
    "extract_tiles",
    "tile_erp_window",
    "border_weight",
    "fibonacci_sphere",
]


def make_tile_cameras(
    size: int | tuple[int, int],
    level: int = 0,
    padding: float = 0.3,
    fov_deg: float | Sequence[float] | None = None,
) -> list[sphere.TangentCamera]:
    """Tangent cameras for ``20 * 4**level`` faces times ``len(fov_deg)`` fields of view.

    ``size``: ``S`` or ``(H, W)`` pixels. ``fov_deg``: ``None`` (face extent times ``1 + padding``),
    one angle, or a list of angles (one full tile set per angle, indices run on across the sets).
    """
    if isinstance(size, int | np.integer):
        size = (int(size), int(size))
    h, w = int(size[0]), int(size[1])
    if h < 8 or w < 8:
        raise ValueError(f"tile size must be at least 8x8 pixels, got {h}x{w}")
    if fov_deg is None or isinstance(fov_deg, int | float):
        fovs: list[float | None] = [None if fov_deg is None else float(fov_deg)]
    else:
        fovs = [float(f) for f in fov_deg]
        if not fovs:
            raise ValueError("tiles.fov_deg is an empty list; give null, one angle or a list of angles")
    cams: list[sphere.TangentCamera] = []
    for fov in fovs:
        for cam in sphere.tangent_cameras((h, w), level=level, padding=padding, fov_deg=fov):
            cams.append(sphere.TangentCamera(R=cam.R, K=cam.K, height=h, width=w, index=len(cams)))
    return cams


def antialias_factor(camera: sphere.TangentCamera, erp_height: int, erp_width: int, max_factor: int = 4) -> int:
    """Supersampling factor so that a tile pixel averages every ERP pixel it covers.

    A tile pixel at the tile centre spans ``1/fx`` radians, an ERP pixel ``2*pi/W``; when the tile is
    coarser (downsampling) each tile pixel averages ``ceil(ratio)**2`` bilinear samples.
    """
    tile_px = 1.0 / float(camera.K[0, 0])
    erp_px = 2.0 * math.pi / erp_width
    return int(min(max_factor, max(1, math.ceil(tile_px / erp_px - 1e-6))))


def extract_tiles(
    erp: np.ndarray, cameras: Sequence[sphere.TangentCamera], *, antialias: bool = True, max_supersample: int = 4
) -> np.ndarray:
    """Perspective tiles of an ERP image: ``(H, W, C)`` float -> ``(N, h, w, C)`` float32.

    With ``antialias`` the ERP is box-filtered by supersampling when the tile is coarser than the ERP.
    """
    erp = np.asarray(erp, dtype=np.float32)
    if erp.ndim != 3:
        raise ValueError(f"extract_tiles expects an (H, W, C) image, got shape {erp.shape}")
    out = []
    for cam in cameras:
        s = antialias_factor(cam, erp.shape[0], erp.shape[1], max_supersample) if antialias else 1
        out.append(sphere.tangent_image_from_erp(erp, cam, supersample=s).astype(np.float32))
    return np.stack(out)


def tile_erp_window(camera: sphere.TangentCamera, erp_height: int, erp_width: int, margin: int = 2):
    """ERP rows ``(r0, r1)`` (slice) and column indices ``(n,)`` (wrapped) that contain the tile's footprint.

    Built from the lon/lat of rays along the tile border; a tile containing a pole takes every column
    from that pole down/up to its border's extreme latitude.
    """
    h, w = camera.height, camera.width
    n = 64
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([t * w, np.full(n, w), t[::-1] * w, np.zeros(n)])
    ys = np.concatenate([np.zeros(n), t * h, np.full(n, h), t[::-1] * h])
    pix = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    d = pix @ np.linalg.inv(camera.K).T @ camera.R.T
    lon, lat = sphere.dir_to_lonlat(d)
    _, _, north_in = camera.project(np.array([0.0, 1.0, 0.0]))
    _, _, south_in = camera.project(np.array([0.0, -1.0, 0.0]))
    _, v_lo = sphere.lonlat_to_pixel(0.0, float(lat.max()), erp_width, erp_height)
    _, v_hi = sphere.lonlat_to_pixel(0.0, float(lat.min()), erp_width, erp_height)
    r0 = 0 if north_in else max(0, int(math.floor(v_lo)) - margin)
    r1 = erp_height if south_in else min(erp_height, int(math.ceil(v_hi)) + 1 + margin)
    if north_in or south_in:
        cols = np.arange(erp_width)
    else:
        lon_c, _ = sphere.dir_to_lonlat(camera.forward)
        rel = (lon - lon_c + math.pi) % (2 * math.pi) - math.pi
        u_lo = (lon_c + rel.min() + math.pi) / (2 * math.pi) * erp_width - 0.5
        u_hi = (lon_c + rel.max() + math.pi) / (2 * math.pi) * erp_width - 0.5
        c0, c1 = int(math.floor(u_lo)) - margin, int(math.ceil(u_hi)) + 1 + margin
        if c1 - c0 >= erp_width:
            cols = np.arange(erp_width)
        else:
            cols = np.arange(c0, c1) % erp_width
    return (r0, r1), cols


def border_weight(height: int, width: int, power: float = 2.0) -> np.ndarray:
    """Blending weight ``(H, W)`` float32 of a tile: 1 at the centre, falling to 0 at the border.

    ``w = (bx * by) ** power`` with ``bx = 1 - |2 (x + 0.5) / W - 1|`` (the same for rows): continuous,
    zero on the tile's edge, so blended maps have no jump where a tile ends. ``power = 0``: all ones.
    """
    if power == 0:
        return np.ones((height, width), np.float32)
    bx = 1.0 - np.abs(2.0 * (np.arange(width) + 0.5) / width - 1.0)
    by = 1.0 - np.abs(2.0 * (np.arange(height) + 0.5) / height - 1.0)
    return (np.outer(by, bx) ** power).astype(np.float32)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` near-uniform unit directions ``(n, 3)`` (Fibonacci lattice), deterministic."""
    if n < 1:
        raise ValueError(f"number of sphere samples must be >= 1, got {n}")
    i = np.arange(n, dtype=np.float64) + 0.5
    y = 1.0 - 2.0 * i / n
    r = np.sqrt(np.maximum(0.0, 1.0 - y * y))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.sin(phi), y, -r * np.cos(phi)], axis=-1)
