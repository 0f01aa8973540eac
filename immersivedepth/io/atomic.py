"""Atomic writes: a file appears complete or not at all, and an existing target survives a failed write."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from immersivedepth.io.common import PathLike


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


def write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
