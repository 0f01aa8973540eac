"""Mesh export: GLB / PLY / OBJ with vertex colours, and the textured OBJ + MTL + PNG / GLB of a mesh with UVs.

Every file is written atomically through :mod:`immersivedepth.io`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from immersivedepth.io import atomic_path, write_mesh
from immersivedepth.render.mesh_geometry import Mesh

__all__ = ["export_mesh", "export_textured_mesh"]


# --------------------------------------------------------------------------- export
def export_mesh(mesh: Mesh, out_dir, stem: str = "mesh", formats: Sequence[str] = ("glb", "ply", "obj")) -> list:
    """Write ``<out_dir>/<stem>.<fmt>`` for each format via :func:`immersivedepth.io.write_mesh` (atomic)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        fmt = fmt.lower().lstrip(".")
        if fmt not in ("glb", "ply", "obj"):
            raise ValueError(f"mesh export format {fmt!r} unsupported; use glb, ply or obj.")
        p = out_dir / f"{stem}.{fmt}"
        write_mesh(p, mesh.vertices, mesh.faces, vertex_colors=mesh.colors, vertex_normals=mesh.normals)
        paths.append(p)
    return paths


def export_textured_mesh(mesh: Mesh, texture: np.ndarray, out_dir, stem: str = "depth_mesh") -> list:
    """Textured export of a mesh with ``mesh.uv``: ``<stem>_textured.obj`` + ``.mtl`` + ``<stem>_texture.png``
    and ``<stem>_textured.glb`` (texture embedded). ``texture`` ``(H, W, 3)`` float in [0, 1] or uint8.
    Every file is written atomically."""
    if mesh.uv is None:
        raise ValueError("export_textured_mesh: the mesh has no texture coordinates (mesh.uv).")
    tex = np.asarray(texture)
    if tex.ndim != 3 or tex.shape[2] < 3:
        raise ValueError(f"export_textured_mesh: texture must be (H, W, 3), got {tex.shape}.")
    if tex.dtype != np.uint8:
        tex = (np.clip(tex[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # white diffuse so viewers that multiply Kd by the texture show the panorama's own colours
    mat = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(tex[..., :3]), name=f"{stem}_texture",
                                                 diffuse=(255, 255, 255, 255), ambient=(255, 255, 255, 255),
                                                 specular=(0, 0, 0, 255))
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=mesh.normals, process=False, validate=False,
                         visual=trimesh.visual.TextureVisuals(uv=mesh.uv, material=mat))
    obj_text, files = trimesh.exchange.obj.export_obj(tm, include_normals=mesh.normals is not None,
                                                      include_texture=True, return_texture=True,
                                                      mtl_name=f"{stem}_textured.mtl")
    written = []
    for name, data in files.items():
        with atomic_path(out_dir / name) as tmp:
            Path(tmp).write_bytes(data)
        written.append(out_dir / name)
    with atomic_path(out_dir / f"{stem}_textured.obj") as tmp:
        Path(tmp).write_text(obj_text)
    written.append(out_dir / f"{stem}_textured.obj")
    glb = trimesh.exchange.gltf.export_glb(trimesh.Scene(tm), include_normals=mesh.normals is not None)
    with atomic_path(out_dir / f"{stem}_textured.glb") as tmp:
        Path(tmp).write_bytes(glb)
    written.append(out_dir / f"{stem}_textured.glb")
    return written
