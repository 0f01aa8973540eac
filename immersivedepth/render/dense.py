"""Render camera paths to videos / frames, and poses-file panoramas for evaluation.

``render_path`` renders every pose once (chunked rays), streams the pictures into H.264 videos
(``video.mp4`` RGB, ``video_distance.mp4`` colourised distance, optionally ``video_normal.mp4`` /
``video_opacity.mp4``) and optionally per-frame files (``frames/rgb_00000.png``,
``frames/distance_00000.png`` / ``.exr`` raw distance, ...). Videos are written through
:class:`immersivedepth.io.VideoWriter`: an interrupted render leaves no (half-written) video.
The distance colour range is fixed for the whole path (from the distance panorama when given)
so the video does not flicker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from immersivedepth.io import VideoWriter, atomic_path, write_distance, write_exr, write_image
from immersivedepth.render.frames import render_pose, visualize
from immersivedepth.render.poses import CameraPose

__all__ = ["OUTPUT_KINDS", "video_name", "distance_range_of", "render_path", "render_poses_to_dir"]

OUTPUT_KINDS = ("rgb", "distance", "normal", "opacity")


def video_name(kind: str) -> str:
    return "video.mp4" if kind == "rgb" else f"video_{kind}.mp4"


def distance_range_of(distance: np.ndarray | None, percentiles: tuple[float, float] = (1.0, 99.0)):
    """``(vmin, vmax)`` colour range from a distance map ``(H, W)`` (valid pixels), or None."""
    if distance is None:
        return None
    d = np.asarray(distance, np.float64)
    v = d[np.isfinite(d) & (d > 0)]
    if v.size == 0:
        return None
    lo, hi = np.percentile(v, percentiles)
    return float(lo), float(max(hi, lo * 1.001 + 1e-9))


def _check_kinds(kinds: Sequence[str], what: str):
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad:
        raise ValueError(f"{what}: unknown output(s) {bad}; choose from {list(OUTPUT_KINDS)}.")


def render_path(field, poses: Sequence[CameraPose], out_dir, *, fps: float = 30.0,
                videos: Sequence[str] = ("rgb", "distance"), frames: Sequence[str] = (),
                frame_formats: Sequence[str] = ("png",), distance_range: tuple[float, float] | None = None,
                cmap: str = "turbo", log_distance: bool = False, renderer: Callable | None = None,
                chunk: int = 32768, near: float = 0.0, far: float | None = None, min_opacity: float = 0.5,
                render_kwargs: Mapping | None = None, device="cpu", progress: bool = True) -> dict:
    """Render ``poses`` into ``out_dir`` -> summary dict (``frames``, ``videos`` paths, ``seconds``, ``fps_render``).

    ``videos``/``frames``: which outputs (rgb, distance, normal, opacity) to encode / save per frame;
    ``frame_formats``: ``png`` (pictures) and/or ``exr`` (raw float distance, rgb, normal).
    """
    _check_kinds(videos, "render videos")
    _check_kinds(frames, "render frames")
    bad = [f for f in frame_formats if f not in ("png", "exr")]
    if bad:
        raise ValueError(f"render frame_formats: unknown {bad}; use png and/or exr.")
    if not poses:
        raise ValueError("render_path: no poses to render.")
    sizes = {(p.height, p.width) for p in poses}
    if videos and len(sizes) > 1:
        raise ValueError(f"render_path: all poses of a video need one size, got {sorted(sizes)}.")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if frames:
        (out_dir / "frames").mkdir(exist_ok=True)
    need_normals = "normal" in videos or "normal" in frames
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(VideoWriter(out_dir / video_name(k), fps=fps)) for k in videos}
        for i, pose in enumerate(tqdm(poses, desc=f"render {out_dir.name}", unit="frame",
                                      disable=not progress or None)):
            fr = render_pose(field, pose, renderer=renderer, chunk=chunk, near=near, far=far, normals=need_normals,
                             min_opacity=min_opacity, render_kwargs=render_kwargs, device=device)
            pics = {k: visualize(fr, k, distance_range=distance_range, cmap=cmap, log_distance=log_distance,
                                 min_opacity=min_opacity) for k in set(videos) | set(frames)}
            for k, w in writers.items():
                w.write(pics[k])
            for k in frames:
                stem = out_dir / "frames" / f"{k}_{i:05d}"
                if "png" in frame_formats:
                    write_image(stem.with_suffix(".png"), pics[k])
                if "exr" in frame_formats:
                    if k == "distance":
                        write_distance(stem.with_suffix(".exr"), fr["distance"])
                    elif k in ("rgb", "normal"):
                        write_exr(stem.with_suffix(".exr"), fr[k].astype(np.float32))
                    else:
                        write_exr(stem.with_suffix(".exr"), fr["opacity"].astype(np.float32))
    secs = time.perf_counter() - t0
    return {"frames": len(poses), "size": [poses[0].width, poses[0].height], "type": poses[0].type,
            "videos": {k: str(out_dir / video_name(k)) for k in videos}, "seconds": secs,
            "fps_render": len(poses) / max(secs, 1e-9), "fps": fps}


def render_poses_to_dir(field, poses: Sequence[CameraPose], out_dir, *, renderer: Callable | None = None,
                        chunk: int = 32768, near: float = 0.0, far: float | None = None,
                        render_kwargs: Mapping | None = None, device="cpu", progress: bool = True) -> dict:
    """Render each pose to ``<out_dir>/<name>.png`` (RGB), ``<name>_distance.npy`` (float32 world units) and
    ``<name>_opacity.npy`` (float32 accumulated opacity in [0, 1]: below 0.5 the field has nothing there, a hole).

    Returns ``{name: {"rgb": path, "distance": path, "opacity": path}}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for pose in tqdm(poses, desc="render poses", unit="pose", disable=not progress or None):
        fr = render_pose(field, pose, renderer=renderer, chunk=chunk, near=near, far=far, normals=False,
                         render_kwargs=render_kwargs, device=device)
        rgb_p, dist_p = out_dir / f"{pose.name}.png", out_dir / f"{pose.name}_distance.npy"
        opa_p = out_dir / f"{pose.name}_opacity.npy"
        write_image(rgb_p, fr["rgb"])
        write_distance(dist_p, fr["distance"])
        with atomic_path(opa_p) as tmp, open(tmp, "wb") as f:
            np.save(f, fr["opacity"].astype(np.float32))
        written[pose.name] = {"rgb": str(rgb_p), "distance": str(dist_p), "opacity": str(opa_p)}
    return written
