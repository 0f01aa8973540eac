"""The ``field`` config group: defaults, validation, and building a field from it.

The YAML presets in ``configs/field/`` document every key; :data:`FIELD_DEFAULTS` mirrors ``default.yaml`` so a
partial config (tests, scripts) works. Unknown keys are an error (a typo must not silently use a default).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping

from immersivedepth.field.model import MODEL_DEFAULTS, RadianceField
from immersivedepth.train.dataset import MASK_DEFAULTS

__all__ = ["FIELD_DEFAULTS", "MODEL_SIGNATURE_SECTIONS", "resolve_config", "model_signature", "diff_keys",
           "build_field", "render_options_from"]

FIELD_DEFAULTS: dict = {
    "model": copy.deepcopy(MODEL_DEFAULTS),
    "grid": {"resolution": 128, "dilation": 1, "update_every": 250, "update_start": 250, "decay": 0.9,
             "alpha_threshold": 0.005},
    "sampling": {"band_rel": 0.03, "band_min_cells": 1.5, "band_samples": 16, "front_segments": 4,
                 "front_cache_segments": 64,
                 "coarse_step_cells": 0.5, "max_segments": 16, "max_total_segments": 512, "min_transmittance": 1e-4,
                 "per_segment": 4, "color_weight_threshold": 1e-4, "render_color_samples": 4,
                 "train_color_samples": 4},
    "loss": {"color": 1.0, "color_kind": "mse", "color_beta": 0.05, "distance": 1.0, "distance_beta": 0.01,
             "distance_relative": True, "distortion": 0.05, "opacity": 0.1, "normal": 0.0},
    "data": {"max_width": 2048},
    "masks": copy.deepcopy(MASK_DEFAULTS),
    "optim": {"steps": 1500, "batch_rays": 4096, "lr": 0.01, "warmup_steps": 100, "warmup_start_factor": 0.01,
              "final_lr_factor": 0.03, "betas": [0.9, 0.99], "eps": 1e-15, "fused": True},
    "log": {"log_every": 25, "checkpoint_every": 500, "keep_checkpoints": 2, "preview_every": 500,
            "preview_width": 256, "eval_stride": 1, "eval_chunk": 16384, "tensorboard": True},
}

#: Sections (or single keys, dotted) that fix the field's parameters/buffers; a checkpoint only loads under an
#: identical signature.
MODEL_SIGNATURE_SECTIONS = ("model", "grid.resolution")


def _plain(cfg) -> dict:
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        pass
    if not isinstance(cfg, Mapping):
        raise TypeError(f"field config must be a mapping (dict or OmegaConf), got {type(cfg).__name__}")
    return json.loads(json.dumps(dict(cfg), default=list))


def _merge(base: dict, over: Mapping, path: str = "field") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise ValueError(f"unknown config key {path}.{k}; known keys under {path}: {sorted(base)}")
        if isinstance(base[k], dict) and k != "background":
            if not isinstance(v, Mapping):
                raise ValueError(f"config key {path}.{k} must be a mapping, got {v!r}")
            out[k] = _merge(base[k], v, f"{path}.{k}")
        else:
            out[k] = v
    return out


def resolve_config(cfg) -> dict:
    """Plain dict of the full ``field`` config: ``cfg`` (dict / OmegaConf / None) over :data:`FIELD_DEFAULTS`."""
    return _merge(FIELD_DEFAULTS, _plain(cfg))


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


def build_field(cfg: Mapping, bmin, bmax) -> RadianceField:
    """A fresh :class:`RadianceField` for the resolved config ``cfg`` over the world box ``[bmin, bmax]``."""
    field = RadianceField(bmin, bmax, cfg["model"], occupancy_resolution=int(cfg["grid"]["resolution"]))
    field.render_options = render_options_from(cfg, float(field.occupancy.cell_size.min()))
    return field
