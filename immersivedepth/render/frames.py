"""Render one camera pose from a radiance field: RGB, distance, opacity and normals.

Rays are evaluated in chunks of ``chunk`` rays (memory stays bounded at any resolution) through
``renderer(field, origins, dirs, near=..., far=..., **render_kwargs)`` — by default
:func:`immersivedepth.field.renderer.render_rays`. Normals come from the renderer when it returns
``normal``; otherwise they are the normalised negative density gradient ``-grad sigma`` (central
differences, step ``normal_eps`` world units) at the expected hit point ``o + distance * d`` of
rays whose opacity exceeds ``min_opacity`` (zero elsewhere). Normals point from dense into free
space, in world axes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import numpy as np
import torch

from immersivedepth.field.normals import density_normals
from immersivedepth.field.renderer import render_rays
from immersivedepth.io import colorize
from immersivedepth.render.poses import CameraPose, pose_rays

__all__ = [
    "default_renderer",
    "far_for_position",
    "density_normals",
    "render_rays_chunked",
    "render_pose",
    "visualize",
]


def default_renderer() -> Callable:
    """The project's volume renderer ``immersivedepth.field.renderer.render_rays``."""
    return render_rays


def field_bounds(field) -> tuple[np.ndarray, np.ndarray]:
    """``field.bounds`` as two float64 ``(3,)`` arrays."""
    b = getattr(field, "bounds", None)
    if b is None:
        raise ValueError(f"field {type(field).__name__} has no .bounds (min, max); cannot bound the rays.")
    lo, hi = (torch.as_tensor(x).detach().cpu().double().numpy().reshape(3) for x in b)
    return lo, hi


def far_for_position(field, position: np.ndarray) -> float:
    """Farthest distance from ``position`` ``(3,)`` to a corner of the field's box (a safe ``far``)."""
    lo, hi = field_bounds(field)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    return float(np.max(np.linalg.norm(corners - np.asarray(position, float), axis=1)))


@torch.no_grad()
def render_rays_chunked(field, origins: np.ndarray, dirs: np.ndarray, *, renderer: Callable | None = None,
                        chunk: int = 32768, near: float = 0.0, far: float | None = None, normals: bool = True,
                        normal_eps: float | None = None, min_opacity: float = 0.5, device="cpu",
                        render_kwargs: Mapping | None = None) -> dict[str, np.ndarray]:
    """Render ``N`` rays (``origins``, ``dirs`` ``(N, 3)``) in chunks.

    Returns numpy float32: ``rgb`` ``(N, 3)``, ``distance`` ``(N,)``, ``opacity`` ``(N,)`` and, if
    ``normals``, ``normal`` ``(N, 3)``.
    """
    renderer = renderer or default_renderer()
    if chunk < 1:
        raise ValueError(f"render chunk must be >= 1 rays, got {chunk}.")
    o_all = np.asarray(origins, np.float32).reshape(-1, 3)
    d_all = np.asarray(dirs, np.float32).reshape(-1, 3)
    if normal_eps is None:
        lo, hi = field_bounds(field)
        normal_eps = float(np.linalg.norm(hi - lo)) / 1024.0
    kw = dict(render_kwargs or {})
    try:
        accepts = set(inspect.signature(renderer).parameters)
    except (TypeError, ValueError):
        accepts = set()
    if normals and "compute_normals" in accepts:
        kw.setdefault("compute_normals", True)
    outs: dict[str, list[np.ndarray]] = {"rgb": [], "distance": [], "opacity": []}
    if normals:
        outs["normal"] = []
    for s in range(0, len(o_all), chunk):
        o = torch.from_numpy(o_all[s:s + chunk]).to(device)
        d = torch.from_numpy(d_all[s:s + chunk]).to(device)
        r = renderer(field, o, d, near=near, far=far, **kw)
        rgb = r["rgb"].reshape(-1, 3).float()
        dist = r["distance"].reshape(-1).float()
        op = r["opacity"].reshape(-1).float() if "opacity" in r else torch.ones_like(dist)
        outs["rgb"].append(rgb.clamp(0, 1).cpu().numpy())
        outs["distance"].append(dist.cpu().numpy())
        outs["opacity"].append(op.cpu().numpy())
        if normals:
            nr = r.get("normal", r.get("normals"))
            if nr is not None:
                nrm = nr.reshape(-1, 3).float()
                nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            else:
                nrm = torch.zeros_like(o)
                hit = op > min_opacity
                if hit.any():
                    x = o[hit] + d[hit] * dist[hit, None].to(o.dtype)
                    nrm[hit] = density_normals(field, x, normal_eps).to(nrm.dtype)
            outs["normal"].append(nrm.cpu().numpy())
    return {k: np.concatenate(v, axis=0).astype(np.float32) for k, v in outs.items()}


def render_pose(field, pose: CameraPose, **kwargs) -> dict[str, np.ndarray]:
    """Render a pose -> ``rgb`` ``(H, W, 3)``, ``distance`` ``(H, W)``, ``opacity`` ``(H, W)``,
    ``normal`` ``(H, W, 3)``; ``kwargs`` as :func:`render_rays_chunked`."""
    o, d = pose_rays(pose)
    out = render_rays_chunked(field, o.reshape(-1, 3), d.reshape(-1, 3), **kwargs)
    h, w = pose.height, pose.width
    return {k: v.reshape(h, w, *v.shape[1:]) for k, v in out.items()}


def visualize(frame: Mapping[str, np.ndarray], kind: str, *, distance_range: tuple[float, float] | None = None,
              cmap: str = "turbo", log_distance: bool = False, min_opacity: float = 0.5) -> np.ndarray:
    """An 8-bit ``(H, W, 3)`` picture of one output: ``rgb``, ``distance`` (colourised with a fixed range so a
    video does not flicker), ``normal`` (``(n + 1) / 2``) or ``opacity`` (grey)."""

    if kind == "rgb":
        return (np.clip(frame["rgb"], 0, 1) * 255 + 0.5).astype(np.uint8)
    if kind == "distance":
        vmin, vmax = distance_range if distance_range is not None else (None, None)
        valid = frame["opacity"] > min_opacity if "opacity" in frame else None
        return colorize(frame["distance"], valid=valid, cmap=cmap, vmin=vmin, vmax=vmax, log=log_distance)
    if kind == "normal":
        return (np.clip(frame["normal"] * 0.5 + 0.5, 0, 1) * 255 + 0.5).astype(np.uint8)
    if kind == "opacity":
        g = (np.clip(frame["opacity"], 0, 1) * 255 + 0.5).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    raise ValueError(f"unknown render output {kind!r}; expected rgb, distance, normal or opacity.")
