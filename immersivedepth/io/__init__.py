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

from immersivedepth.io.atomic import atomic_path, is_temp_name, remove_stale_temps
from immersivedepth.io.colormap import colorize
from immersivedepth.io.common import ImageReadError, InputWarning
from immersivedepth.io.distance import (
    DISTANCE_FORMATS,
    DISTANCE_PRESETS,
    DistanceEncoding,
    DistanceStats,
    distance_stats,
    find_distance_beside,
    match_panorama,
    read_distance,
    resample_distance,
    write_distance,
)
from immersivedepth.io.exr import read_exr, write_exr
from immersivedepth.io.header import DEFAULT_MAX_PIXELS, ImageHeader, read_header
from immersivedepth.io.images import panorama_size, read_panorama, write_image
from immersivedepth.io.mesh import write_mesh
from immersivedepth.io.ply import read_ply, write_ply
from immersivedepth.io.video import VideoWriter, read_video_info

__all__ = [
    "DEFAULT_MAX_PIXELS", "DISTANCE_FORMATS", "DISTANCE_PRESETS", "DistanceEncoding", "DistanceStats", "ImageHeader",
    "ImageReadError", "InputWarning", "VideoWriter", "atomic_path", "colorize", "distance_stats",
    "find_distance_beside", "is_temp_name", "match_panorama", "panorama_size", "read_distance", "read_exr",
    "read_header", "read_panorama", "read_ply", "read_video_info", "remove_stale_temps", "resample_distance",
    "write_distance", "write_exr", "write_image", "write_mesh", "write_ply",
]
