"""Meshes from a density field — the public names in one place.

The work is split by job (import from here or from the module that owns a name):

* :mod:`immersivedepth.render.isosurface` — seamless chunked marching tetrahedra (``marching_tetrahedra``,
  ``extract_isosurface``);
* :mod:`immersivedepth.render.mesh_geometry` — the :class:`Mesh` container and clean-up (``remove_small_components``,
  ``vertex_normals``, ``decimate``);
* :mod:`immersivedepth.render.field_mesh` — meshing a trained field (density threshold, visibility carving,
  colours: ``FieldMeshOptions``, ``auto_density_threshold``, ``field_colors``, ``field_mesh``);
* :mod:`immersivedepth.render.mesh_export` — GLB / PLY / OBJ and textured export (``export_mesh``,
  ``export_textured_mesh``).
"""

from __future__ import annotations

from immersivedepth.render.field_mesh import (
    SOLID_DENSITY,
    FieldMeshOptions,
    auto_density_threshold,
    field_colors,
    field_mesh,
)
from immersivedepth.render.isosurface import extract_isosurface, marching_tetrahedra
from immersivedepth.render.mesh_export import export_mesh, export_textured_mesh
from immersivedepth.render.mesh_geometry import Mesh, decimate, remove_small_components, vertex_normals

__all__ = [
    "Mesh",
    "FieldMeshOptions",
    "SOLID_DENSITY",
    "marching_tetrahedra",
    "extract_isosurface",
    "auto_density_threshold",
    "remove_small_components",
    "decimate",
    "vertex_normals",
    "field_colors",
    "field_mesh",
    "export_mesh",
    "export_textured_mesh",
]
