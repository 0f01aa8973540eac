"""Triangle meshes by suffix: glTF binary (.glb), PLY, OBJ."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from immersivedepth.io.atomic import write_bytes
from immersivedepth.io.common import PathLike
from immersivedepth.io.ply import colors_uint8, write_ply


def write_mesh(path: PathLike, vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray | None = None,
               vertex_normals: np.ndarray | None = None) -> None:
    """Write a triangle mesh by suffix: ``.glb`` (COLOR_0/NORMAL), ``.ply`` (binary), ``.obj`` (``v x y z r g b``).

    vertices (N,3) world units (y up, as glTF); faces (M,3); vertex_colors (N,3|4) float [0,1] or uint8;
    vertex_normals (N,3).
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".glb", ".ply", ".obj"):
        raise ValueError(f"cannot write mesh {path}: unknown suffix {path.suffix!r}; use .glb, .ply or .obj")
    if suffix == ".ply":
        write_ply(path, vertices, colors=vertex_colors, normals=vertex_normals, faces=faces)
        return
    vertices = np.asarray(vertices, dtype=np.float64)
    colors = None if vertex_colors is None else colors_uint8(vertex_colors, len(vertices), f"cannot write mesh {path}")
    mesh = trimesh.Trimesh(vertices=vertices, faces=np.asarray(faces), vertex_colors=colors,
                           vertex_normals=vertex_normals, process=False, validate=False)
    if suffix == ".glb":
        data = trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh), include_normals=vertex_normals is not None)
    else:
        data = trimesh.exchange.obj.export_obj(mesh, include_normals=vertex_normals is not None,
                                               include_color=colors is not None, include_texture=False).encode()
    write_bytes(path, data)
