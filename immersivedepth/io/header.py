"""What an image file's header says before any pixel is decoded: its size and its EXIF orientation.

Pillow parses only the header on ``Image.open`` (pixels are decoded lazily), so a file that claims an absurd size is
refused before gigabytes are allocated, and the EXIF orientation a camera wrote is known before the decode. OpenCV's
``IMREAD_UNCHANGED`` (which keeps 16-bit and alpha) ignores EXIF orientation, so it is applied here afterwards.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from immersivedepth.io.common import ImageReadError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageHeader", "apply_orientation", "check_pixel_cap", "read_header"]

# The library default of ``dataset.max_pixels``: 2^28 pixels (e.g. 23170x11585) is already 3.2 GB as float32 RGB,
# beyond any camera panorama (the largest consumer 360 cameras give ~12K x 6K = 72 Mpx).
DEFAULT_MAX_PIXELS = 1 << 28

_EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the operation that turns the stored pixels into the displayed picture (EXIF 2.32, tag 274).
_ORIENTATION_NAMES = {
    1: "as stored", 2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
    5: "transposed", 6: "rotated 90 degrees clockwise", 7: "transversed", 8: "rotated 90 degrees counter-clockwise",
}


@dataclass(frozen=True)
class ImageHeader:
    """``width`` x ``height`` as stored in the file, and the EXIF ``orientation`` (1 when absent or unreadable).

    ``decoder_orients``: the decoder already turns the pixels by ``orientation`` (OpenCV does for a TIFF's own
    Orientation tag, even with ``IMREAD_UNCHANGED``), so the reader must not turn them again.
    """

    width: int
    height: int
    orientation: int = 1
    decoder_orients: bool = False

    @property
    def swaps_axes(self) -> bool:
        """Orientations 5-8 turn the picture by 90 degrees: the displayed width is the stored height."""
        return self.orientation in (5, 6, 7, 8)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) after the orientation is applied."""
        return (self.height, self.width) if self.swaps_axes else (self.width, self.height)

    def describe_orientation(self) -> str:
        return f"EXIF orientation {self.orientation} ({_ORIENTATION_NAMES.get(self.orientation, 'unknown')})"


def read_header(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageHeader | None:
    """The header of a raster file Pillow can parse (or a TIFF it cannot, e.g. float RGB), or ``None`` (then OpenCV
    alone decides whether it decodes).

    Raises :class:`ImageReadError` when the header claims more than ``max_pixels`` pixels (``None``: no cap), before
    any pixel is decoded. Pillow's own decompression-bomb guard is silenced: the cap is ours and names the config key.
    A TIFF's size and orientation come from its own directory (Pillow reports a TIFF's size already turned).
    """
    tiff = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if im.format == "TIFF":
                    tiff = _tiff_header(path) or (width, height, 1)  # Pillow's size is the displayed one
                try:
                    orientation = int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1))
                except Exception:  # a damaged EXIF block must not stop a readable image: the pixels decide
                    orientation = 1
    except Image.DecompressionBombError as exc:
        # Pillow refuses above twice its own MAX_IMAGE_PIXELS before telling the size; its message holds the count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else None
        if max_pixels is None or pixels is None or pixels <= int(max_pixels):
            return None  # allowed by our cap: OpenCV decodes it (orientation unknown, taken as stored)
        raise ImageReadError(_cap_message(path, f"{pixels} pixels", max_pixels)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # Pillow knows no float RGB(A) TIFF, which OpenCV decodes: read its size from the TIFF directory ourselves
        tiff = _tiff_header(path)
        if tiff is None:
            return None
    if tiff is not None:
        width, height, orientation = tiff
    check_pixel_cap(path, width, height, max_pixels)
    if orientation not in _ORIENTATION_NAMES:
        orientation = 1
    return ImageHeader(int(width), int(height), orientation, decoder_orients=tiff is not None)


def check_pixel_cap(path: Path, width: int, height: int, max_pixels: int | None, *, parts: int = 1,
                    total: int | None = None) -> None:
    """Raise :class:`ImageReadError` naming ``path``, the claimed size and ``dataset.max_pixels`` when a header claims
    more than ``max_pixels`` pixels (``None``: no cap). A file holding several images (an EXR's ``parts``) passes
    the largest as ``width`` x ``height`` and their sum as ``total``: the whole file is decoded."""
    pixels = int(width) * int(height) if total is None else int(total)
    if max_pixels is None or pixels <= int(max_pixels):
        return
    claimed = f"{int(width)}x{int(height)} pixels"
    if parts > 1:
        claimed = f"{pixels} pixels in {parts} parts (the largest {int(width)}x{int(height)})"
    raise ImageReadError(_cap_message(path, claimed, max_pixels))


# TIFF field types -> (struct code, size) for the tags read here (SHORT, LONG, LONG8)
_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
_TIFF_WIDTH, _TIFF_LENGTH, _TIFF_ORIENTATION = 256, 257, 274


def _tiff_header(path: Path) -> tuple[int, int, int] | None:
    """``(width, height, orientation)`` from the first directory of a TIFF / BigTIFF file, or ``None`` if ``path`` is
    not one (or its first directory lacks a size). Reads a few hundred bytes, never the pixels."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None or len(head) < 16:
                return None
            version = struct.unpack(order + "H", head[2:4])[0]
            if version == 42:  # classic TIFF: 2-byte count, 12-byte entries, 4-byte values
                (offset,) = struct.unpack(order + "I", head[4:8])
                count_fmt, entry_size, value_at = "H", 12, 8
            elif version == 43:  # BigTIFF: 8-byte count, 20-byte entries, 8-byte values
                (offset,) = struct.unpack(order + "Q", head[8:16])
                count_fmt, entry_size, value_at = "Q", 20, 12
            else:
                return None
            f.seek(offset)
            count_size = struct.calcsize(count_fmt)
            raw = f.read(count_size)
            if len(raw) < count_size:
                return None
            (n,) = struct.unpack(order + count_fmt, raw)
            table = f.read(min(int(n), 4096) * entry_size)
    except OSError:
        return None
    tags = {}
    for k in range(len(table) // entry_size):
        entry = table[k * entry_size:(k + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (_TIFF_WIDTH, _TIFF_LENGTH, _TIFF_ORIENTATION) and kind in _TIFF_TYPES:
            code, size = _TIFF_TYPES[kind]
            tags[tag] = struct.unpack(order + code, entry[value_at:value_at + size])[0]
    if _TIFF_WIDTH not in tags or _TIFF_LENGTH not in tags:
        return None
    return int(tags[_TIFF_WIDTH]), int(tags[_TIFF_LENGTH]), int(tags.get(_TIFF_ORIENTATION, 1))


def _cap_message(path: Path, claimed: str, max_pixels: int) -> str:
    return (f"image {path} claims {claimed} in its header, more than the cap of {int(max_pixels)} pixels "
            "(dataset.max_pixels): the header is damaged or the image is far too large; downscale it to a 2:1 "
            "panorama (e.g. 8192x4096) or raise dataset.max_pixels")


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels ``(H,W[,C])`` -> the picture a viewer shows for that EXIF orientation (``(W,H[,C])`` for 5-8)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, k=-1),  # 90 degrees clockwise
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, k=1),  # 90 degrees counter-clockwise
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(img))
