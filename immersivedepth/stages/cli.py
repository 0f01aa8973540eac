"""Command-line checks before Hydra runs: a bad override becomes one line naming the key (and the valid keys), exit 2.

Hydra reports a misspelt key or a value of the wrong type with a multi-line message and exit code 1. The runner's
promise is one line and exit code 2 for every bad input, so ``perf_runner.py`` first composes the config itself
with the same overrides (cheap: no stage runs) and turns a composition error into that line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from immersivedepth.stages.schema import register_configs

__all__ = ["preflight"]

_FULL_KEY = re.compile(r"full_key:\s*(\S+)")


def _valid_keys(config_dir: Path, config_name: str, key: str) -> list[str]:
    """The keys next to ``key`` (its parent's keys) in the default composition, for the error message."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name=config_name)
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig):
        return sorted(str(k) for k in node.keys())
    return []


def _message(exc: BaseException, config_dir: Path, config_name: str) -> str:
    text = "\n".join(str(e) for e in (exc, exc.__cause__) if e is not None)
    m = _FULL_KEY.search(text)
    key = m.group(1) if m else None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    if key and ("not in struct" in text or re.search(r"Key '[^']*' not in", text)):
        valid = _valid_keys(config_dir, config_name, key)
        parent = key.rsplit(".", 1)[0] if "." in key else "the top level"
        return f"unknown key {key}; valid keys under {parent}: {', '.join(valid)}"
    if "Could not find" in first:  # a preset name that does not exist
        what = re.sub(r"^In '[^']*': ", "", first)
        group = re.search(r"Could not find '([^'/]+)/[^']*'", what)
        presets = sorted(f.stem for f in (config_dir / group.group(1)).glob("*.yaml")) if group else []
        if presets:
            return f"{what}: no such preset; {group.group(1)}= takes one of {', '.join(presets)}"
        return f"{what}: no such preset (see the files in configs/<group>/)"
    if key:
        detail = next((line.strip() for line in text.splitlines()
                       if "could not be converted" in line or "Value" in line), first)
        return f"{key}: {detail} (check the value's type in the override)"
    return f"{first} (check the overrides on the command line; quote values with spaces, '=' or brackets)"


def preflight(argv: Sequence[str], config_dir: Path, default_config: str = "nerf") -> str | None:
    """Compose the config the way Hydra will for ``argv``; the one-line error if that fails, else None.

    Sweeps (``-m``/``--multirun``) and Hydra's informational flags (``--help``, ``--cfg``, ``--info``...) are left to
    Hydra. ``default_config`` is the entry point's config name when ``--config-name`` is not given.
    """
    args = list(argv)
    if any(a in ("-m", "--multirun") or a.startswith(("--help", "-h", "--hydra-help", "--info", "--cfg", "-c",
                                                        "--shell-completion", "-sc", "--version")) for a in args):
        return None
    config_name, overrides, i = default_config, [], 0
    while i < len(args):
        a = args[i]
        if a in ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd"):
            if a in ("--config-name", "-cn") and i + 1 < len(args):
                config_name = args[i + 1]
            i += 2
            continue
        if a.startswith("--config-name="):
            config_name = a.split("=", 1)[1]
        elif not a.startswith("-"):
            overrides.append(a)
        i += 1
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        return _message(exc, config_dir, config_name)
    return None
