"""Readers and writers for panoramas, distance maps, point clouds, meshes and videos.

Conventions (see ARCHITECTURE.md):

- Images in memory are RGB float32 in [0, 1], shape ``(H,W,3)``. Files may be PNG/JPEG/TIFF
  (8- or 16-bit, gray, RGB, RGBA, palette) or OpenEXR. EXR (and float TIFF) pixels are *linear*
  values: they are kept as they are (not clipped) and a warning says when they leave [0, 1].
- Distance maps are float32 ``(H,W)`` in metres along the ray; invalid pixels are ``0.0``
  (valid = finite and > 0).
- Every writer goes through :func:`atomic_path`: the file appears complete or not at all, and an
  existing target survives a failed write.
"""

from __future__ import annotations

import math
import os
import secrets
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from immersivedepth.errors import InputError

__all__ = [
    "DISTANCE_FORMATS", "DISTANCE_PRESETS", "DistanceEncoding", "ImageReadError", "VideoWriter", "atomic_path",
    "colorize", "find_distance_beside", "read_distance", "read_exr", "read_panorama", "read_ply", "read_video_info",
    "write_distance", "write_exr", "write_image", "write_mesh", "write_ply",
]

PathLike = str | os.PathLike


class ImageReadError(InputError):
    """A file exists but cannot be decoded (corrupt, truncated, wrong type, unsupported layout)."""


# ----------------------------------------------------------------------------------------------------------------------
# atomic writes


