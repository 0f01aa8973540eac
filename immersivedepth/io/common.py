"""What every io module shares: the path type, the decode error, the existence check."""

from __future__ import annotations

import os
from pathlib import Path

from immersivedepth.errors import InputError, InputNotFoundError

PathLike = str | os.PathLike


class ImageReadError(InputError):
    """A file exists but cannot be decoded (corrupt, truncated, wrong type, unsupported layout)."""


class InputWarning(UserWarning):
    """Something in an input file was changed to make it usable (alpha dropped, resampled, values zeroed).

    Raised through :func:`warnings.warn` with the file's name, so a run's log (``logging.captureWarnings``) and
    ``pytest.warns`` both see it; a ``UserWarning`` so existing filters keep working.
    """


def require_file(path: PathLike, what: str) -> Path:
    """``path`` as a ``Path`` if it is an existing file; otherwise one line saying what it is instead."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not a file; pass the file inside it")
    if path.exists():  # a FIFO, socket or device: reading it would block or make no sense
        raise InputError(f"{what} {path} is not a regular file; pass an image/distance file")
    hint = f"relative paths start at {Path.cwd()}" if not path.is_absolute() else "check the path"
    if not path.parent.is_dir():
        hint = f"its folder {path.parent} does not exist either; {hint}"
    raise InputNotFoundError(f"{what} not found: {path} ({hint})")
