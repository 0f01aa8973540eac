"""The ``field`` config group: its typed schema (every key, default and meaning), and building a field from it.

:class:`FieldConfig` is the one place the keys live; ``configs/field/default.yaml`` selects it and
``configs/field/fast.yaml`` lists only what the fast preset changes. Unknown keys, wrong types and out-of-range values
are :class:`~immersivedepth.errors.ConfigError` s naming the dotted key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from immersivedepth.config import as_dict, from_mapping, non_negative, one_of, positive, require
from immersivedepth.field.model import FieldModelConfig, RadianceField
from immersivedepth.train.dataset import MaskConfig

__all__ = ["FieldConfig", "MODEL_SIGNATURE_SECTIONS", "resolve_config", "model_signature", "diff_keys",
           "build_field", "render_options_from"]


@dataclass
class GridConfig:
    """``field.grid``: the occupancy grid over the box (skips empty space when rendering)."""

    resolution: int = 128  # cells along the box's longest axis (part of the model signature)
    dilation: int = 1  # seed = cells of the back-projected supervision points, dilated by this many cells
    update_every: int = 250  # steps between density re-measurements (cells can only be occupied inside the seed)
    update_start: int = 250  # first update step
    decay: float = 0.9  # value = max(decay * value, sigma)
    alpha_threshold: float = 0.005  # occupied if 1 - exp(-sigma * fine_step) exceeds this

    def __post_init__(self):
        for key in ("resolution", "update_every", "update_start"):
            positive(getattr(self, key), f"field.grid.{key}")
        non_negative(self.dilation, "field.grid.dilation")
        require(0 < self.decay <= 1, "field.grid.decay", f"must be in (0, 1], got {self.decay}")
        require(0 < self.alpha_threshold < 1, "field.grid.alpha_threshold", f"must be in (0, 1), got "
                f"{self.alpha_threshold}")


@dataclass
class SamplingConfig:
    """``field.sampling``: where rays are evaluated in training and rendering."""

    band_rel: float = 0.03  # training rays: band half-width = max(band_rel * distance, band_min_cells * cell)
    band_min_cells: float = 1.5
    band_samples: int = 16  # stratified samples in the band
    front_segments: int = 4  # plus this many occupancy samples in front of the band (trains free space empty),
    front_cache_segments: int = 64  # drawn at random among the first this-many occupied segments before the band
    coarse_step_cells: float = 0.5  # occupancy march step, in occupancy cells
    max_segments: int = 16  # other rays (novel views): occupied coarse segments evaluated per round ...
    per_segment: int = 4  # ... each split into this many fine samples;
    max_total_segments: int = 512  # rounds continue while a ray is not yet opaque, up to this many segments
    min_transmittance: float = 1.0e-4  # early ray termination
    color_weight_threshold: float = 1.0e-4  # colour evaluated only where the compositing weight exceeds this
    train_color_samples: int = 4  # training: colour only at each ray's 4 largest weights (pushes weights together)
    render_color_samples: int = 4  # rendering: colour at the 4 largest weights per round, renormalised (0 = all)
    # pixels without a distance (colour only, onto the background) are drawn this many times as often as the others
    # (1: every pixel equally likely, so the colour loss is the panorama's mean squared error)
    far_ray_weight: float = 1.0

    def __post_init__(self):
        for key in ("band_rel", "band_min_cells", "band_samples", "front_cache_segments", "coarse_step_cells",
                    "max_segments", "per_segment", "max_total_segments"):
            positive(getattr(self, key), f"field.sampling.{key}")
        for key in ("front_segments", "min_transmittance", "color_weight_threshold", "train_color_samples",
                    "render_color_samples", "far_ray_weight"):
            non_negative(getattr(self, key), f"field.sampling.{key}")


@dataclass
class LossConfig:
    """``field.loss``: term weights (0 disables a term)."""

    color: float = 1.0
    color_kind: str = "mse"  # mse | smooth_l1
    color_beta: float = 0.05  # smooth_l1 transition
    distance: float = 1.0  # smooth-L1 of the relative error of the expected ray distance (masked pixels only)
    distance_beta: float = 0.01
    distance_relative: bool = True
    distortion: float = 0.05  # mip-NeRF 360 distortion (O(n) form), in units of the field's `unit`
    opacity: float = 0.1  # mean(1 - opacity) on trained rays: surfaces must be opaque
    normal: float = 0.0  # 1 - cos(rendered normal, distance-map normal); costs 6 extra density evaluations

    def __post_init__(self):
        one_of(self.color_kind, ("mse", "smooth_l1"), "field.loss.color_kind")
        for key in ("color", "distance", "distortion", "opacity", "normal"):
            non_negative(getattr(self, key), f"field.loss.{key}")
        positive(self.color_beta, "field.loss.color_beta")
        positive(self.distance_beta, "field.loss.distance_beta")


@dataclass
class DataConfig:
    """``field.data``: what resolution the field trains on."""

    # wider panoramas train on a max_width x max_width/2 copy (area-averaged colour, centre-pixel distance);
    # 0 = full resolution. Memory and time per occupancy update grow with the pixel count.
    max_width: int = 2048

    def __post_init__(self):
        require(self.max_width == 0 or (self.max_width >= 16 and self.max_width % 2 == 0), "field.data.max_width",
                f"must be an even number >= 16 (or 0 for no cap), got {self.max_width}")


@dataclass
class OptimConfig:
    """``field.optim``: Adam with linear warm-up, then cosine decay."""

    steps: int = 1500
    batch_rays: int = 4096
    lr: float = 0.01
    warmup_steps: int = 100  # linear warm-up from warmup_start_factor * lr
    warmup_start_factor: float = 0.01
    final_lr_factor: float = 0.03  # cosine decay to final_lr_factor * lr at `steps`
    betas: list[float] = dataclass_field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1.0e-15
    fused: bool = True  # torch's fused Adam (10x faster than the per-tensor loop on CPU for big hash tables)

    def __post_init__(self):
        positive(self.steps, "field.optim.steps")
        positive(self.batch_rays, "field.optim.batch_rays")
        positive(self.lr, "field.optim.lr")
        non_negative(self.warmup_steps, "field.optim.warmup_steps")
        positive(self.warmup_start_factor, "field.optim.warmup_start_factor")
        positive(self.final_lr_factor, "field.optim.final_lr_factor")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "field.optim.betas",
                f"must be two numbers in [0, 1), got {self.betas}")
        positive(self.eps, "field.optim.eps")


@dataclass
class LogConfig:
    """``field.log``: metrics, checkpoints, previews."""

    log_every: int = 25  # metrics.csv row (and TensorBoard scalars if tensorboard is installed)
    checkpoint_every: int = 500  # checkpoints/step_XXXXXX.pt + last.pt (also at the end and on Ctrl-C)
    keep_checkpoints: int = 2  # periodic checkpoints kept (last.pt is a hard link of the newest: no extra space)
    preview_every: int = 500  # train/previews/step_XXXXXX_{rgb,distance}.png, also at the end (0 = none)
    preview_width: int = 256
    eval_stride: int = 1  # final training-view evaluation on every stride-th row/column
    eval_chunk: int = 16384  # rays per rendering chunk
    tensorboard: bool = True

    def __post_init__(self):
        for key in ("log_every", "checkpoint_every", "preview_width", "eval_stride", "eval_chunk"):
            positive(getattr(self, key), f"field.log.{key}")
        non_negative(self.keep_checkpoints, "field.log.keep_checkpoints")
        non_negative(self.preview_every, "field.log.preview_every")


@dataclass
class FieldConfig:
    """The ``field`` config group: the radiance field and its training. World units = the supervision's units."""

    model: FieldModelConfig = dataclass_field(default_factory=FieldModelConfig)
    grid: GridConfig = dataclass_field(default_factory=GridConfig)
    sampling: SamplingConfig = dataclass_field(default_factory=SamplingConfig)
    loss: LossConfig = dataclass_field(default_factory=LossConfig)
    data: DataConfig = dataclass_field(default_factory=DataConfig)
    masks: MaskConfig = dataclass_field(default_factory=MaskConfig)
    optim: OptimConfig = dataclass_field(default_factory=OptimConfig)
    log: LogConfig = dataclass_field(default_factory=LogConfig)


