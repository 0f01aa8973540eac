"""Registers the typed schemas with Hydra's ConfigStore, so the YAML files in ``configs/`` are overlays.

* ``run_schema`` -- the run's own keys (:class:`~immersivedepth.stages.config.RunConfig`), first in ``nerf.yaml``'s
  defaults list;
* ``<group>/schema`` -- each stage's config group schema; ``configs/<group>/default.yaml`` selects it and the other
  presets of the group start from ``default``.

Import this module before Hydra composes a config (``perf_runner.py`` and ``app.py`` do).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from immersivedepth.stages.config import RunConfig
from immersivedepth.stages.registry import all_stages

__all__ = ["register_configs", "compose_config", "CONFIG_DIR"]

#: the repository's config folder (the command line's); scripts and benchmarks compose from it
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

_DONE: list[bool] = []


def register_configs() -> None:
    """Store ``run_schema`` and every stage's ``<group>/schema`` (idempotent)."""
    if _DONE:
        return
    cs = ConfigStore.instance()
    groups = [s for s in all_stages() if s.config_group and s.config_schema is not None]
    # the root holds the run's own typed keys plus one slot per config group, which the group's own schema fills
    root = dataclasses.make_dataclass("NerfConfig", [(s.config_group, Any, None) for s in groups],
                                      bases=(RunConfig,))
    cs.store(name="run_schema", node=root)
    for stage in groups:
        cs.store(group=stage.config_group, name="schema", node=stage.config_schema)
    _DONE.append(True)


def compose_config(overrides=(), config_name: str = "nerf") -> DictConfig:
    """The config exactly as the command line composes it from ``configs/`` (for scripts and benchmarks):
    e.g. ``compose_config(["field=fast"]).field``."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))
