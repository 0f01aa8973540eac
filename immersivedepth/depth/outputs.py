"""Files of the depth stage (``<run>/depth/``), all written atomically through :mod:`immersivedepth.io`.

Encoding of ``distance.npy`` / ``distance.exr``: a finite value > 0 is a distance (world units); ``0`` is
"unknown" (an invalid reference pixel: sensor hole, window, open door), ``+inf`` is "far" (the depth networks saw
sky or something far beyond the scene). Every reader treats both as "no distance" (``np.isfinite(d) & (d > 0)``
is the valid mask): confidence 0, no point, no mesh triangle, colour-only training onto the field's background.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from immersivedepth import io
from immersivedepth.depth.normals import distance_to_points

__all__ = ["DEPTH_FILES", "write_depth_outputs", "depth_point_cloud", "far_fractions"]

LOG = logging.getLogger("immersivedepth.depth")

DEPTH_FILES = (
    "distance.npy", "distance.exr", "distance.png", "normals.npy", "normals.png", "confidence.npy", "points.ply",
)


def depth_point_cloud(rgb: np.ndarray | None, distance: np.ndarray, normals: np.ndarray | None = None, *,
                      point_stride: int = 2):
    """Coloured point cloud of a distance panorama: the one implementation (``points.ply`` of the depth stage and
    of the render export).

    ``rgb`` ``(H, W, 3)`` float in [0, 1] or None; ``distance`` ``(H, W)`` world units (non-finite or <= 0 =
    invalid); ``normals`` ``(H, W, 3)`` or None. Keeps every ``point_stride``-th pixel along rows and columns
    (from pixel (0, 0)) and drops invalid ones.
    Returns points ``(N, 3)`` float32 (``distance * dir``), colours ``(N, 3)`` float32 or None, normals ``(N, 3)``
    float32 or None.
    """
    if point_stride < 1:
        raise ValueError(f"point_stride must be >= 1, got {point_stride}")
    d = np.asarray(distance, np.float64)
    if d.ndim != 2:
        raise ValueError(f"distance must be an (H, W) map, got shape {d.shape}")
    keep = (slice(None, None, point_stride), slice(None, None, point_stride))
    ds = d[keep]
    valid = np.isfinite(ds) & (ds > 0)
    pts = distance_to_points(np.where(np.isfinite(d), d, 0.0))[keep][valid]
    col = None if rgb is None else np.asarray(rgb, np.float32)[..., :3][keep][valid]
    nrm = None if normals is None else np.asarray(normals, np.float32)[keep][valid]
    return pts.astype(np.float32), col, nrm


def far_fractions(distance: np.ndarray) -> dict[str, float]:
    """Fractions of the panorama ``(H, W)`` that are ``unknown`` (0 / NaN / <= 0) and ``far`` (+inf), and their
    sum ``no_distance`` (plain pixel counts, as the training samples pixels)."""
    d = np.asarray(distance, np.float64)
    far = np.isposinf(d)
    unknown = ~far & ~(np.isfinite(d) & (d > 0))
    return {"unknown": float(unknown.mean()), "far": float(far.mean()), "no_distance": float((far | unknown).mean())}


def write_depth_outputs(out_dir, rgb: np.ndarray, distance: np.ndarray, normals: np.ndarray,
                        confidence: np.ndarray, *, point_stride: int = 2) -> dict[str, Path]:
    """Write :data:`DEPTH_FILES` into ``out_dir`` and return ``{name: path}``.

    ``rgb`` ``(H, W, 3)`` float [0, 1]; ``distance`` ``(H, W)`` world units (0 = unknown, +inf = far); ``normals``
    ``(H, W, 3)``; ``confidence`` ``(H, W)`` in [0, 1]. ``points.ply`` holds every ``point_stride``-th valid
    pixel with its colour and normal.
    """
    out = Path(out_dir)
    distance = np.asarray(distance, np.float32)
    if distance.ndim != 2:
        raise ValueError(f"write_depth_outputs: distance has shape {distance.shape}; expected (H, W)")
    hw = distance.shape
    for name, arr, shape in (("rgb", rgb, hw + (3,)), ("normals", normals, hw + (3,)), ("confidence", confidence, hw)):
        if np.shape(arr) != shape:
            raise ValueError(f"write_depth_outputs: {name} has shape {np.shape(arr)}; expected {shape}")
    fr = far_fractions(distance)
    LOG.info("depth: %.1f%% of the panorama has no distance (%.1f%% unknown = 0, %.1f%% far = +inf); treated as far: "
             "colour-only training onto the background, left out of meshes and point clouds",
             100 * fr["no_distance"], 100 * fr["unknown"], 100 * fr["far"])
    out.mkdir(parents=True, exist_ok=True)
    paths = {n: out / n for n in DEPTH_FILES}
    io.write_distance(paths["distance.npy"], distance)
    io.write_distance(paths["distance.exr"], distance)
    io.write_distance(paths["distance.png"], distance, log=True)
    n32 = np.asarray(normals, np.float32)
    with io.atomic_path(paths["normals.npy"]) as tmp, open(tmp, "wb") as f:
        np.save(f, n32)
    nvalid = np.linalg.norm(n32, axis=-1, keepdims=True) > 0
    io.write_image(paths["normals.png"], np.where(nvalid, (n32 + 1.0) * 0.5, 0.0))
    with io.atomic_path(paths["confidence.npy"]) as tmp, open(tmp, "wb") as f:
        conf = np.where(np.isfinite(distance) & (distance > 0), np.asarray(confidence, np.float32), 0.0)
        np.save(f, np.clip(conf, 0.0, 1.0).astype(np.float32))
    pts, col, nrm = depth_point_cloud(rgb, distance, n32, point_stride=point_stride)
    io.write_ply(paths["points.ply"], pts, colors=col, normals=nrm)
    return paths
