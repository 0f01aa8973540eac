"""The ``inpaint`` config group: its typed schema -- every key, default and meaning (the one place they live).

``configs/inpaint/default.yaml`` selects these defaults; ``fast.yaml`` lists what the fast preset changes and
``none.yaml`` switches the stage off. Unknown keys, wrong types and out-of-range values are
:class:`~immersivedepth.errors.ConfigError` s naming the dotted key (``inpaint.anchors.count must be >= 0, ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from immersivedepth.config import non_negative, positive, require

__all__ = ["InpaintConfig", "DEFAULT_INPAINTER", "DEFAULT_COMPLETION", "AnchorConfig", "VisibilityConfig",
           "ConflictConfig", "DiffusionConfig",
           "InpaintTrainConfig"]


@dataclass
class AnchorFreeSpace:
    """``inpaint.anchors.free_space``: a candidate must lie this far inside what the centre saw."""

    margin: float = 0.15  # world units kept between an anchor and any surface seen in the distance map
    max_fraction: float = 0.8  # never farther than this fraction of the distance to the wall in that direction
    erode_deg: float = 3.0  # angular min-filter on the distance map (keeps clear of thin structures)

    def __post_init__(self):
        non_negative(self.margin, "inpaint.anchors.free_space.margin")
        require(0 < self.max_fraction <= 1, "inpaint.anchors.free_space.max_fraction",
                f"must be in (0, 1], got {self.max_fraction}")
        non_negative(self.erode_deg, "inpaint.anchors.free_space.erode_deg")


@dataclass
class AnchorConfig:
    """``inpaint.anchors``: candidates along the render paths and on PERF's rings, chosen greedily."""

    count: int = 8  # anchors to inpaint, chosen greedily by newly revealed area
    per_path: int = 24  # candidate positions spread along every render path (render.paths)
    ring_fractions: list[float] = dataclass_field(default_factory=lambda: [0.2, 0.4, 0.6])  # of the safe radius
    per_ring: int = 8  # candidates per ring
    positions: list[list[float]] = dataclass_field(default_factory=list)  # extra candidates [[x, y, z], ...]
    max_radius: float | None = None  # world units; farther candidates are skipped (null: see median_fraction)
    # with max_radius null: candidates farther from the centre than this fraction of the input's median distance are
    # skipped (0: free space only). Far anchors reveal the most area but mostly area that only views near them see;
    # views within a step or two of the centre (VR head motion, the tour rings) need anchors near the centre.
    median_fraction: float = 0.5
    select_width: int = 64  # width of the small panoramas rendered to score candidates
    # stop once the best candidate reveals less than this fraction of the sphere: every anchor costs training steps
    # that slowly wear down what was seen (measured in BENCHMARKS.md), so anchors that add little are not worth it
    min_gain: float = 0.01
    # an anchor unseen on more than this share of the sphere sits inside something as far as the field knows: skipped
    max_unseen: float = 0.5
    free_space: AnchorFreeSpace = dataclass_field(default_factory=AnchorFreeSpace)

    def __post_init__(self):
        non_negative(self.count, "inpaint.anchors.count")
        non_negative(self.per_path, "inpaint.anchors.per_path")
        non_negative(self.per_ring, "inpaint.anchors.per_ring")
        require(all(0.0 <= f <= 1.0 for f in self.ring_fractions), "inpaint.anchors.ring_fractions",
                f"must lie in [0, 1], got {self.ring_fractions}")
        require(all(len(p) == 3 for p in self.positions), "inpaint.anchors.positions",
                f"must be a list of [x, y, z], got {self.positions}")
        if self.max_radius is not None:
            positive(self.max_radius, "inpaint.anchors.max_radius")
        non_negative(self.median_fraction, "inpaint.anchors.median_fraction")
        require(self.select_width >= 8 and self.select_width % 2 == 0, "inpaint.anchors.select_width",
                f"must be an even number >= 8, got {self.select_width}")
        non_negative(self.min_gain, "inpaint.anchors.min_gain")
        require(0 < self.max_unseen <= 1, "inpaint.anchors.max_unseen", f"must be in (0, 1], got {self.max_unseen}")


@dataclass
class VisibilityConfig:
    """``inpaint.visibility``: a pixel was seen if its 3D point is no farther from some supervision panorama's centre
    than that panorama's distance in its direction x (1 + rel_tol) + abs_tol."""

    rel_tol: float = 0.03
    abs_tol: float = 0.02  # world units
    min_opacity: float = 0.5  # rendered opacity below this = a hole: always filled
    dilate_px: int = 2  # also repaint this many pixels around the unseen ones (the field blurs colours across depth
    # edges); they are not trained on

    def __post_init__(self):
        non_negative(self.rel_tol, "inpaint.visibility.rel_tol")
        non_negative(self.abs_tol, "inpaint.visibility.abs_tol")
        require(0 <= self.min_opacity <= 1, "inpaint.visibility.min_opacity", f"must be in [0, 1], got "
                f"{self.min_opacity}")
        non_negative(self.dilate_px, "inpaint.visibility.dilate_px")


