"""Atomic writes: a file appears complete or not at all, and an existing target survives a failed write.

A writer gets a temporary path beside the target (same folder, so the final ``os.replace`` is atomic on POSIX) and
the temp file is renamed onto the target only when the writer succeeded. A process killed with SIGKILL cannot clean
up, so its temp files stay behind; :func:`remove_stale_temps` finds them by their name pattern (the run lock
guarantees no live writer owns them).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from immersivedepth.errors import ImmersiveDepthError, OutputError
from immersivedepth.io.common import PathLike

__all__ = ["TEMP_PREFIX", "atomic_path", "is_temp_name", "remove_stale_temps", "write_bytes"]

TEMP_PREFIX = ".tmp-"
_TOKEN_BYTES = 6  # secrets.token_hex(6): 12 hex digits, enough that two writers never pick the same name
PARTIAL_MARK = ".partial"  # VideoWriter's fixed temp name is ``<stem>.partial<suffix>`` (see io.video)
_TEMP_RE = re.compile(rf"^{re.escape(TEMP_PREFIX)}[0-9a-f]{{{2 * _TOKEN_BYTES}}}\..+$")
_PARTIAL_RE = re.compile(rf"^.+{re.escape(PARTIAL_MARK)}\.[A-Za-z0-9]+$")

# What to tell the user per errno; the rest get the OS's own words and the generic advice.
_ADVICE = {
    errno.ENOSPC: "the disk is full: free space or set device.base_exp_dir to a disk with room",
    errno.EDQUOT: "the disk quota is exceeded: free space or set device.base_exp_dir elsewhere",
    errno.EROFS: "the file system is read-only: set device.base_exp_dir to a writable folder",
    errno.EACCES: "permission denied: set device.base_exp_dir to a folder you can write",
    errno.EPERM: "permission denied: set device.base_exp_dir to a folder you can write",
    errno.ENOTDIR: "a part of the path is a file, not a folder: move that file or choose another device.base_exp_dir",
    errno.EEXIST: "a part of the path is a file, not a folder: move that file or choose another device.base_exp_dir",
    errno.EISDIR: "the target is a folder: remove or rename it",
}
# torch.save reports disk trouble as RuntimeError from its C++ stream writer, without an errno; these phrases are
# torch's own (caffe2/serialize/inline_container.cc), so only they are turned into OutputError, never other bugs.
_TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "file write failed", "cannot be opened")


def _output_error(path: Path, exc: BaseException) -> OutputError:
    """One line naming ``path``, what the OS said and what to do."""
    code = getattr(exc, "errno", None)
    advice = _ADVICE.get(code)
    if advice is None:
        try:
            free = shutil.disk_usage(next(p for p in (path.parent, *path.parents) if p.exists())).free
        except (OSError, StopIteration):
            free = None
        advice = ("the disk looks full: free space or set device.base_exp_dir elsewhere" if free is not None
                  and free < (1 << 20) else "check that device.base_exp_dir is a writable folder with free space")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
    return OutputError(f"cannot write {path}: {reason}; {advice} (earlier outputs are intact)")


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, ImmersiveDepthError):
        return False
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILURES)


@contextmanager
def atomic_path(path: PathLike, *, temp_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; ``os.replace`` it onto ``path`` when the block succeeds.

    The temp name is ``.tmp-<random>.<name>`` (it keeps the suffix, so writers that dispatch on the
    extension work) unless ``temp_name`` is given. Parent directories are created. If the block raises,
    the temp file is removed and an existing ``path`` is left untouched. Disk trouble (full, read-only,
    a path component that is a file; torch.save's write failures) becomes :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _output_error(path, exc) from exc
    tmp = path.with_name(temp_name or f"{TEMP_PREFIX}{secrets.token_hex(_TOKEN_BYTES)}.{path.name}")
    try:
        yield tmp
        if not tmp.exists():  # a bug in the writer, not disk trouble: keep its traceback
            raise RuntimeError(f"the writer for {path} produced no file at its temporary path {tmp}")
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder vanished or became read-only: the original error is the one to report
        if _is_write_failure(exc):
            raise _output_error(path, exc) from exc
        raise


def write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def is_temp_name(name: str) -> bool:
    """Whether a file name is one :func:`atomic_path` (``.tmp-<12 hex>.<name>``) or VideoWriter (``*.partial.mp4``)
    gives its temporary files."""
    return bool(_TEMP_RE.match(name) or _PARTIAL_RE.match(name))


def remove_stale_temps(root: PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left anywhere under ``root``; returns what was removed.

    Only call it while no writer can be active under ``root`` (hold the run lock): a live writer's temp file has the
    same name pattern. Missing ``root`` -> nothing to do. Symlinks are not followed.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if is_temp_name(name):
                p = Path(folder) / name
                try:
                    p.unlink()
                except FileNotFoundError:
                    continue
                removed.append(p)
    return removed
