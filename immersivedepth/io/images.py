"""Panoramas and images: PNG/JPEG/TIFF (8/16-bit, gray, RGBA, palette) and EXR in, PNG/JPEG/TIFF out."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from immersivedepth.errors import InputError
from immersivedepth.io.atomic import write_bytes
from immersivedepth.io.common import ImageReadError, InputWarning, PathLike, require_file
from immersivedepth.io.exr import exr_image, exr_size
from immersivedepth.io.header import DEFAULT_MAX_PIXELS, ImageHeader, apply_orientation, read_header


def decode_raster(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageHeader | None]:
    """PNG/JPEG/TIFF/... -> (pixels as displayed, header): OpenCV's IMREAD_UNCHANGED array (BGR[A], 8/16-bit kept)
    turned by the file's EXIF orientation; the header (``None`` if no header reader knows the format) tells which one it
    was.

    A header claiming more than ``max_pixels`` pixels is refused before decoding.
    """
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"cannot read image {path}: the file is empty; re-export it as PNG, JPEG, TIFF or EXR")
    header = read_header(path, max_pixels)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(
            f"cannot read image {path}: OpenCV could not decode it (corrupt, truncated or not an image file); "
            "re-export it as PNG, JPEG, TIFF or EXR"
        )
    if header is not None and header.orientation != 1 and not header.decoder_orients:
        img = apply_orientation(img, header.orientation)
    return img, header


def _to_rgb(img: np.ndarray, path: Path, bgr: bool) -> np.ndarray:
    """(H,W) / (H,W,1|2|3|4) -> (H,W,3); alpha is dropped with a warning naming the file."""
    if img.ndim == 2:
        img = img[..., None]
    n = img.shape[2]
    if n in (2, 4):
        warnings.warn(f"{path} has an alpha channel; it was dropped (the colour channels are used as they are)",
                      InputWarning, stacklevel=3)
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
        warnings.warn(f"{path}: {int(bad.sum())} non-finite pixel values (NaN/inf) were set to 0", InputWarning,
                      stacklevel=3)
        img[bad] = 0.0
    if img.size and (img.min() < 0.0 or img.max() > 1.0):
        warnings.warn(f"{path} holds linear float values in [{img.min():.4g}, {img.max():.4g}], outside [0, 1]; "
                      "they are kept as they are (not clipped or tone-mapped)", InputWarning, stacklevel=3)
    return img


def _resample_to_2to1(img: np.ndarray) -> np.ndarray:
    """(H,W,3) -> (H,2H,3): INTER_AREA when the width shrinks, cubic when it grows (clipped to the input range)."""
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if 2 * h < w else cv2.INTER_CUBIC
    out = cv2.resize(img, (2 * h, h), interpolation=interp)
    return np.clip(out, img.min(), img.max()).astype(np.float32)


def read_panorama(path: PathLike, allow_resample: bool = False, *,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an equirectangular panorama -> float32 ``(H,W,3)`` RGB.

    8/16-bit files are scaled to [0, 1]; gray is repeated to RGB; an alpha channel is dropped with a warning;
    palette images are expanded; a JPEG's (or PNG's/TIFF's) EXIF orientation is applied, as every viewer does.
    EXR/float-TIFF values are linear and kept unclipped (warning when outside [0, 1]; non-finite values become 0).
    A file whose header claims more than ``max_pixels`` pixels (``dataset.max_pixels``) is refused before decoding.
    A panorama whose width is not twice its height raises :class:`InputError` unless ``allow_resample``
    (Hydra: ``dataset.allow_resample=true``), which resizes the width to ``2*H`` with a warning naming both sizes.
    """
    path = require_file(path, "panorama")
    header = None
    if path.suffix.lower() == ".exr":
        img = _to_rgb(exr_image(path, max_pixels), path, bgr=False)
    else:
        raw, header = decode_raster(path, max_pixels)
        img = _to_rgb(raw, path, bgr=True)
    img = np.ascontiguousarray(_to_unit_float(img, path))
    h, w = img.shape[:2]
    if w != 2 * h:
        turned = ""
        if header is not None and header.orientation != 1:
            turned = (f" after applying its {header.describe_orientation()} (stored as {header.width}x"
                      f"{header.height})")
        if not allow_resample:
            raise InputError(
                f"panorama {path} is {w}x{h} (width x height){turned} but an equirectangular panorama must be 2:1 "
                f"(width = 2*height = {2 * h}); pass allow_resample=True (dataset.allow_resample=true) to resize it"
            )
        warnings.warn(f"panorama {path} is {w}x{h}{turned}, not 2:1; resampled to {2 * h}x{h}", InputWarning,
                      stacklevel=2)
        img = _resample_to_2to1(img)
    return img


def panorama_size(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The file's ``(H, W)`` as displayed (EXIF orientation applied), before any 2:1 resampling.

    Reads only the header (Pillow's, a TIFF's directory or an EXR's data window); exotic files are decoded.
    """
    path = require_file(path, "panorama")
    if path.suffix.lower() != ".exr":
        header = read_header(path, max_pixels)
        if header is not None:
            w, h = header.display_size
            return h, w
        return decode_raster(path, max_pixels)[0].shape[:2]
    return exr_size(path, max_pixels)


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
    write_bytes(path, buf.tobytes())