@dataclass
class ConflictConfig:
    """``inpaint.conflict``: erase a filled pixel whose point sits in front of a surface a supervision panorama saw,
    r < seen x (1 - rel_tol) - abs_tol (PERF's check)."""

    rel_tol: float = 0.05
    abs_tol: float = 0.03  # world units

    def __post_init__(self):
        require(0 <= self.rel_tol < 1, "inpaint.conflict.rel_tol", f"must be in [0, 1), got {self.rel_tol}")
        non_negative(self.abs_tol, "inpaint.conflict.abs_tol")


@dataclass
class DiffusionConfig:
    """``inpaint.diffusion``: the Stable-Diffusion tile inpainter, used only with ``inpaint.model_dir``."""

    prompt: str = "an empty room, interior photograph"
    negative_prompt: str = ""
    steps: int = 25
    guidance_scale: float = 7.5
    tile_size: int = 512
    seed: int = 0

    def __post_init__(self):
        positive(self.steps, "inpaint.diffusion.steps")
        positive(self.tile_size, "inpaint.diffusion.tile_size")


@dataclass
class InpaintTrainConfig:
    """``inpaint.train``: training continues from the current field after every anchor (warm start)."""

    steps_per_anchor: int = 75
    final_steps: int = 75  # extra steps on everything after the last anchor
    inpainted_weight: float = 0.5  # loss weight of inpainted pixels relative to observed ones
    # loss weight of an anchor panorama's other pixels (those some panorama saw: they are the field's own render, so
    # they only teach it its own errors; 0 leaves them out and spends the steps on what was filled)
    seen_weight: float = 0.0
    # never-seen pixels within this many pixels of a nearer seen surface (an occluder's silhouette) are not trained
    # on: their rays graze the occluder, and training them as the background behind it would eat into it
    fringe_px: int = 2
    lr_factor: float = 0.1  # learning rate of the continued training, as a fraction of field.optim.lr
    warmup_steps: int = 10  # linear warm-up of every continued training (the Adam moments are warm already)

    def __post_init__(self):
        positive(self.steps_per_anchor, "inpaint.train.steps_per_anchor")
        non_negative(self.final_steps, "inpaint.train.final_steps")
        non_negative(self.inpainted_weight, "inpaint.train.inpainted_weight")
        non_negative(self.seen_weight, "inpaint.train.seen_weight")
        non_negative(self.fringe_px, "inpaint.train.fringe_px")
        positive(self.lr_factor, "inpaint.train.lr_factor")
        non_negative(self.warmup_steps, "inpaint.train.warmup_steps")


#: what ``inpaint.inpainter: null`` / ``inpaint.completion: null`` build (the weight-free defaults, their own defaults)
DEFAULT_INPAINTER = {"_target_": "immersivedepth.inpaint.inpainters.HarmonicInpainter"}
DEFAULT_COMPLETION = {"_target_": "immersivedepth.inpaint.completion.LaplaceDistanceCompletion"}


@dataclass
class InpaintConfig:
    """``inpaint``: filling what the panorama never saw (mode=inpaint, between train and render_dense).

    ``inpainter`` / ``completion``: anything Hydra can instantiate (``_target_`` + keyword arguments) and call as
    ``f(rgb (H,W,3), mask (H,W), distance (H,W))`` -> rgb / distance, e.g.
    ``'inpaint.inpainter={_target_:immersivedepth.inpaint.inpainters.MirrorInpainter,depth_ratio:1.2}'``;
    null: :data:`DEFAULT_INPAINTER` / :data:`DEFAULT_COMPLETION` with their own defaults.
    """

    enabled: bool = True  # false (inpaint=none): no stage, exactly the behaviour without it
    width: int = 512  # anchor panoramas are width x width/2 (world-aligned equirectangular)
    anchors: AnchorConfig = dataclass_field(default_factory=AnchorConfig)
    visibility: VisibilityConfig = dataclass_field(default_factory=VisibilityConfig)
    conflict: ConflictConfig = dataclass_field(default_factory=ConflictConfig)
    inpainter: Any = None  # null: HarmonicInpainter (Laplace-Beltrami fill from the far side; chosen by the benchmark)
    completion: Any = None  # null: LaplaceDistanceCompletion (harmonic log-distance from the far side)
    # a local diffusers Stable-Diffusion inpainting folder: replaces `inpainter` by the tile inpainter
    # (immersivedepth.inpaint.diffusion; pip install -r requirements-inpaint.txt)
    model_dir: str | None = None
    diffusion: DiffusionConfig = dataclass_field(default_factory=DiffusionConfig)
    train: InpaintTrainConfig = dataclass_field(default_factory=InpaintTrainConfig)

    def __post_init__(self):
        require(self.width >= 8 and self.width % 2 == 0, "inpaint.width", f"must be an even number >= 8, got "
                f"{self.width}")
        for key in ("inpainter", "completion"):
            spec = getattr(self, key)
            require(spec is None or (isinstance(spec, dict) and "_target_" in spec), f"inpaint.{key}",
                    f"must be null or a mapping with a _target_ (e.g. {DEFAULT_INPAINTER['_target_']}), got {spec!r}")
