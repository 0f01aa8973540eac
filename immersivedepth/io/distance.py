"""Reference distance maps: dataset encodings (presets or {scale, invalid}), reading, writing."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from immersivedepth.errors import ConfigError, InputError, one_line
from immersivedepth.io.atomic import atomic_path
from immersivedepth.io.colormap import colorize
from immersivedepth.io.common import ImageReadError, InputWarning, PathLike, require_file
from immersivedepth.io.exr import read_exr, write_exr
from immersivedepth.io.header import DEFAULT_MAX_PIXELS
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


def _number(value, key: str) -> float:
    """A mapping entry of ``dataset.distance_format`` as a float, or a ConfigError naming the key."""
    if isinstance(value, bool):
        value = "true" if value else "false"  # YAML booleans are not numbers here
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"dataset.distance_format.{key}={value!r} is not a number; e.g. "
                          "dataset.distance_format='{scale: 0.00025, invalid: 0}' (metres = stored * scale)") from None


def _encoding_from(fmt: str | Mapping, path: Path) -> tuple[str, DistanceEncoding]:
    """Resolve ``fmt`` (name or ``{scale, invalid}`` mapping) -> (container name, encoding)."""
    if isinstance(fmt, Mapping):
        keys = set(fmt.keys())
        if keys != {"scale", "invalid"}:
            raise ConfigError(f"dataset.distance_format for {path} must have exactly the keys 'scale' and 'invalid' "
                              f"(got {sorted(map(str, keys))}), e.g. {{scale: 0.00025, invalid: 0}}")
        scale = _number(fmt["scale"], "scale")
        if not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"dataset.distance_format.scale={fmt['scale']!r} must be a finite number > 0 "
                              "(metres per stored unit, e.g. 0.00025 for Matterport3D's 1/4000 m)")
        invalid = fmt["invalid"]
        return "auto", DistanceEncoding(scale, None if invalid is None else _number(invalid, "invalid"))
    if not isinstance(fmt, str) or fmt.lower() not in DISTANCE_FORMATS:
        raise ConfigError(f"dataset.distance_format={fmt!r} is not a distance format (for {path}); valid names: "
                          f"{', '.join(DISTANCE_FORMATS)} or a mapping "
                          "{scale: <metres per stored unit>, invalid: <stored value or null>}")
    fmt = fmt.lower()
    if fmt == "auto":
        return "auto", DistanceEncoding()
    return fmt, DISTANCE_PRESETS[fmt]


def _exr_distance(path: Path, max_pixels: int | None) -> np.ndarray:
    """EXR -> (H,W) or (H,W,C): a 'distance'/'depth'/'Z'/'Y' channel, else R,G,B, else the only channel."""
    channels = read_exr(path, max_pixels)
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


def _collapse_channels(raw: np.ndarray, path: Path, axis: int) -> np.ndarray:
    """(C,H,W) or (H,W,C) with identical channels -> (H,W); different channels are refused."""
    first = np.take(raw, [0], axis=axis)
    same = (raw == first) | (np.isnan(raw) & np.isnan(first)) if raw.dtype.kind == "f" else raw == first
    if not same.all():
        layout = "(C,H,W)" if axis == 0 else "(H,W,C)"
        raise ImageReadError(f"distance file {path} has shape {raw.shape}: {raw.shape[axis]} different channels in "
                             f"{layout} layout; expected one channel (or identical channels); save the distance as a "
                             "single-channel (H,W) map")
    return np.take(raw, 0, axis=axis)


def _to_2d(raw: np.ndarray, path: Path, kind: str) -> np.ndarray:
    """Stored array -> (H,W): (1,H,W) and (H,W,1) squeeze; equal colour channels collapse; anything else is refused.

    A 3-D ``.npy`` is channel-first when its first axis is a plausible channel count (1-4) and its last is not;
    images decoded from PNG/TIFF/EXR are always channel-last.
    """
    channels = (1, 2, 3, 4)
    if raw.ndim == 3:
        if kind == "npy" and raw.shape[0] in channels and raw.shape[2] not in channels:
            raw = _collapse_channels(raw, path, axis=0)
        elif raw.shape[2] in channels:
            raw = _collapse_channels(raw, path, axis=2)
        else:
            raise ImageReadError(f"distance file {path} has shape {raw.shape}; expected (H,W), (1,H,W) or (H,W,1) "
                                 "(one value per pixel); save the distance as a single-channel (H,W) map")
    if raw.ndim != 2 or min(raw.shape) == 0:
        raise ImageReadError(f"distance file {path} has shape {raw.shape}; expected (H,W), (1,H,W) or (H,W,1) "
                             "with H, W > 0")
    return raw


def _load_raw_distance(path: Path, container: str, max_pixels: int | None) -> np.ndarray:
    """Stored values -> (H,W) array, dtype as stored; multi-channel maps must have equal channels."""
    kind = container if container in ("npy", "exr") else path.suffix.lower().lstrip(".")
    if kind == "npy":
        try:
            # mmap: the header's shape is checked against the cap before the data is read
            raw = np.load(path, allow_pickle=False, mmap_mode="r")
        except Exception as exc:
            raise ImageReadError(f"cannot read distance file {path} as .npy ({one_line(exc)}); save it with "
                                 "numpy.save as a float32 (H,W) array") from exc
        if max_pixels is not None and raw.size > int(max_pixels):
            raise ImageReadError(f"distance file {path} has shape {raw.shape}, more than the cap of {int(max_pixels)} "
                                 "values (dataset.max_pixels); give a distance map of the panorama's size")
        raw = np.array(raw)
    elif kind == "exr":
        raw = _exr_distance(path, max_pixels)
    else:
        raw = decode_raster(path, max_pixels)[0]
        if raw.ndim == 3 and raw.shape[2] == 4:
            raw = raw[..., :3]  # an alpha channel never carries distance
    return _to_2d(raw, path, kind)


def _check_dtype(raw: np.ndarray, path: Path, fmt_name: str, enc: DistanceEncoding) -> None:
    if enc.integer is True and raw.dtype != np.uint16:
        raise InputError(f"distance format {fmt_name!r} expects a 16-bit integer image but {path} holds {raw.dtype}; "
                         "pick the matching dataset.distance_format (npy/exr/pano3d for float metres)")
    if enc.integer is False and raw.dtype.kind != "f":
        raise InputError(f"distance format {fmt_name!r} expects float metres but {path} holds {raw.dtype}; "
                         f"pass dataset.distance_format={_INTEGER_FORMATS} or {{scale: .., invalid: ..}}")
    if raw.dtype.kind not in "fui":
        raise InputError(f"distance file {path} holds unsupported type {raw.dtype}; expected integers or floats")


def read_distance(path: PathLike, fmt: str | Mapping = "auto", *, max_valid: float = 1e6,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a reference distance map -> float32 ``(H,W)`` metres along the ray; invalid pixels are ``0.0``.

    ``fmt``: ``auto`` (float ``.npy``/``.exr`` in metres, by suffix), ``npy``, ``exr``, ``png`` (uint16 mm),
    ``matterport3d`` (uint16/4000), ``stanford2d3d`` (uint16/512, 65535 invalid), ``structured3d`` (uint16 mm),
    ``pano3d`` (float metres, inf invalid), or a mapping ``{"scale": s, "invalid": v}`` (metres = stored*s).
    Whatever the format, NaN/inf/<=0 and values above ``max_valid`` (renderers' "no hit" sentinels such as
    1e10) become invalid. Equal multi-channel maps collapse to one channel; ``(1,H,W)`` arrays are accepted.
    A file whose header claims more than ``max_pixels`` values is refused before it is decoded.
    """
    path = require_file(path, "distance file")
    container, enc = _encoding_from(fmt, path)
    fmt_name = fmt.lower() if isinstance(fmt, str) else "mapping"
    suffix = path.suffix.lower()
    if container == "auto" and not isinstance(fmt, Mapping) and suffix not in (".npy", ".exr"):
        if suffix in (".png", ".tif", ".tiff"):
            raise InputError(f"cannot tell the scale of the integer distance image {path}; set dataset.distance_format "
                             f"to one of {_INTEGER_FORMATS} or {{scale: <metres per unit>, invalid: <value>}} "
                             "(a colourised 8-bit preview cannot be decoded; use the .npy or .exr beside it)")
        raise InputError(f"cannot tell the format of distance file {path} from its suffix {suffix!r}; "
                         f"use .npy/.exr or set dataset.distance_format (one of {', '.join(DISTANCE_FORMATS)})")
    raw = _load_raw_distance(path, container, max_pixels)
    if fmt_name == "auto" and raw.dtype.kind != "f":
        raise InputError(f"distance file {path} holds integers ({raw.dtype}) whose scale is unknown; set "
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


@dataclass(frozen=True)
class DistanceStats:
    """What a user needs to see to notice a wrong encoding: size, valid fraction, range and median of valid values."""

    height: int
    width: int
    valid_fraction: float
    min: float
    max: float
    median: float

    def describe(self) -> str:
        """One log line, e.g. ``1024x512, 98.5 % valid, range 0.512-9.87, median 3.21``."""
        if self.valid_fraction == 0:
            return f"{self.width}x{self.height}, no valid pixel"
        return (f"{self.width}x{self.height}, {100 * self.valid_fraction:.1f} % valid, "
                f"range {self.min:.4g}-{self.max:.4g}, median {self.median:.4g}")


def distance_stats(dist: np.ndarray) -> DistanceStats:
    """Statistics of a distance map ``(H,W)`` over its valid pixels (finite and > 0)."""
    dist = np.asarray(dist)
    if dist.ndim != 2:
        raise ValueError(f"distance_stats expects a (H,W) map, got shape {dist.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(dist) & (dist > 0)
    n = int(valid.sum())
    if n == 0:
        return DistanceStats(dist.shape[0], dist.shape[1], 0.0, math.nan, math.nan, math.nan)
    values = dist[valid].astype(np.float64)
    return DistanceStats(dist.shape[0], dist.shape[1], n / valid.size, float(values.min()), float(values.max()),
                         float(np.median(values)))


def resample_distance(dist: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h,w) -> ``shape`` (H,W) by the nearest source pixel centre: distances are never averaged across an edge
    (that would invent surfaces between foreground and background) and invalid zeros stay zeros."""
    h, w = dist.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return np.ascontiguousarray(dist[rows[:, None], cols[None, :]])


def match_panorama(dist: np.ndarray, path: PathLike, *, panorama: PathLike, original_hw: tuple[int, int],
                   target_hw: tuple[int, int]) -> np.ndarray:
    """Fit a reference distance ``(h,w)`` to the panorama as it is trained: ``target_hw`` (H,W) after any 2:1
    resampling of a file that was ``original_hw``.

    A map of the target size is returned as is; a map of the panorama's *original* size is resampled with it
    (:func:`resample_distance`, warning); any other size is refused naming both original sizes.
    """
    got = tuple(dist.shape)
    if got == tuple(target_hw):
        return dist
    if got == tuple(original_hw):
        warnings.warn(f"reference distance {path} resampled from {got[1]}x{got[0]} to {target_hw[1]}x{target_hw[0]} "
                      "with the panorama (dataset.allow_resample)", InputWarning, stacklevel=2)
        return resample_distance(dist, target_hw)
    resampled = ""
    if tuple(original_hw) != tuple(target_hw):
        resampled = f" (resampled to {target_hw[1]}x{target_hw[0]} by dataset.allow_resample)"
    raise InputError(f"reference distance {path} is {got[1]}x{got[0]} but the panorama {panorama} is "
                     f"{original_hw[1]}x{original_hw[0]}{resampled}; give a distance map of the panorama's size "
                     "(dataset.distance_path)")
