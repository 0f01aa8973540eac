"""Binary PLY point clouds and triangle meshes (write), binary PLY (read)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from immersivedepth.io.atomic import write_bytes
from immersivedepth.io.common import ImageReadError, PathLike, require_file

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def colors_uint8(colors: np.ndarray, n: int, what: str) -> np.ndarray:
    """(N,3|4) float in [0,1] or uint8 -> uint8 (N,3|4)."""
    colors = np.asarray(colors)
    if colors.shape not in ((n, 3), (n, 4)):
        raise ValueError(f"{what}: colors have shape {colors.shape}; expected ({n}, 3) or ({n}, 4)")
    if colors.dtype == np.uint8:
        return colors
    return np.round(np.clip(colors.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def write_ply(path: PathLike, points: np.ndarray, colors: np.ndarray | None = None, normals: np.ndarray | None = None,
              faces: np.ndarray | None = None) -> None:
    """Binary little-endian PLY: vertex ``x y z [nx ny nz] [red green blue]`` and optional triangle faces.

    points (N,3); colors (N,3) float in [0,1] or uint8; normals (N,3); faces (M,3) vertex indices.
    """
    path = Path(path)
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"cannot write PLY {path}: points have shape {points.shape}; expected (N, 3)")
    n = len(points)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    columns = list(points.T)
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float32)
        if normals.shape != (n, 3):
            raise ValueError(f"cannot write PLY {path}: normals have shape {normals.shape}; expected ({n}, 3)")
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        columns += list(normals.T)
    if colors is not None:
        colors = colors_uint8(colors, n, f"cannot write PLY {path}")[:, :3]
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        columns += list(colors.T)
    vertex = np.empty(n, dtype=fields)
    for (name, _), col in zip(fields, columns):
        vertex[name] = col
    ply_names = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment written by immersivedepth", f"element vertex {n}"]
    header += [f"property {ply_names[t]} {name}" for name, t in fields]
    face_block = b""
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and (faces.min() < 0 or faces.max() >= n)):
            raise ValueError(f"cannot write PLY {path}: faces must be (M, 3) indices in [0, {n}), got {faces.shape}")
        rec = np.empty(len(faces), dtype=[("count", "u1"), ("idx", "<i4", (3,))])
        rec["count"], rec["idx"] = 3, faces
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        face_block = rec.tobytes()
    header.append("end_header")
    write_bytes(path, ("\n".join(header) + "\n").encode("ascii") + vertex.tobytes() + face_block)


def _parse_ply_header(f, path: Path) -> tuple[str, list]:
    """-> (format, [(element name, count, [(prop name, dtype) | (prop name, count dtype, index dtype)])])."""
    if f.readline().strip() != b"ply":
        raise ImageReadError(f"{path} is not a PLY file (missing 'ply' magic)")
    fmt, elements = None, []
    for line in iter(f.readline, b""):
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            return fmt, elements
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and words[1] == "list":
            elements[-1][2].append((words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
        elif words[0] == "property":
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
    raise ImageReadError(f"PLY file {path} has no end_header")


def read_ply(path: PathLike) -> dict[str, np.ndarray | None]:
    """Read a binary PLY -> dict(points (N,3) float32, normals (N,3)|None, colors (N,3) uint8|None, faces (M,K)|None).

    Supports binary little/big-endian files with scalar vertex properties and a constant-size face list.
    """
    path = require_file(path, "PLY file")
    with open(path, "rb") as f:
        try:
            fmt, elements = _parse_ply_header(f, path)
        except (KeyError, IndexError, ValueError) as exc:
            raise ImageReadError(f"cannot parse the PLY header of {path}: {exc}") from exc
        if fmt not in ("binary_little_endian", "binary_big_endian"):
            raise ImageReadError(f"PLY file {path} is {fmt}; only binary PLY files are supported")
        order = "<" if fmt == "binary_little_endian" else ">"
        data = {}
        for name, count, props in elements:
            if any(len(p) == 3 for p in props):
                _, cnt_t, idx_t = props[0]
                first = np.frombuffer(f.read(np.dtype(cnt_t).itemsize), dtype=order + cnt_t)[0] if count else 0
                f.seek(-np.dtype(cnt_t).itemsize if count else 0, os.SEEK_CUR)
                dt = np.dtype([("count", order + cnt_t), ("idx", order + idx_t, (int(first),))])
                rec = np.frombuffer(f.read(dt.itemsize * count), dtype=dt, count=count)
                if count and np.any(rec["count"] != first):
                    raise ImageReadError(f"PLY file {path}: faces of different sizes are not supported")
                data[name] = rec["idx"].astype(np.int64)
            else:
                dt = np.dtype([(p, order + t) for p, t in props])
                data[name] = np.frombuffer(f.read(dt.itemsize * count), dtype=dt, count=count)
    v = data.get("vertex")
    if v is None:
        raise ImageReadError(f"PLY file {path} has no vertex element")
    cols = lambda names: np.stack([v[c] for c in names], axis=1) if all(c in v.dtype.names for c in names) else None
    colors = cols(("red", "green", "blue"))
    normals = cols(("nx", "ny", "nz"))
    return {"points": cols(("x", "y", "z")).astype(np.float32),
            "normals": None if normals is None else normals.astype(np.float32),
            "colors": None if colors is None else colors.astype(np.uint8), "faces": data.get("face")}
