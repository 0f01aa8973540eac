"""Reference distance maps: dataset encodings (presets or {scale, invalid}), reading, writing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from immersivedepth.io.atomic import atomic_path
from immersivedepth.io.colormap import colorize
from immersivedepth.io.common import ImageReadError, PathLike, require_file
from immersivedepth.io.exr import read_exr, write_exr
from immersivedepth.io.images import decode_raster, write_image


@dataclass(frozen=True)
class DistanceEncoding:
    """How stored values map to metres: ``metres = stored * scale``; ``stored == invalid`` marks missing pixels.

    ``integer`` says which stored type the preset expects (``True``: uint16 images, ``False``: float maps,
    ``None``: either).
    """

    scale: float = 1.0
    invalid: float | None = None
    integer: bool | None = None


DISTANCE_PRESETS: dict[str, DistanceEncoding] = {
    "npy": DistanceEncoding(1.0, None, integer=False),
    "exr": DistanceEncoding(1.0, None, integer=False),
    # 16-bit PNG in millimetres with 0 invalid: the common depth-PNG convention (same numbers as Structured3D).
    "png": DistanceEncoding(1.0 / 1000.0, 0, integer=True),
    "matterport3d": DistanceEncoding(1.0 / 4000.0, 0, integer=True),
    "stanford2d3d": DistanceEncoding(1.0 / 512.0, 65535, integer=True),
    "structured3d": DistanceEncoding(1.0 / 1000.0, 0, integer=True),
    "pano3d": DistanceEncoding(1.0, math.inf, integer=False),
}
DISTANCE_FORMATS = ("auto", *DISTANCE_PRESETS)
_DISTANCE_SUFFIXES = (".exr", ".npy", ".png")
_INTEGER_FORMATS = "|".join(k for k, v in DISTANCE_PRESETS.items() if v.integer)


def find_distance_beside(image_path: PathLike) -> Path | None:
    """``<stem>_distance.{exr,npy,png}`` next to ``image_path`` (first match in that order), or ``None``."""
    image_path = Path(image_path)
    for suffix in _DISTANCE_SUFFIXES:
        candidate = image_path.with_name(f"{image_path.stem}_distance{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _encoding_from(fmt: str | Mapping, path: Path) -> tuple[str, DistanceEncoding]:
    """Resolve ``fmt`` (name or ``{scale, invalid}`` mapping) -> (container name, encoding)."""
    if isinstance(fmt, Mapping):
        keys = set(fmt.keys())
        if keys != {"scale", "invalid"}:
            raise ValueError(f"distance format mapping for {path} must have exactly the keys 'scale' and 'invalid' "
                             f"(got {sorted(map(str, keys))}), e.g. {{scale: 0.00025, invalid: 0}}")
        invalid = fmt["invalid"]
        return "auto", DistanceEncoding(float(fmt["scale"]), None if invalid is None else float(invalid))
    if not isinstance(fmt, str) or fmt.lower() not in DISTANCE_FORMATS:
        raise ValueError(f"unknown distance format {fmt!r} for {path}; valid names: {', '.join(DISTANCE_FORMATS)} "
                         "or a mapping {scale: <metres per stored unit>, invalid: <stored value or null>}")
    fmt = fmt.lower()
    if fmt == "auto":
        return "auto", DistanceEncoding()
    return fmt, DISTANCE_PRESETS[fmt]


def _exr_distance(path: Path) -> np.ndarray:
    """EXR -> (H,W) or (H,W,C): a 'distance'/'depth'/'Z'/'Y' channel, else R,G,B, else the only channel."""
    channels = read_exr(path)
    short = {name.rsplit(".", 1)[-1]: px for name, px in channels.items()}
    for name in ("distance", "depth", "Z", "Y"):
        if name in short:
            return short[name]
    if all(n in short for n in "RGB"):
        return np.stack([short[n] for n in "RGB"], axis=-1)
    if len(channels) == 1:
        return next(iter(channels.values()))
    raise ImageReadError(f"distance EXR {path} has channels {sorted(channels)}; expected one of distance, depth, Z, "
                         "Y, R,G,B (equal) or a single channel")


def _load_raw_distance(path: Path, container: str) -> np.ndarray:
    """Stored values -> (H,W) array, dtype as stored; multi-channel maps must have equal channels."""
    kind = container if container in ("npy", "exr") else path.suffix.lower().lstrip(".")
    if kind == "npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ImageReadError(f"cannot read distance file {path} as .npy: {exc}") from exc
    elif kind == "exr":
        raw = _exr_distance(path)
    else:
        raw = decode_raster(path)
        if raw.ndim == 3 and raw.shape[2] == 4:
            raw = raw[..., :3]  # an alpha channel never carries distance
    if raw.ndim == 3:
        first = raw[..., :1]
        same = (raw == first) | (np.isnan(raw) & np.isnan(first)) if raw.dtype.kind == "f" else raw == first
        if not same.all():
            raise ImageReadError(f"distance file {path} has {raw.shape[2]} different channels; expected one channel "
                                 "(or identical channels); save the distance as a single-channel map")
        raw = raw[..., 0]
    if raw.ndim != 2:
        raise ImageReadError(f"distance file {path} has shape {raw.shape}; expected (H,W)")
    return raw


def _check_dtype(raw: np.ndarray, path: Path, fmt_name: str, enc: DistanceEncoding) -> None:
    if enc.integer is True and raw.dtype != np.uint16:
        raise ValueError(f"distance format {fmt_name!r} expects a 16-bit integer image but {path} holds {raw.dtype}; "
                         "pick the matching dataset.distance_format (npy/exr/pano3d for float metres)")
    if enc.integer is False and raw.dtype.kind != "f":
        raise ValueError(f"distance format {fmt_name!r} expects float metres but {path} holds {raw.dtype}; "
                         f"pass dataset.distance_format={_INTEGER_FORMATS} or {{scale: .., invalid: ..}}")
    if raw.dtype.kind not in "fui":
        raise ValueError(f"distance file {path} holds unsupported type {raw.dtype}; expected integers or floats")


def read_distance(path: PathLike, fmt: str | Mapping = "auto", *, max_valid: float = 1e6) -> np.ndarray:
    """Read a reference distance map -> float32 ``(H,W)`` metres along the ray; invalid pixels are ``0.0``.

    ``fmt``: ``auto`` (float ``.npy``/``.exr`` in metres, by suffix), ``npy``, ``exr``, ``png`` (uint16 mm),
    ``matterport3d`` (uint16/4000), ``stanford2d3d`` (uint16/512, 65535 invalid), ``structured3d`` (uint16 mm),
    ``pano3d`` (float metres, inf invalid), or a mapping ``{"scale": s, "invalid": v}`` (metres = stored*s).
    Whatever the format, NaN/inf/<=0 and values above ``max_valid`` (renderers' "no hit" sentinels such as
    1e10) become invalid. Equal multi-channel maps collapse to one channel.
    """
    path = require_file(path, "distance file")
    container, enc = _encoding_from(fmt, path)
    fmt_name = fmt.lower() if isinstance(fmt, str) else "mapping"
    suffix = path.suffix.lower()
    if container == "auto" and not isinstance(fmt, Mapping) and suffix not in (".npy", ".exr"):
        if suffix in (".png", ".tif", ".tiff"):
            raise ValueError(f"cannot tell the scale of the integer distance image {path}; set dataset.distance_format "
                             f"to one of {_INTEGER_FORMATS} or {{scale: <metres per unit>, invalid: <value>}} "
                             "(a colourised 8-bit preview cannot be decoded; use the .npy or .exr beside it)")
        raise ValueError(f"cannot tell the format of distance file {path} from its suffix {suffix!r}; "
                         f"use .npy/.exr or set dataset.distance_format (one of {', '.join(DISTANCE_FORMATS)})")
    raw = _load_raw_distance(path, container)
    if fmt_name == "auto" and raw.dtype.kind != "f":
        raise ValueError(f"distance file {path} holds integers ({raw.dtype}) whose scale is unknown; set "
                         f"dataset.distance_format to one of {_INTEGER_FORMATS} or {{scale: .., invalid: ..}}")
    _check_dtype(raw, path, fmt_name, enc)
    invalid = np.zeros(raw.shape, dtype=bool) if enc.invalid is None else raw == enc.invalid
    with np.errstate(invalid="ignore", over="ignore"):
        dist = raw.astype(np.float64) * enc.scale
        invalid |= ~np.isfinite(dist) | (dist <= 0.0) | (dist > max_valid)
    dist[invalid] = 0.0
    return dist.astype(np.float32)


def write_distance(path: PathLike, dist: np.ndarray, **colorize_kwargs) -> None:
    """Write a distance map ``(H,W)`` by suffix: ``.npy`` / ``.exr`` float32, ``.png`` colourised preview (turbo)."""
    path = Path(path)
    dist = np.asarray(dist)
    if dist.ndim != 2:
        raise ValueError(f"cannot write distance {path}: shape {dist.shape}; expected (H,W)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, dist.astype(np.float32))
    elif suffix == ".exr":
        write_exr(path, dist.astype(np.float32))
    elif suffix == ".png":
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(dist) & (dist > 0)
        write_image(path, colorize(dist, valid=valid, **colorize_kwargs))
    else:
        raise ValueError(f"cannot write distance {path}: unknown suffix {path.suffix!r}; use .npy, .exr or .png")
