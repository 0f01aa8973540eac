"""OpenEXR reading and writing (float channels; half and uint are converted to float32).

Reading looks at the header first: data windows claiming more than ``dataset.max_pixels`` pixels are refused with the
same cap and message as any other image (``io.header.check_pixel_cap``) before a pixel is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from immersivedepth.io.atomic import atomic_path
from immersivedepth.io.common import ImageReadError, PathLike, require_file
from immersivedepth.io.header import DEFAULT_MAX_PIXELS, check_pixel_cap


def exr_size(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(H, W)`` of an OpenEXR file's first part, from its header alone (no pixel is read).

    Raises :class:`ImageReadError` when the file is not a readable EXR, or when its data windows claim more than
    ``max_pixels`` pixels (``dataset.max_pixels``; every part counts, since the whole file is decoded): a damaged or
    hostile header must not make the reader allocate gigabytes.
    """
    import OpenEXR

    path = require_file(path, "EXR file")
    try:
        parts = OpenEXR.File(str(path), header_only=True).parts
        sizes = []
        for part in parts:
            (x0, y0), (x1, y1) = part.header["dataWindow"]
            sizes.append((int(y1) - int(y0) + 1, int(x1) - int(x0) + 1))
    except Exception as exc:  # OpenEXR raises several types for corrupt files
        raise ImageReadError(f"cannot read EXR file {path}: {exc}") from exc
    if not sizes:
        raise ImageReadError(f"cannot read EXR file {path}: it holds no image part; re-export it")
    if any(h <= 0 or w <= 0 for h, w in sizes):
        raise ImageReadError(f"cannot read EXR file {path}: its data window is empty or inverted ({sizes[0][1]}x"
                             f"{sizes[0][0]}); the header is damaged: re-export it")
    h, w = max(sizes, key=lambda s: s[0] * s[1])
    check_pixel_cap(path, w, h, max_pixels, parts=len(sizes), total=sum(a * b for a, b in sizes))
    return sizes[0]


def read_exr(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict[str, np.ndarray]:
    """Read the first part of an OpenEXR file -> ``{channel name: float32 (H,W)}`` (half and uint are converted).

    The header is read first: data windows claiming more than ``max_pixels`` pixels are refused before any pixel
    is decoded (:func:`exr_size`).
    """
    import OpenEXR

    exr_size(path, max_pixels)
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


def exr_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """EXR -> float32 (H,W,C) with C in {1, 3, 4} (Y, RGB, RGBA); layer prefixes like ``beauty.R`` are accepted."""
    channels = read_exr(path, max_pixels)
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
