"""The ``render_dense`` stage: camera-path videos, poses-file panoramas, meshes and point clouds.

Reads a trained run directory (``<run>/checkpoints`` via
:func:`immersivedepth.train.checkpoint.load_trained_field`, ``<run>/depth/distance.npy``) and writes::

    <run>/render/<path name>/video.mp4  video_distance.mp4  [frames/]  poses.json
    <run>/render/poses/<name>.png  <name>_distance.npy          (render.poses_file)
    <run>/export/mesh.glb mesh.ply mesh.obj                      (marching tetrahedra on the density)
    <run>/export/depth_mesh.glb depth_mesh.ply depth_mesh.obj    (straight from the distance panorama)
    <run>/export/points.ply                                      (coloured point cloud with normals)
    <run>/render/summary.json

:func:`export_depth_products` makes the last two groups right after the depth stage, with no field.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from immersivedepth.render.depth_mesh import DepthMeshOptions, depth_mesh, point_cloud
from immersivedepth.render.mesh import FieldMeshOptions, export_mesh, export_textured_mesh, field_mesh

__all__ = ["TRAIN_COMMAND", "run_render_dense", "export_depth_products", "load_run_panorama"]

log = logging.getLogger(__name__)

#: How a user makes a trained run (quoted in error messages).
TRAIN_COMMAND = ("python perf_runner.py --config-name nerf mode=train dataset.image_path=<panorama> "
                 "(or mode=all, which also runs the depth stage)")


def _get(cfg, key, default=None):
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _plain(x):
    """OmegaConf containers -> plain Python (no hard dependency on omegaconf)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, DictConfig | ListConfig):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return x


def _normals_for_points(distance: np.ndarray, mesh_normals_fallback):
    """World-frame normals ``(H, W, 3)`` of the distance map from the depth package if it provides them."""
    try:
        from immersivedepth.depth.normals import normals_from_distance
    except ImportError:
        return mesh_normals_fallback()
    n = np.asarray(normals_from_distance(distance), np.float32)
    return n if n.shape == distance.shape + (3,) else mesh_normals_fallback()


def export_depth_products(out_dir, rgb: np.ndarray | None, distance: np.ndarray, normals: np.ndarray | None = None,
                          *, depth_mesh_options: DepthMeshOptions | Mapping | None = None,
                          formats=("glb", "ply", "obj"), mesh: bool = True, points: bool = True,
                          points_stride: int = 1, textured: bool = True) -> dict:
    """Depth mesh (``depth_mesh.<fmt>``) and point cloud (``points.ply``) from a distance panorama, no field needed.

    ``rgb`` ``(H, W, 3)`` in [0, 1] (or None), ``distance`` ``(H, W)`` world units, ``normals`` ``(H, W, 3)``
    world-frame (None: ``depth.normals.normals_from_distance`` if available, else the depth mesh's vertex
    normals, and ``-ray`` where a pixel has no triangle). With ``textured`` and an ``rgb``, also
    ``depth_mesh_textured.obj/.mtl/.glb`` + ``depth_mesh_texture.png`` (the panorama as texture).
    Returns paths and counts.
    """
    from immersivedepth.io import write_ply

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = depth_mesh_options
    if opts is None or isinstance(opts, Mapping):
        opts = DepthMeshOptions.from_mapping(_plain(opts) or {})
    t0 = time.perf_counter()
    result: dict = {}
    dm = None
    if mesh or (points and normals is None):
        dm = depth_mesh(rgb, distance, opts)
    if mesh:
        result["depth_mesh"] = [str(p) for p in export_mesh(dm, out_dir, "depth_mesh", formats)]
        result["depth_mesh_faces"] = int(len(dm.faces))
        if textured and rgb is not None:
            result["depth_mesh_textured"] = [str(p) for p in export_textured_mesh(dm, rgb, out_dir, "depth_mesh")]
    if points:
        d = np.asarray(distance, np.float64)

        def from_mesh():
            # vertex normals of the full-resolution depth mesh, scattered back to pixels
            full = dm if opts.stride == 1 else depth_mesh(rgb, distance, DepthMeshOptions(
                max_depth_ratio=opts.max_depth_ratio, max_grazing_deg=opts.max_grazing_deg))
            from immersivedepth import sphere

            n = -sphere.erp_directions(*d.shape, np.float64)
            pix = full.info["pixel_index"]
            ok = pix >= 0
            n.reshape(-1, 3)[pix[ok]] = full.normals[ok]
            return n.astype(np.float32)

        nrm = normals if normals is not None else _normals_for_points(d, from_mesh)
        pts, cols, nn = point_cloud(rgb, d, nrm, stride=points_stride)
        p = out_dir / "points.ply"
        write_ply(p, pts, colors=cols, normals=nn)
        result["points"] = str(p)
        result["n_points"] = int(len(pts))
    result["seconds"] = time.perf_counter() - t0
    return result