@contextmanager
def atomic_path(path: PathLike, *, temp_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; ``os.replace`` it onto ``path`` when the block succeeds.

    The temp name is ``.tmp-<random>.<name>`` (it keeps the suffix, so writers that dispatch on the
    extension work) unless ``temp_name`` is given. Parent directories are created. If the block raises,
    the temp file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name or f".tmp-{secrets.token_hex(6)}.{path.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer for {path} produced no file at its temporary path {tmp}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# ----------------------------------------------------------------------------------------------------------------------
# panoramas


def _require_file(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (check the path; relative paths start at {Path.cwd()})")
    return path


def read_exr(path: PathLike) -> dict[str, np.ndarray]:
    """Read the first part of an OpenEXR file -> ``{channel name: float32 (H,W)}`` (half and uint are converted)."""
    import OpenEXR

    path = _require_file(path, "EXR file")
    try:
        exr = OpenEXR.File(str(path), separate_channels=True)
        channels = exr.channels()
    except Exception as exc:  # OpenEXR raises several types for corrupt files
        raise ImageReadError(f"cannot read EXR file {path}: {exc}") from exc
    if len(exr.parts) > 1:
        warnings.warn(f"{path} has {len(exr.parts)} parts; only the first one is read", stacklevel=2)
    out = {}
    for name, channel in channels.items():
        pixels = np.asarray(channel.pixels)
        if pixels.ndim == 3 and len(name) == pixels.shape[2]:  # packed 'RGB'/'RGBA' group
            out.update({sub: pixels[..., i].astype(np.float32) for i, sub in enumerate(name)})
        else:
            out[name] = pixels.astype(np.float32)
    return out


def _exr_image(path: Path) -> np.ndarray:
    """EXR -> float32 (H,W,C) with C in {1, 3, 4} (Y, RGB, RGBA); layer prefixes like ``beauty.R`` are accepted."""
    channels = read_exr(path)
    short = {name.rsplit(".", 1)[-1]: px for name, px in channels.items()}
    for names in (("R", "G", "B", "A"), ("R", "G", "B"), ("Y",)):
        if all(n in short for n in names):
            return np.stack([short[n] for n in names], axis=-1)
    if len(channels) == 1:
        return next(iter(channels.values()))[..., None]
    raise ImageReadError(f"EXR file {path} has channels {sorted(channels)}; expected R,G,B (optionally A) or Y")


def _decode_raster(path: Path) -> np.ndarray:
    """PNG/JPEG/TIFF/... -> the raw array OpenCV decodes with IMREAD_UNCHANGED (channel order BGR[A])."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"cannot read image {path}: the file is empty")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(
            f"cannot read image {path}: OpenCV could not decode it (corrupt, truncated or not an image file); "
            "re-export it as PNG, JPEG, TIFF or EXR"
        )
    return img


def _to_rgb(img: np.ndarray, path: Path, bgr: bool) -> np.ndarray:
    """(H,W) / (H,W,1|2|3|4) -> (H,W,3); alpha is dropped with a warning naming the file."""
    if img.ndim == 2:
        img = img[..., None]
    n = img.shape[2]
    if n in (2, 4):
        warnings.warn(f"{path} has an alpha channel; it was dropped (the colour channels are used as they are)",
                      stacklevel=3)
        img = img[..., : n - 1]
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] != 3:
        raise ImageReadError(f"image {path} has {n} channels; expected 1 (gray), 2, 3 (RGB) or 4 (RGBA)")
    return img[..., ::-1] if bgr else img


def _to_unit_float(img: np.ndarray, path: Path) -> np.ndarray:
    """Integer images -> float32 in [0, 1] by their bit depth; float images are kept (linear) with a range warning."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if img.dtype.kind != "f":
        raise ImageReadError(f"image {path} has unsupported pixel type {img.dtype}; use 8/16-bit integer or float")
    img = img.astype(np.float32)
    bad = ~np.isfinite(img)
    if bad.any():
        warnings.warn(f"{path}: {int(bad.sum())} non-finite pixel values were set to 0", stacklevel=3)
        img[bad] = 0.0
    if img.size and (img.min() < 0.0 or img.max() > 1.0):
        warnings.warn(f"{path} holds linear float values in [{img.min():.4g}, {img.max():.4g}], outside [0, 1]; "
                      "they are kept as they are (not clipped or tone-mapped)", stacklevel=3)
    return img


def _resample_to_2to1(img: np.ndarray) -> np.ndarray:
    """(H,W,3) -> (H,2H,3): INTER_AREA when the width shrinks, cubic when it grows (clipped to the input range)."""
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if 2 * h < w else cv2.INTER_CUBIC
    out = cv2.resize(img, (2 * h, h), interpolation=interp)
    return np.clip(out, img.min(), img.max()).astype(np.float32)


def read_panorama(path: PathLike, allow_resample: bool = False) -> np.ndarray:
    """Read an equirectangular panorama -> float32 ``(H,W,3)`` RGB.

    8/16-bit files are scaled to [0, 1]; gray is repeated to RGB; an alpha channel is dropped with a warning;
    palette images are expanded. EXR/float-TIFF values are linear and kept unclipped (warning when outside
    [0, 1]; non-finite values become 0). A panorama whose width is not twice its height raises ``ValueError``
    unless ``allow_resample`` (Hydra: ``dataset.allow_resample=true``), which resizes the width to ``2*H``.
    """
    path = _require_file(path, "panorama")
    if path.suffix.lower() == ".exr":
        img = _to_rgb(_exr_image(path), path, bgr=False)
    else:
        img = _to_rgb(_decode_raster(path), path, bgr=True)
    img = np.ascontiguousarray(_to_unit_float(img, path))
    h, w = img.shape[:2]
    if w != 2 * h:
        if not allow_resample:
            raise ValueError(
                f"panorama {path} is {w}x{h} (width x height) but an equirectangular panorama must be 2:1 "
                f"(width = 2*height = {2 * h}); pass allow_resample=True (dataset.allow_resample=true) to resize it"
            )
        warnings.warn(f"panorama {path} is {w}x{h}, not 2:1; resampled to {2 * h}x{h}", stacklevel=2)
        img = _resample_to_2to1(img)
    return img


# ----------------------------------------------------------------------------------------------------------------------
# distance maps


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
        raw = _decode_raster(path)
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
    path = _require_file(path, "distance file")
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


# ----------------------------------------------------------------------------------------------------------------------
# colour maps and image writers


def colorize(values: np.ndarray, valid: np.ndarray | None = None, cmap: str = "turbo", vmin: float | None = None,
             vmax: float | None = None, log: bool = False, percentiles: tuple[float, float] = (2.0, 98.0),
             ) -> np.ndarray:
    """Scalar map ``(H,W)`` -> uint8 RGB ``(H,W,3)``.

    ``valid`` (H,W) bool defaults to finite values (and > 0 when ``log``); invalid pixels are black.
    The range defaults to the given ``percentiles`` of the valid values; ``log`` maps log(values).
    ``cmap`` is an OpenCV colormap name (``turbo``, ``viridis``, ``inferno``, ``jet``, ...).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"colorize expects a (H,W) map, got shape {values.shape}")
    code = getattr(cv2, f"COLORMAP_{cmap.upper()}", None)
    if code is None:
        names = sorted(n[9:].lower() for n in dir(cv2) if n.startswith("COLORMAP_"))
        raise ValueError(f"unknown colormap {cmap!r}; valid names: {', '.join(names)}")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (values > 0 if log else True)
    valid = ok if valid is None else ok & np.asarray(valid, dtype=bool)
    out = np.zeros(values.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(values) if log else values
    lo_p, hi_p = np.percentile(v[valid], percentiles)
    if log and ((vmin is not None and vmin <= 0) or (vmax is not None and vmax <= 0)):
        raise ValueError(f"colorize(log=True) needs vmin, vmax > 0, got vmin={vmin}, vmax={vmax}")
    lo = lo_p if vmin is None else (math.log(vmin) if log else vmin)
    hi = hi_p if vmax is None else (math.log(vmax) if log else vmax)
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full(v.shape, 0.5)
    t = np.where(valid, t, 0.0)
    rgb = cv2.applyColorMap(np.round(t * 255).astype(np.uint8), code)[..., ::-1]
    out[valid] = rgb[valid]
    return out


def _image_to_storable(img: np.ndarray, path: Path) -> np.ndarray:
    """float [0,1] / uint8 / uint16, (H,W) or (H,W,1|3|4) RGB[A] -> array ready for cv2.imencode (BGR[A])."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ValueError(f"cannot write image {path}: shape {img.shape}; expected (H,W), (H,W,3) or (H,W,4)")
    if img.dtype.kind == "f" or img.dtype == bool:
        img = np.round(np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"cannot write image {path}: dtype {img.dtype}; use float in [0, 1], uint8 or uint16")
    if img.dtype == np.uint16 and path.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ValueError(f"cannot write 16-bit image {path}: use a .png or .tif suffix, or convert to uint8")
    if img.ndim == 3 and img.shape[2] == 4 and path.suffix.lower() in (".jpg", ".jpeg"):
        raise ValueError(f"cannot write RGBA image {path}: JPEG has no alpha channel; pass (H,W,3) or use .png")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    return img


def write_image(path: PathLike, img: np.ndarray, *, jpeg_quality: int = 95) -> None:
    """Write an RGB[A] image ``(H,W)``/``(H,W,3|4)``: float in [0,1] (clipped) -> 8-bit; uint8; uint16 -> 16-bit."""
    path = Path(path)
    arr = _image_to_storable(img, path)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if path.suffix.lower() in (".jpg", ".jpeg") else []
    try:
        ok, buf = cv2.imencode(path.suffix, arr, params)
    except cv2.error as exc:
        raise ValueError(f"cannot write image {path}: OpenCV cannot encode {path.suffix!r} ({exc})") from exc
    if not ok:
        raise ValueError(f"cannot write image {path}: OpenCV failed to encode it")
    _write_bytes(path, buf.tobytes())


def write_exr(path: PathLike, data: np.ndarray) -> None:
    """Write float data as OpenEXR (ZIP): ``(H,W)`` -> channel 'Y', ``(H,W,3)`` -> R,G,B, ``(H,W,4)`` -> R,G,B,A.

    float16 input is stored as half, everything else as float32.
    """
    import OpenEXR

    data = np.asarray(data)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        names = ("Y",)
        data = data[..., None]
    elif data.ndim == 3 and data.shape[2] in (3, 4):
        names = ("R", "G", "B", "A")[: data.shape[2]]
    else:
        raise ValueError(f"cannot write EXR {path}: shape {data.shape}; expected (H,W), (H,W,3) or (H,W,4)")
    dtype = np.float16 if data.dtype == np.float16 else np.float32
    channels = {n: np.ascontiguousarray(data[..., i], dtype=dtype) for i, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_path(path) as tmp:
        OpenEXR.File(header, channels).write(str(tmp))


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


# ----------------------------------------------------------------------------------------------------------------------
# point clouds and meshes

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _colors_uint8(colors: np.ndarray, n: int, what: str) -> np.ndarray:
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
        colors = _colors_uint8(colors, n, f"cannot write PLY {path}")[:, :3]
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
    _write_bytes(path, ("\n".join(header) + "\n").encode("ascii") + vertex.tobytes() + face_block)


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
    path = _require_file(path, "PLY file")
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
    colors = None if vertex_colors is None else _colors_uint8(vertex_colors, len(vertices), f"cannot write mesh {path}")
    mesh = trimesh.Trimesh(vertices=vertices, faces=np.asarray(faces), vertex_colors=colors,
                           vertex_normals=vertex_normals, process=False, validate=False)
    if suffix == ".glb":
        data = trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh), include_normals=vertex_normals is not None)
    else:
        data = trimesh.exchange.obj.export_obj(mesh, include_normals=vertex_normals is not None,
                                               include_color=colors is not None, include_texture=False).encode()
    _write_bytes(path, data)


# ----------------------------------------------------------------------------------------------------------------------
# video


class VideoWriter:
    """H.264 (yuv420p) MP4 writer: ``with VideoWriter("out.mp4", fps=30) as vw: vw.write(frame)``.

    Frames are (H,W,3) float in [0,1] or uint8 (gray/RGBA accepted); all frames must share one size. Odd sizes are
    padded to even by edge replication. Frames go to ``<stem>.partial<suffix>`` beside the target, renamed onto
    it on a clean exit; an exception (or zero frames) leaves no video.
    """

    def __init__(self, path: PathLike, fps: float = 30, *, codec: str = "libx264", pixelformat: str = "yuv420p",
                 quality: float | None = 8, ffmpeg_log_level: str = "error"):
        self.path = Path(path)
        self.options = dict(fps=fps, codec=codec, pixelformat=pixelformat, quality=quality, macro_block_size=1,
                            ffmpeg_log_level=ffmpeg_log_level)
        self.size: tuple[int, int] | None = None
        self.n_frames = 0
        self._writer = None
        self.partial_path = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")
        self._target = None  # the atomic_path context while open

    def __enter__(self) -> VideoWriter:
        self._target = atomic_path(self.path, temp_name=self.partial_path.name)
        self._target.__enter__()
        return self

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = frame[..., None]
        if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
            raise ValueError(f"video {self.path}: frame shape {frame.shape}; expected (H,W,3)")
        frame = np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame[..., :3]
        if frame.dtype != np.uint8:
            frame = np.round(np.clip(np.nan_to_num(frame.astype(np.float64)), 0, 1) * 255).astype(np.uint8)
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            raise ValueError(f"video {self.path}: frame {self.n_frames} is {frame.shape[1]}x{frame.shape[0]} but the "
                             f"first frame was {self.size[1]}x{self.size[0]}; all frames must have one size")
        h, w = frame.shape[:2]
        return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")

    def write(self, frame: np.ndarray) -> None:
        """Append one frame (H,W,3) float [0,1] or uint8."""
        if self._target is None:
            raise RuntimeError(f"VideoWriter({self.path}) must be used as a context manager: `with VideoWriter(..)`")
        frame = self._prepare(frame)
        if self._writer is None:
            import imageio.v2 as imageio

            self._writer = imageio.get_writer(str(self.partial_path), format="FFMPEG", mode="I", **self.options)
        self._writer.append_data(frame)
        self.n_frames += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        target, self._target = self._target, None
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None and self.n_frames == 0:
                raise ValueError(f"no frames were written to video {self.path}; nothing saved")
        except BaseException as err:
            target.__exit__(type(err), err, err.__traceback__)  # removes the partial file
            raise
        target.__exit__(exc_type, exc, tb)
        return False


def read_video_info(path: PathLike) -> tuple[int, int, int, float]:
    """-> (n_frames, height, width, fps) of a video file (decodes it to count frames)."""
    import imageio.v2 as imageio

    path = _require_file(path, "video")
    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        meta = reader.get_meta_data()
        width, height = meta["size"]
        return reader.count_frames(), int(height), int(width), float(meta["fps"])
