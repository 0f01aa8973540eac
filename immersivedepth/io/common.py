"""What every io module shares: the path type, the decode error, the existence check."""

from __future__ import annotations

import os
from pathlib import Path

from immersivedepth.errors import InputError

PathLike = str | os.PathLike


class ImageReadError(InputError):
    """A file exists but cannot be decoded (corrupt, truncated, wrong type, unsupported layout)."""


def require_file(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (check the path; relative paths start at {Path.cwd()})")
    return path