#: Sections (or single keys, dotted) that fix the field's parameters/buffers; a checkpoint only loads under an
#: identical signature.
MODEL_SIGNATURE_SECTIONS = ("model", "grid.resolution")


def resolve_config(cfg) -> dict:
    """The full ``field`` config as a plain dict: ``cfg`` (FieldConfig / dict / OmegaConf / None) over the defaults,
    validated (:class:`~immersivedepth.errors.ConfigError` naming the key)."""
    return as_dict(from_mapping(FieldConfig, cfg, "field"))


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def model_signature(cfg: Mapping) -> dict:
    """Flattened ``{dotted.key: value}`` of the config entries that fix the field's parameter shapes."""
    flat = _flatten(cfg)
    return {k: v for k, v in flat.items() if any(k == s or k.startswith(s + ".") for s in MODEL_SIGNATURE_SECTIONS)}


def diff_keys(a: Mapping, b: Mapping) -> list[str]:
    """Dotted keys whose values differ between two flat dicts (or that only one has)."""
    return sorted(k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>"))


def render_options_from(cfg: Mapping, cell_size: float) -> dict:
    """Renderer options (``renderer.DEFAULT_RENDER_OPTIONS`` keys) from ``field.sampling``."""
    s = cfg["sampling"]
    return {"coarse_step": float(s["coarse_step_cells"]) * cell_size, "max_segments": int(s["max_segments"]),
            "max_total_segments": int(s["max_total_segments"]), "min_transmittance": float(s["min_transmittance"]),
            "per_segment": int(s["per_segment"]), "color_weight_threshold": float(s["color_weight_threshold"]),
            "color_samples": int(s["render_color_samples"]) or None}


def build_field(cfg: Mapping, bmin, bmax, image_size=None) -> RadianceField:
    """A fresh :class:`RadianceField` for the resolved config ``cfg`` over the world box ``[bmin, bmax]``
    (``image_size`` ``(H, W)``: the training panorama's, which sizes an environment-map background)."""
    field = RadianceField(bmin, bmax, cfg["model"], occupancy_resolution=int(cfg["grid"]["resolution"]),
                          image_size=image_size)
    field.render_options = render_options_from(cfg, float(field.occupancy.cell_size.min()))
    return field
