"""Typed schema of the ``evaluate:`` keys: type, default and meaning of each in one place.

It is the ``evaluate`` section of the run's schema (``stages/config.py`` RunConfig, registered with Hydra);
:func:`eval_config` builds it from the run's ``evaluate`` node with :func:`immersivedepth.config.from_mapping`, so a
wrong key or value fails with the dotted key's name before any work starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from immersivedepth.config import from_mapping, non_negative, one_of, positive, require

__all__ = ["ALIGNMENTS", "EvaluateConfig", "LpipsConfig", "VisibilityConfig", "eval_config"]

ALIGNMENTS = ("none", "median_scale", "lsq_depth", "lsq_disparity")
LPIPS_NETS = ("alex", "vgg", "squeeze")  # the lpips package's backbones


@dataclass
class VisibilityConfig:
    # a novel-view pixel is visible when | |P| - D0(P/|P|) | <= rel_tol * |P|  (eval/visibility.py)
    rel_tol: float = 0.01

    def __post_init__(self):
        non_negative(self.rel_tol, "evaluate.visibility.rel_tol")


@dataclass
class LpipsConfig:
    # LPIPS needs `pip install -r requirements-lpips.txt` and the backbone weights in torch's hub cache
    enabled: bool = False
    net: str = "alex"  # alex | vgg | squeeze

    def __post_init__(self):
        one_of(self.net, LPIPS_NETS, "evaluate.lpips.net")


@dataclass
class EvaluateConfig:
    # ground-truth distance: a path template with {dir} (the image's folder) and {stem} (its stem minus
    # image_suffix), e.g. '{dir}/{stem}_distance.exr'; null: the run's reference distance
    gt_distance: str | None = None
    image_suffix: str = ""  # stripped from the image stem before it fills {stem} (e.g. _rgb for room_rgb.png)
    gt_format: Any = None  # GT encoding: a distance preset or {scale: .., invalid: ..}; null: dataset.distance_format
    alignment: str = "median_scale"  # none | median_scale | lsq_depth | lsq_disparity -- named in every output
    max_distance: float = 10.0  # metres; GT beyond it is not scored (the usual 360-depth cap)
    pole_cap_deg: float = 0.0  # ignore pixels within this many degrees of either pole (0: the whole sphere)
    figures: bool = True  # eval/depth_error.png and eval/novel_<pose>.png
    # novel views: folder with poses.json + gt/<pose>.png + gt/<pose>_distance.npy; null: the image's folder
    gt_dir: str | None = None
    visibility: VisibilityConfig = dataclass_field(default_factory=VisibilityConfig)
    lpips: LpipsConfig = dataclass_field(default_factory=LpipsConfig)

    def __post_init__(self):
        one_of(self.alignment, ALIGNMENTS, "evaluate.alignment")
        positive(self.max_distance, "evaluate.max_distance")
        non_negative(self.pole_cap_deg, "evaluate.pole_cap_deg")
        require(self.pole_cap_deg < 90.0, "evaluate.pole_cap_deg",
                f"must be below 90 (caps of {self.pole_cap_deg} degrees at both poles leave no pixel), got "
                f"{self.pole_cap_deg}")
        if self.gt_distance is not None:
            try:
                self.gt_distance.format(dir="d", stem="s")
            except (KeyError, IndexError, ValueError) as exc:
                require(False, "evaluate.gt_distance", f"{self.gt_distance!r} is not a valid template (unknown field "
                        f"{exc}); use the fields {{dir}} and {{stem}}, e.g. '{{dir}}/{{stem}}_distance.exr'")


def eval_config(node: Mapping | Any) -> EvaluateConfig:
    """The ``evaluate`` node (DictConfig, dict or None) as :class:`EvaluateConfig`; errors name the key."""
    return from_mapping(EvaluateConfig, node, "evaluate")
