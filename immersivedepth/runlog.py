"""Python warnings into the run's log, and torch's CUDA probe line out of CPU runs.

Library code reports fixable oddities with :func:`warnings.warn` (alpha dropped, resampled to 2:1, HDR values,
NaN zeroed, the C++ op unavailable); on the command line those must reach the console *and* ``log.txt``.
``logging.captureWarnings`` alone sends them to the ``py.warnings`` logger, which has none of the run's handlers, and
formats them with the source line. :func:`warnings_to_log` instead logs ``<Category>: <message>`` on the run's logger
while the block runs, and shows each of the project's input warnings once per file (not once per process: a second
run in the same process, e.g. the web app, must see them again).

:func:`silence_cuda_probe` drops the "No CUDA runtime is found, using CUDA_HOME=..." line that
``torch.utils.cpp_extension`` logs on import on every machine without a GPU: it is noise on a CPU run, where no
CUDA code is ever built.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from immersivedepth.io import InputWarning

__all__ = ["CUDA_PROBE_LOGGER", "CudaProbeFilter", "silence_cuda_probe", "warnings_to_log"]

CUDA_PROBE_LOGGER = "torch.utils.cpp_extension"
_CUDA_PROBE_PREFIX = "No CUDA runtime is found"


class _Forward(logging.Handler):
    """Passes records of ``py.warnings`` (``logging.captureWarnings``) on to the run's logger."""

    def __init__(self, target: logging.Logger):
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


def _one_line(message, category, filename, lineno, line=None) -> str:
    return f"{category.__name__}: {message}"


@contextmanager
def warnings_to_log(logger: logging.Logger) -> Iterator[None]:
    """Inside the block every shown warning becomes one WARNING record ``<Category>: <message>`` on ``logger`` (its
    handlers: console and ``log.txt``). Filters, ``showwarning`` and ``formatwarning`` are restored afterwards;
    :class:`immersivedepth.io.InputWarning` is shown for each distinct message (the message names the file).

    Works whether or not ``logging.captureWarnings(True)`` is called inside the block (a runner that sets up its log
    handlers there): captured warnings go to the ``py.warnings`` logger, whose records are forwarded to ``logger``,
    and ``formatwarning`` gives them the same one-line form.
    """

    def show(message, category, filename, lineno, file=None, line=None):
        logger.warning("%s", _one_line(message, category, filename, lineno))

    captured = logging.getLogger("py.warnings")
    forward = _Forward(logger)
    saved_format = warnings.formatwarning
    with warnings.catch_warnings():
        # catch_warnings restores showwarning and the filters; mutating the filters also resets the per-module
        # "already shown" registries, so a warning from an earlier run in this process is shown again
        warnings.showwarning = show
        warnings.formatwarning = _one_line
        warnings.filterwarnings("default", category=InputWarning)
        captured.addHandler(forward)
        try:
            yield
        finally:
            captured.removeHandler(forward)
            warnings.formatwarning = saved_format


class CudaProbeFilter(logging.Filter):
    """Drops torch's "No CUDA runtime is found" record; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CUDA_PROBE_PREFIX)


def silence_cuda_probe(cuda_available: bool) -> None:
    """On a run without CUDA, drop torch's CUDA probe line. Call before ``torch.utils.cpp_extension`` is first
    imported (the line is logged at its import); idempotent; does nothing when CUDA is available, where the line
    would mean a real misconfiguration."""
    if cuda_available:
        return
    logger = logging.getLogger(CUDA_PROBE_LOGGER)
    if not any(isinstance(f, CudaProbeFilter) for f in logger.filters):
        logger.addFilter(CudaProbeFilter())
