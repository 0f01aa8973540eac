"""What an image file's header says before any pixel is decoded: its size and its EXIF orientation.

Pillow parses only the header on ``Image.open`` (pixels are decoded lazily), so a file that claims an absurd size is
refused before gigabytes are allocated, and the EXIF orientation a camera wrote is known before the decode. OpenCV's
``IMREAD_UNCHANGED`` (which keeps 16-bit and alpha) ignores EXIF orientation, so it is applied here afterwards.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from immersivedepth.io.common import ImageReadError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageHeader", "apply_orientation", "read_header"]

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
    """``width`` x ``height`` as stored in the file, and the EXIF ``orientation`` (1 when absent or unreadable)."""

    width: int
    height: int
    orientation: int = 1

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
    """The header of a raster file Pillow can parse, or ``None`` (then OpenCV alone decides whether it decodes).

    Raises :class:`ImageReadError` when the header claims more than ``max_pixels`` pixels (``None``: no cap), before
    any pixel is decoded. Pillow's own decompression-bomb guard is silenced: the cap is ours and names the config key.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
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
        return None
    if max_pixels is not None and width * height > int(max_pixels):
        raise ImageReadError(_cap_message(path, f"{width}x{height} pixels", max_pixels))
    if orientation not in _ORIENTATION_NAMES:
        orientation = 1
    return ImageHeader(int(width), int(height), orientation)


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
