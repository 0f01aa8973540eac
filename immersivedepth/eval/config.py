"""Typed view of the ``evaluate:`` config group (defaults live in ``configs/nerf.yaml`` only).

Every key is checked once here, so a wrong value fails with the dotted key's name before any work starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from immersivedepth.errors import ConfigError

ALIGNMENTS = ("none", "median_scale", "lsq_depth", "lsq_disparity")


@dataclass(frozen=True)
class VisibilityConfig:
    rel_tol: float  # | |P| - D0(P/|P|) | <= rel_tol * |P|  (see eval/visibility.py)


@dataclass(frozen=True)
class LpipsConfig:
    enabled: bool
    net: str  # alex | vgg | squeeze (the lpips package's backbones)


@dataclass(frozen=True)
class EvalConfig:
    gt_dir: str | None  # novel-view ground truth: poses.json + gt/<pose>.png + gt/<pose>_distance.npy
    gt_distance: str | None  # template of the GT distance path ({dir}, {stem}); None: the run's reference
    image_suffix: str  # stripped from the image's stem before it fills {stem}
    gt_format: Any  # distance preset name or {scale, invalid}; None: dataset.distance_format
    alignment: str
    max_distance: float
    pole_cap_deg: float
    run_depth: bool
    figures: bool
    visibility: VisibilityConfig
    lpips: LpipsConfig


def _get(node: Mapping, key: str) -> Any:
    if key not in node:
        raise ConfigError(f"evaluate.{key} is missing from the config; add it (see configs/nerf.yaml)")
    return node[key]


def eval_config(node: DictConfig | Mapping) -> EvalConfig:
    """Validate the ``evaluate`` node and return it typed; raises :class:`ConfigError` naming the key."""
    raw = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    alignment = str(_get(raw, "alignment"))
    if alignment not in ALIGNMENTS:
        raise ConfigError(f"evaluate.alignment={alignment!r} is not an alignment; use one of {', '.join(ALIGNMENTS)}")
    numbers = {}
    for key, lower, inclusive in (("max_distance", 0.0, False), ("pole_cap_deg", 0.0, True)):
        try:
            value = float(_get(raw, key))
        except (TypeError, ValueError):
            raise ConfigError(f"evaluate.{key}={raw.get(key)!r} is not a number") from None
        if not (value >= lower if inclusive else value > lower):
            raise ConfigError(f"evaluate.{key}={value} must be {'>=' if inclusive else '>'} {lower}")
        numbers[key] = value
    if numbers["pole_cap_deg"] >= 90.0:
        raise ConfigError(f"evaluate.pole_cap_deg={numbers['pole_cap_deg']} leaves no pixel; use a value below 90")
    vis, lp = _get(raw, "visibility"), _get(raw, "lpips")
    rel_tol = float(_get(vis, "rel_tol"))
    if not rel_tol >= 0:
        raise ConfigError(f"evaluate.visibility.rel_tol={rel_tol} must be >= 0")
    template = _get(raw, "gt_distance")
    if template is not None and "{" in str(template):
        try:
            str(template).format(dir="d", stem="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"evaluate.gt_distance={template!r} is not a valid template ({exc}); "
                              "use the fields {dir} and {stem}, e.g. '{dir}/{stem}_distance.exr'") from None
    return EvalConfig(
        gt_dir=None if _get(raw, "gt_dir") in (None, "") else str(raw["gt_dir"]),
        gt_distance=None if template in (None, "") else str(template),
        image_suffix=str(_get(raw, "image_suffix") or ""),
        gt_format=_get(raw, "gt_format"),
        alignment=alignment,
        max_distance=numbers["max_distance"],
        pole_cap_deg=numbers["pole_cap_deg"],
        run_depth=bool(_get(raw, "run_depth")),
        figures=bool(_get(raw, "figures")),
        visibility=VisibilityConfig(rel_tol=rel_tol),
        lpips=LpipsConfig(enabled=bool(_get(lp, "enabled")), net=str(_get(lp, "net"))),
    )
