"""Ctrl-C and SIGTERM as a graceful "stop requested" flag.

Cluster pre-emption and ``docker stop`` send SIGTERM, a user presses Ctrl-C (SIGINT): both mean "finish the current
step, save, and exit". The first signal only sets a flag that long loops poll between steps; a second signal of
either kind raises :class:`KeyboardInterrupt` at once (the user insists; the last periodic checkpoint survives
because every write is atomic). Python runs signal handlers only in the main thread, so off the main thread the
context manager changes nothing and the flag is never set (the caller's own thread keeps its behaviour).

    with graceful_stop() as stop:
        for step in ...:
            ...
            if stop.requested:
                save(); break
    sys.exit(stop.exit_code)   # 130 after SIGINT, 143 after SIGTERM, as shells report them
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["DEFAULT_SIGNALS", "StopFlag", "graceful_stop"]

LOG = logging.getLogger("immersivedepth.interrupts")
DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
_SHELL_SIGNAL_BASE = 128  # a process ended by signal N reports exit status 128 + N in POSIX shells


@dataclass
class StopFlag:
    """Set by the first handled signal: ``requested``, which ``signum`` it was; ``active`` when handlers are in place
    (False off the main thread)."""

    requested: bool = False
    signum: int | None = None
    active: bool = False

    def __bool__(self) -> bool:
        return self.requested

    @property
    def signal_name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The exit status a shell shows for the signal (130 for SIGINT, 143 for SIGTERM); 0 when none came."""
        return 0 if self.signum is None else _SHELL_SIGNAL_BASE + int(self.signum)


@contextmanager
def graceful_stop(signals: Sequence[int] = DEFAULT_SIGNALS) -> Iterator[StopFlag]:
    """Install handlers for ``signals`` that set the yielded :class:`StopFlag`; a second signal raises
    ``KeyboardInterrupt``. The previous handlers are restored on exit, whatever happens inside.

    A signal that was ignored (``SIG_IGN``, e.g. SIGINT of a background job started with ``nohup``) stays ignored.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal.signal() only works in the main thread: leave the process's handlers alone
        return
    previous: dict[int, object] = {}

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        flag.requested, flag.signum = True, signum
        LOG.warning("%s received: finishing the current step and saving; send it again to stop at once",
                    signal.Signals(signum).name)

    try:
        for sig in signals:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue
            previous[sig] = old
            signal.signal(sig, handler)
        flag.active = bool(previous)
        yield flag
    finally:
        for sig, old in previous.items():
            # getsignal() returns None for handlers installed from C; SIG_DFL is the closest restorable value
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