def load_run_panorama(run_dir: Path, cfg, shape: tuple[int, int]) -> np.ndarray | None:
    """The run's input panorama ``(H, W, 3)`` resized to ``shape``: ``render.image_path``, else the run's
    ``config.yaml`` ``dataset.image_path``; None if neither is readable."""
    from immersivedepth.io import read_panorama

    cands = [_get(cfg, "image_path")]
    cfg_file = run_dir / "config.yaml"
    if cfg_file.is_file():
        try:
            from omegaconf import OmegaConf

            rc = OmegaConf.load(cfg_file)
            cands.append(OmegaConf.select(rc, "dataset.image_path"))
        except Exception as e:  # a broken config.yaml only loses the colours, say so
            log.warning("could not read dataset.image_path from %s: %s", cfg_file, e)
    for c in cands:
        if c and Path(c).is_file():
            img = read_panorama(c, allow_resample=True)
            if img.shape[:2] != tuple(shape):
                import cv2

                img = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
            return img.astype(np.float32)
    return None


def run_render_dense(run_dir, cfg: Mapping, *, device="cpu", progress: bool = True) -> dict:
    """Run the render_dense stage on a trained run (see module doc) -> summary dict (also ``render/summary.json``).

    ``cfg`` is the ``render`` config group (``configs/render/default.yaml``).
    """
    from immersivedepth.render.dense import distance_range_of, render_path, render_poses_to_dir
    from immersivedepth.render.paths import FreeSpace, make_path, validate_poses
    from immersivedepth.render.poses import load_poses_file, save_poses_file

    cfg = _plain(cfg) or {}
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; train a run first: {TRAIN_COMMAND}, "
                                f"then render it with mode=render_dense is_continue=true (same exp_name).")
    dist_path = run_dir / "depth" / "distance.npy"
    if not dist_path.is_file():
        raise FileNotFoundError(f"{dist_path} is missing: the run has no depth stage output; run "
                                f"python perf_runner.py --config-name nerf mode=depth (or mode=all) first.")
    from immersivedepth.train.checkpoint import load_trained_field

    field, field_info = load_trained_field(run_dir, device=device)  # its error names the training command
    if hasattr(field, "eval"):
        field.eval()
    distance = np.load(dist_path).astype(np.float32)
    t0 = time.perf_counter()
    summary: dict = {"run_dir": str(run_dir), "paths": {}, "exports": {}}
    rcfg = dict(_get(cfg, "render", {}) or {})
    ropts = rcfg.get("options") or None
    render_opts = dict(chunk=int(rcfg.get("chunk", 32768)), near=float(rcfg.get("near", 0.0)),
                       far=None if rcfg.get("far") is None else float(rcfg["far"]),
                       render_kwargs={"options": dict(ropts)} if ropts else None, device=device)
    on_violation = str(_get(cfg, "on_violation", "clamp"))
    fs = _get(cfg, "free_space", {}) or {}
    lo, hi = (np.asarray(b.detach().cpu() if hasattr(b, "detach") else b, float) for b in field.bounds)
    free = FreeSpace(distance, erode_deg=float(fs.get("erode_deg", 3.0)), margin=float(fs.get("margin", 0.1)),
                     max_fraction=float(fs.get("max_fraction", 0.8)), bounds=(lo, hi))
    vid = _get(cfg, "video", {}) or {}
    drange = distance_range_of(distance)
    for spec in _get(cfg, "paths", []) or []:
        spec = dict(spec)
        name = str(spec.get("name", spec.get("kind", "tour")))
        spec.setdefault("kind", name)
        poses, fps = make_path(spec, free, on_violation=on_violation)
        out = run_dir / "render" / name
        res = render_path(field, poses, out, fps=fps, videos=tuple(vid.get("outputs", ("rgb", "distance"))),
                          frames=tuple(spec.get("frames_outputs", vid.get("frames", ())) or ()),
                          frame_formats=tuple(vid.get("frame_formats", ("png",))), distance_range=drange,
                          cmap=str(vid.get("cmap", "turbo")), log_distance=bool(vid.get("log_distance", False)),
                          progress=progress, **render_opts)
        save_poses_file(out / "poses.json", poses, fps)
        summary["paths"][name] = res
    poses_file = _get(cfg, "poses_file")
    if poses_file:
        pdef = _get(cfg, "poses_defaults", {}) or {}
        poses, _ = load_poses_file(poses_file, default_width=int(pdef.get("width", 1024)),
                                   default_height=int(pdef.get("height", 512)),
                                   default_fov_deg=float(pdef.get("fov_deg", 90.0)))
        poses = validate_poses(poses, free, on_violation=on_violation, what=f"poses file {poses_file}")
        summary["poses"] = render_poses_to_dir(field, poses, run_dir / "render" / "poses", progress=progress,
                                               **render_opts)
    ex = _get(cfg, "export", {}) or {}
    formats = tuple(ex.get("formats", ("glb", "ply", "obj")))
    export_dir = run_dir / "export"
    fm = dict(ex.get("field_mesh", {}) or {})
    if fm.get("enabled", True):
        mesh = field_mesh(field, FieldMeshOptions.from_mapping(fm), distance=distance, device=device,
                          progress=progress)
        summary["exports"]["mesh"] = {"files": [str(p) for p in export_mesh(mesh, export_dir, "mesh", formats)],
                                      "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                                      **{k: v for k, v in mesh.info.items() if k != "pixel_index"}}
    dmcfg = dict(ex.get("depth_mesh", {}) or {})
    ptcfg = dict(ex.get("points", {}) or {})
    want_dm, want_pts = dmcfg.get("enabled", True), ptcfg.get("enabled", True)
    if want_dm or want_pts:
        rgb = load_run_panorama(run_dir, cfg, distance.shape)
        if rgb is None:
            from immersivedepth.render.frames import render_pose
            from immersivedepth.render.poses import CameraPose

            log.info("input panorama not found; colouring the depth mesh from the field seen at the centre")
            rgb = render_pose(field, CameraPose(position=np.zeros(3), width=distance.shape[1],
                                                height=distance.shape[0]), normals=False, **render_opts)["rgb"]
        normals = None
        npath = run_dir / "depth" / "normals.npy"
        if npath.is_file():
            n = np.load(npath)
            normals = n if n.shape == distance.shape + (3,) else None
        summary["exports"]["depth"] = export_depth_products(
            export_dir, rgb, distance, normals,
            depth_mesh_options={k: v for k, v in dmcfg.items() if k not in ("enabled", "textured")},
            formats=formats, mesh=bool(want_dm), points=bool(want_pts), points_stride=int(ptcfg.get("stride", 1)),
            textured=bool(dmcfg.get("textured", True)))
    summary["seconds"] = time.perf_counter() - t0
    summary["field"] = {k: v for k, v in (field_info or {}).items() if isinstance(v, str | int | float | bool)}
    from immersivedepth.io import atomic_path

    (run_dir / "render").mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "render" / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1, default=str))
    return summary
