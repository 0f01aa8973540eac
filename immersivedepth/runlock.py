"""One run per run directory: an exclusive ``fcntl.flock`` on ``<run_dir>/.lock``.

Two runs on the same directory would interleave their ``run.json`` updates and let one reuse the other's
half-finished outputs, so the second one refuses with a message naming the running one (pid, host, start time,
command), or waits for it when asked. The kernel drops a flock when its process dies, even on SIGKILL, so the lock
of a dead run never blocks anyone: its record is simply overwritten (and reported as taken over). The lock file is
kept after release: deleting it would let a third process lock a fresh inode while a second still waits on the old.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from immersivedepth.errors import OutputError, RunError

__all__ = ["LOCK_NAME", "LockHolder", "RunLock", "read_holder"]

LOG = logging.getLogger("immersivedepth.runlock")
LOCK_NAME = ".lock"


class LockHolder(dict):
    """The JSON record in a lock file: ``pid``, ``host``, ``started`` (ISO time), ``command``."""

    def describe(self) -> str:
        return (f"pid {self.get('pid', '?')} on {self.get('host', '?')} since {self.get('started', '?')} "
                f"(command: {self.get('command', '?')})")

    def is_dead_here(self) -> bool:
        """True when the holder ran on this host and its pid no longer exists."""
        if self.get("host") != socket.gethostname() or not isinstance(self.get("pid"), int):
            return False
        try:
            os.kill(self["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by someone else
            return False
        return False


def read_holder(lock_path: Path) -> LockHolder | None:
    """The record in ``lock_path``, or ``None`` when the file is missing, empty or not ours."""
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return LockHolder(data) if isinstance(data, dict) else None


class RunLock:
    """``with RunLock(run_dir, wait=False): ...`` holds ``run_dir/.lock`` exclusively for the block.

    ``wait=False``: a held lock raises :class:`RunError` naming the holder and what to do. ``wait=True``: log that
    it waits, then block until the holder ends (Ctrl-C still interrupts). ``previous`` is the record of a dead run
    whose lock was taken over (``None`` otherwise). ``wait_hint`` names the config key that makes a run wait.
    """

    def __init__(self, run_dir: str | os.PathLike, *, wait: bool = False, command: str | None = None,
                 wait_hint: str = "wait_for_lock=true"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.wait = wait
        self.command = command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.wait_hint = wait_hint
        self.previous: LockHolder | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the run lock {self.path}: {exc.strerror}; set device.base_exp_dir to a "
                              "writable folder") from exc
        try:
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        old = read_holder(self.path)
        if old is not None and old.get("pid") != os.getpid():
            self.previous = old
            LOG.info("run lock %s: taking over from a run that ended without releasing it: %s", self.path,
                     old.describe())
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        return self

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                # some network file systems have no flock: run unprotected rather than not at all, but say so
                LOG.warning("run lock %s: this file system cannot lock files (%s); make sure no other run uses "
                            "this run directory", self.path, exc.strerror)
                return
            raise
        holder = read_holder(self.path)
        who = holder.describe() if holder else "another process"
        if holder is not None and holder.is_dead_here():
            # flock outlives its process only through a forked child that inherited the descriptor
            raise RunError(f"run directory {self.run_dir} is locked by {who}, which is no longer running, but a "
                           "process it forked still holds the lock; end that process or choose another exp_name")
        if not self.wait:
            raise RunError(f"run directory {self.run_dir} is in use by {who}; wait for it to finish, pass "
                           f"{self.wait_hint} to wait for it, or choose another exp_name")
        LOG.warning("run directory %s is in use by %s; waiting for it to finish (Ctrl-C to give up)", self.run_dir, who)
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks; a signal handler that raises (Ctrl-C) still interrupts it

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # an empty lock file = nobody holds it
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
