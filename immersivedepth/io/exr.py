"""OpenEXR reading and writing (float channels; half and uint are converted to float32)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from immersivedepth.io.atomic import atomic_path
from immersivedepth.io.common import ImageReadError, PathLike, require_file


def read_exr(path: PathLike) -> dict[str, np.ndarray]:
    """Read the first part of an OpenEXR file -> ``{channel name: float32 (H,W)}`` (half and uint are converted)."""
    import OpenEXR

    path = require_file(path, "EXR file")
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


def exr_image(path: Path) -> np.ndarray:
    """EXR -> float32 (H,W,C) with C in {1, 3, 4} (Y, RGB, RGBA); layer prefixes like ``beauty.R`` are accepted."""
    channels = read_exr(path)
    short = {name.rsplit(".", 1)[-1]: px for name, px in channels.items()}
    for names in (("R", "G", "B", "A"), ("R", "G", "B"), ("Y",)):
        if all(n in short for n in names):
            return np.stack([short[n] for n in names], axis=-1)
    if len(channels) == 1:
        return next(iter(channels.values()))[..., None]
    raise ImageReadError(f"EXR file {path} has channels {sorted(channels)}; expected R,G,B (optionally A) or Y")


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
