"""Products made straight from a distance panorama, no field needed: the depth mesh (plain and textured), the
point cloud and the Gaussian splat (:func:`export_depth_products`), and the run's input panorama for their colours
(:func:`load_run_panorama`).
The ``render_dense`` stage (:mod:`immersivedepth.stages.render_dense`) calls them after the field's products.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
from omegaconf import OmegaConf

from immersivedepth.config import to_plain
from immersivedepth.depth.normals import normals_from_distance
from immersivedepth.io import read_panorama, write_ply
from immersivedepth.render.depth_mesh import DepthMeshOptions, depth_mesh, point_cloud
from immersivedepth.render.mesh import export_mesh, export_textured_mesh
from immersivedepth.render.splat import SplatOptions, export_splat

__all__ = ["export_depth_products", "load_run_panorama"]

log = logging.getLogger(__name__)

def export_depth_products(out_dir, rgb: np.ndarray | None, distance: np.ndarray, normals: np.ndarray | None = None,
                          *, depth_mesh_options: DepthMeshOptions | Mapping | None = None,
                          formats=("glb", "ply", "obj"), mesh: bool = True, points: bool = True,
                          points_stride: int = 1, textured: bool = True, splat: bool = True,
                          splat_options: SplatOptions | None = None) -> dict:
    """Depth mesh (``depth_mesh.<fmt>``) and point cloud (``points.ply``) from a distance panorama, no field needed.

    ``rgb`` ``(H, W, 3)`` in [0, 1] (or None), ``distance`` ``(H, W)`` world units, ``normals`` ``(H, W, 3)``
    world-frame (None: :func:`~immersivedepth.depth.normals.normals_from_distance`). With ``textured`` and an
    ``rgb``, also ``depth_mesh_textured.obj/.mtl/.glb`` + ``depth_mesh_texture.png`` (the panorama as texture).
    With ``splat``, also ``scene_splat.ply`` (:mod:`immersivedepth.render.splat`; ``splat_options`` None: defaults).
    Returns paths and counts.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = depth_mesh_options
    if opts is None or isinstance(opts, Mapping):
        opts = DepthMeshOptions.from_mapping(to_plain(opts) or {})
    t0 = time.perf_counter()
    result: dict = {}
    dm = None
    if mesh:
        dm = depth_mesh(rgb, distance, opts)
    if mesh:
        result["depth_mesh"] = [str(p) for p in export_mesh(dm, out_dir, "depth_mesh", formats)]
        result["depth_mesh_faces"] = int(len(dm.faces))
        if textured and rgb is not None:
            result["depth_mesh_textured"] = [str(p) for p in export_textured_mesh(dm, rgb, out_dir, "depth_mesh")]
    if points:
        d = np.asarray(distance, np.float64)
        nrm = normals if normals is not None else normals_from_distance(d)
        pts, cols, nn = point_cloud(rgb, d, nrm, stride=points_stride)
        p = out_dir / "points.ply"
        write_ply(p, pts, colors=cols, normals=nn)
        result["points"] = str(p)
        result["n_points"] = int(len(pts))
    if splat:
        result.update(export_splat(out_dir / "scene_splat.ply", rgb, distance, splat_options))
    result["seconds"] = time.perf_counter() - t0
    return result


def load_run_panorama(run_dir: Path, image_path: str | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The run's input panorama ``(H, W, 3)`` resized to ``shape``: ``image_path`` (``render.image_path``), else the
    run's ``config.yaml`` ``dataset.image_path``; None if neither is readable."""
    cands = [image_path]
    cfg_file = run_dir / "config.yaml"
    if cfg_file.is_file():
        try:
            rc = OmegaConf.load(cfg_file)
            cands.append(OmegaConf.select(rc, "dataset.image_path"))
        except Exception as e:  # a broken config.yaml only loses the colours, say so
            log.warning("could not read dataset.image_path from %s: %s", cfg_file, e)
    for c in cands:
        if c and Path(c).is_file():
            img = read_panorama(c, allow_resample=True)
            if img.shape[:2] != tuple(shape):
                img = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
            return img.astype(np.float32)
    return None
