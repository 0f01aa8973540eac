"""The one error hierarchy of the project.

Every failure a user can cause or fix (a bad file, a bad config value, a checkpoint that does not fit, a run that
cannot proceed) is an :class:`ImmersiveDepthError`. Its message is one line that names the file or config key, says
what was wrong and what to do. ``stages.runner.main`` catches exactly this type and turns it into that line on the
console and in the run's log, a ``failed`` stage status and exit code 2; anything else is a bug and keeps its
traceback.

The subclasses also derive from the builtin type a caller would naturally catch (``ValueError`` for bad values,
``FileNotFoundError`` for a missing file, ``OSError`` for disk trouble), so library users need not import this module.
"""

from __future__ import annotations

__all__ = [
    "ImmersiveDepthError",
    "ConfigError",
    "InputError",
    "InputNotFoundError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "RunError",
    "OutputError",
    "one_line",
]


class ImmersiveDepthError(Exception):
    """A user-facing failure; ``str(exc)`` is the one line shown to the user."""


class ConfigError(ImmersiveDepthError, ValueError):
    """A config key is unknown, or its value has the wrong type or range (the message names the dotted key)."""


class InputError(ImmersiveDepthError, ValueError):
    """An input file (panorama, distance map, poses file, camera path) cannot be used as it is."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input file or folder does not exist."""


class CheckpointError(ImmersiveDepthError, ValueError):
    """A checkpoint (depth network or radiance field) is missing, corrupt, foreign or from another config."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint file does not exist (the message says where to get it)."""


class RunError(ImmersiveDepthError, RuntimeError):
    """The run cannot proceed: a previous stage's output is missing, the run directory is busy, a stage failed."""


class OutputError(ImmersiveDepthError, OSError):
    """An output could not be written (read-only or full disk, a path that is a file); earlier outputs are intact."""


def one_line(exc: BaseException, limit: int = 600) -> str:
    """``str(exc)`` folded onto one line (newlines become ``; ``), cut at ``limit`` characters with an ellipsis."""
    text = " ".join(part.strip() for part in str(exc).replace("\r", "\n").split("\n") if part.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
