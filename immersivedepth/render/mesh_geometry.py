"""The triangle-mesh container and its geometry clean-up: small components, vertex normals, decimation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["Mesh", "FACE_BLOCK", "face_cross", "remove_small_components", "vertex_normals", "decimate"]

log = logging.getLogger(__name__)


@dataclass
class Mesh:
    """Triangle mesh: ``vertices`` ``(V, 3)`` float32 world units, ``faces`` ``(F, 3)`` int64,
    optional ``colors`` ``(V, 3)`` float32 in [0, 1], ``normals`` ``(V, 3)`` unit and texture
    coordinates ``uv`` ``(V, 2)`` (origin bottom-left, as in OBJ)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    uv: np.ndarray | None = None

    def to_trimesh(self):
        import trimesh

        colors = None if self.colors is None else (np.clip(self.colors, 0, 1) * 255 + 0.5).astype(np.uint8)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=colors, process=False)



# --------------------------------------------------------------------------- clean-up
def remove_small_components(vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.01):
    """Keep connected components with at least ``min_fraction`` of all faces (the largest always stays).

    Returns (vertices ``(V', 3)``, faces ``(F', 3)``, kept ``(V,)`` bool mask of the input vertices — index
    per-vertex attributes with it —, number of removed components). Unused vertices are dropped.
    """
    nv = len(vertices)
    if len(faces) == 0 or min_fraction <= 0:
        return vertices, faces, np.ones(nv, bool), 0
    # two edges per triangle already connect its three vertices
    i = np.concatenate([faces[:, 0], faces[:, 1]])
    j = np.concatenate([faces[:, 1], faces[:, 2]])
    adj = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(nv, nv))
    n, labels = connected_components(adj, directed=False)
    flab = labels[faces[:, 0]]
    counts = np.bincount(flab, minlength=n)
    keep_lab = counts >= min_fraction * len(faces)
    keep_lab[np.argmax(counts)] = True
    n_removed = int(np.sum((counts > 0) & ~keep_lab))
    faces = faces[keep_lab[flab]]
    used = np.zeros(nv, bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces], used, n_removed


FACE_BLOCK = 1 << 18  # faces per block in face-wise loops (bounds the temporaries)


def face_cross(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``(p1 - p0) x (p2 - p0)`` ``(F, 3)`` float64 of faces ``f`` ``(F, 3)`` over vertices ``v``."""
    p0 = v[f[:, 0]].astype(np.float64)
    return np.cross(v[f[:, 1]] - p0, v[f[:, 2]] - p0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)`` following the face winding."""
    v = np.asarray(vertices, np.float64)
    n = np.zeros_like(v)
    for s in range(0, len(faces), FACE_BLOCK):
        f = faces[s:s + FACE_BLOCK]
        fn = face_cross(v, f)
        for k in range(3):
            n[:, 0] += np.bincount(f[:, k], weights=fn[:, 0], minlength=len(v))
            n[:, 1] += np.bincount(f[:, k], weights=fn[:, 1], minlength=len(v))
            n[:, 2] += np.bincount(f[:, k], weights=fn[:, 2], minlength=len(v))
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)).astype(np.float32)


def decimate(mesh: Mesh, target_faces: int) -> tuple[Mesh, str]:
    """Quadric decimation to about ``target_faces`` (needs the optional ``fast_simplification`` package).

    Returns (mesh, message); without the package the mesh is returned unchanged with a message
    saying so. Colours are dropped (the caller re-samples them at the new vertices).
    """
    if target_faces <= 0 or len(mesh.faces) <= target_faces:
        return mesh, "decimation not needed"
    try:
        import fast_simplification  # noqa: F401
    except ImportError:
        msg = "decimation skipped: install the optional package fast_simplification (pip install fast-simplification)"
        log.warning(msg)
        return mesh, msg
    tm = mesh.to_trimesh().simplify_quadric_decimation(face_count=int(target_faces))
    out = Mesh(np.asarray(tm.vertices, np.float32), np.asarray(tm.faces, np.int64), info=dict(mesh.info))
    return out, f"decimated {len(mesh.faces)} -> {len(out.faces)} faces"
