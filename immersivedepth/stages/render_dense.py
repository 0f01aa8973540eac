"""``mode=render_dense``: camera-path videos, poses-file panoramas, meshes and point clouds of a trained run.

Reads the run's newest field checkpoint (the training stage's, or a later stage's refined field) and
``<run>/depth/distance.npy``; writes::

    <run>/render/<path name>/video.mp4  video_distance.mp4  [frames/]  poses.json
    <run>/render/poses/<name>.png  <name>_distance.npy          (render.poses_file)
    <run>/export/mesh.glb mesh.ply mesh.obj                      (marching tetrahedra on the density)
    <run>/export/depth_mesh.*  points.ply                        (straight from the distance panorama)
    <run>/render/summary.json
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from immersivedepth.config import from_mapping
from immersivedepth.errors import RunError
from immersivedepth.io import atomic_path
from immersivedepth.render.config import RenderConfig, options_of
from immersivedepth.render.dense import distance_range_of, render_path, render_poses_to_dir
from immersivedepth.render.depth_mesh import DepthMeshOptions
from immersivedepth.render.frames import render_pose
from immersivedepth.render.mesh import FieldMeshOptions, export_mesh, field_mesh
from immersivedepth.render.paths import FreeSpace, make_path, validate_poses
from immersivedepth.render.poses import CameraPose, load_poses_file, save_poses_file
from immersivedepth.render.splat import SplatOptions
from immersivedepth.render.stage import export_depth_products, load_run_panorama
from immersivedepth.stages.base import RunContext, Stage, fingerprint
from immersivedepth.train.checkpoint import TRAIN_COMMAND, load_trained_field

__all__ = ["RenderDenseStage", "STAGE", "run_render_dense"]

LOG = logging.getLogger("immersivedepth.render")


def run_render_dense(run_dir, cfg, *, device="cpu", progress: bool = True, checkpoint: Path | None = None) -> dict:
    """Render a trained run (see the module docstring) -> summary dict (also ``render/summary.json``).

    ``cfg``: the ``render`` group (:class:`RenderConfig`, a mapping of its keys, or None for the defaults);
    ``checkpoint``: the field to render (default ``<run>/checkpoints/last.pt``).
    """
    cfg = from_mapping(RenderConfig, cfg, "render")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist; train a run first: {TRAIN_COMMAND}, "
                       f"then render it with mode=render_dense is_continue=true (same exp_name).")
    dist_path = run_dir / "depth" / "distance.npy"
    if not dist_path.is_file():
        raise RunError(f"{dist_path} is missing: the run has no depth stage output; run "
                       f"python perf_runner.py --config-name nerf mode=depth (or mode=all) first.")
    field, info = load_trained_field(run_dir, device=device, path=checkpoint)  # its error names the training command
    field_info = {"step": info["step"], "path": info["path"]}
    distance = np.load(dist_path).astype(np.float32)
    t0 = time.perf_counter()
    summary: dict = {"run_dir": str(run_dir), "paths": {}, "exports": {}}
    rc = cfg.render
    render_opts = dict(chunk=rc.chunk, near=rc.near, far=rc.far,
                       render_kwargs={"options": dict(rc.options)} if rc.options else None, device=device)
    lo, hi = (np.asarray(b.detach().cpu(), float) for b in field.bounds)
    fs = cfg.free_space
    free = FreeSpace(distance, erode_deg=fs.erode_deg, margin=fs.margin, max_fraction=fs.max_fraction, bounds=(lo, hi))
    vid = cfg.video
    drange = distance_range_of(distance)
    for spec in cfg.paths:
        poses, fps = make_path(spec, free, on_violation=cfg.on_violation)
        out = run_dir / "render" / spec.name
        frames = spec.frames_outputs if spec.frames_outputs is not None else vid.frames
        res = render_path(field, poses, out, fps=fps, videos=tuple(vid.outputs), frames=tuple(frames),
                          frame_formats=tuple(vid.frame_formats), distance_range=drange, cmap=vid.cmap,
                          log_distance=vid.log_distance, progress=progress, **render_opts)
        save_poses_file(out / "poses.json", poses, fps)
        summary["paths"][spec.name] = res
    if cfg.poses_file:
        pdef = cfg.poses_defaults
        poses, _ = load_poses_file(cfg.poses_file, default_width=pdef.width, default_height=pdef.height,
                                   default_fov_deg=pdef.fov_deg)
        poses = validate_poses(poses, free, on_violation=cfg.on_violation, what=f"poses file {cfg.poses_file}")
        summary["poses"] = render_poses_to_dir(field, poses, run_dir / "render" / "poses", progress=progress,
                                               **render_opts)
    ex = cfg.export
    formats = tuple(ex.formats)
    export_dir = run_dir / "export"
    if ex.field_mesh.enabled:
        mesh = field_mesh(field, options_of(FieldMeshOptions, ex.field_mesh), distance=distance, device=device,
                          progress=progress)
        summary["exports"]["mesh"] = {"files": [str(p) for p in export_mesh(mesh, export_dir, "mesh", formats)],
                                      "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                                      **{k: v for k, v in mesh.info.items() if k != "pixel_index"}}
    if ex.depth_mesh.enabled or ex.points.enabled or ex.splat.enabled:
        rgb = load_run_panorama(run_dir, cfg.image_path, distance.shape)
        if rgb is None:
            LOG.info("input panorama not found; colouring the depth mesh from the field seen at the centre")
            rgb = render_pose(field, CameraPose(position=np.zeros(3), width=distance.shape[1],
                                                height=distance.shape[0]), normals=False, **render_opts)["rgb"]
        normals = None
        npath = run_dir / "depth" / "normals.npy"
        if npath.is_file():
            n = np.load(npath)
            normals = n if n.shape == distance.shape + (3,) else None
        summary["exports"]["depth"] = export_depth_products(
            export_dir, rgb, distance, normals, depth_mesh_options=options_of(DepthMeshOptions, ex.depth_mesh),
            formats=formats, mesh=ex.depth_mesh.enabled, points=ex.points.enabled, points_stride=ex.points.stride,
            textured=ex.depth_mesh.textured, splat=ex.splat.enabled,
            splat_options=options_of(SplatOptions, ex.splat))
    summary["seconds"] = time.perf_counter() - t0
    summary["field"] = field_info
    (run_dir / "render").mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "render" / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1, default=str))
    return summary


class RenderDenseStage(Stage):
    name = "render_dense"
    order = 40
    config_group = "render"
    config_schema = RenderConfig
    standalone = True  # renders an existing trained run; mode=all runs it after the field stages
    rerun_when_requested = True

    def fingerprint(self, ctx: RunContext, upstream: str | None) -> str:
        return fingerprint("render", upstream, ctx.group("render"))

    def run(self, ctx: RunContext) -> dict:
        train = ctx.stage_record("train")
        if train.get("status") not in (None, "done"):
            what = (f"the training of {ctx.run_dir} did not finish (status: {train.get('status')}); resume it with "
                    "mode=train is_continue=true")
            if not bool(ctx.cfg.render.allow_unfinished):
                raise RunError(what + ", or pass render.allow_unfinished=true to render it as it is")
            LOG.warning("render_dense: %s; rendering it anyway (render.allow_unfinished=true)", what)
        return run_render_dense(ctx.run_dir, ctx.cfg.render, device=ctx.device, checkpoint=ctx.field_checkpoint())


STAGE = RenderDenseStage()
