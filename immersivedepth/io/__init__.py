"""Readers and writers for panoramas, distance maps, point clouds, meshes and videos.

Conventions (see ARCHITECTURE.md):

- Images in memory are RGB float32 in [0, 1], shape ``(H,W,3)``. Files may be PNG/JPEG/TIFF
  (8- or 16-bit, gray, RGB, RGBA, palette) or OpenEXR. EXR (and float TIFF) pixels are *linear*
  values: they are kept as they are (not clipped) and a warning says when they leave [0, 1].
- Distance maps are float32 ``(H,W)`` in metres along the ray; invalid pixels are ``0.0``
  (valid = finite and > 0).
- Every writer goes through :func:`atomic_path`: the file appears complete or not at all, and an
  existing target survives a failed write.

One module per kind of file: :mod:`.images` (panoramas), :mod:`.exr`, :mod:`.distance`, :mod:`.ply`,
:mod:`.mesh`, :mod:`.video`, :mod:`.colormap`, :mod:`.atomic`; this package re-exports their public names, so
``from immersivedepth import io; io.read_panorama(...)`` and ``from immersivedepth.io import X`` keep working.
"""

from immersivedepth.io.atomic import atomic_path
from immersivedepth.io.colormap import colorize
from immersivedepth.io.common import ImageReadError
from immersivedepth.io.distance import (
    DISTANCE_FORMATS,
    DISTANCE_PRESETS,
    DistanceEncoding,
    find_distance_beside,
    read_distance,
    write_distance,
)
from immersivedepth.io.exr import read_exr, write_exr
from immersivedepth.io.images import read_panorama, write_image
from immersivedepth.io.mesh import write_mesh
from immersivedepth.io.ply import read_ply, write_ply
from immersivedepth.io.video import VideoWriter, read_video_info

__all__ = [
    "DISTANCE_FORMATS", "DISTANCE_PRESETS", "DistanceEncoding", "ImageReadError", "VideoWriter", "atomic_path",
    "colorize", "find_distance_beside", "read_distance", "read_exr", "read_panorama", "read_ply", "read_video_info",
    "write_distance", "write_exr", "write_image", "write_mesh", "write_ply",
]
