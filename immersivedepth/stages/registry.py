"""Finding the stages: every module of this package that defines ``STAGE`` (a :class:`Stage` instance)."""

from __future__ import annotations

import importlib
import pkgutil

import immersivedepth.stages as _package
from immersivedepth.stages.base import Stage

__all__ = ["all_stages", "pipeline", "modes", "stage_named"]

_CACHE: list[Stage] = []


def all_stages() -> list[Stage]:
    """Every stage, in pipeline order."""
    if not _CACHE:
        found = []
        for info in pkgutil.iter_modules(_package.__path__):
            module = importlib.import_module(f"{_package.__name__}.{info.name}")
            stage = getattr(module, "STAGE", None)
            if isinstance(stage, Stage):
                found.append(stage)
        _CACHE.extend(sorted(found, key=lambda s: s.order))
    return list(_CACHE)


def pipeline() -> list[Stage]:
    """The stages ``mode=all`` runs, in order."""
    return [s for s in all_stages() if s.in_pipeline]


def modes() -> tuple[str, ...]:
    """Valid values of ``mode``: every stage's name and ``all``."""
    return tuple(s.name for s in all_stages()) + ("all",)


def stage_named(name: str) -> Stage:
    for s in all_stages():
        if s.name == name:
            return s
    raise KeyError(name)
