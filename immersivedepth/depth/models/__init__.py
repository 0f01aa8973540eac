"""Depth networks: Depth Anything V2 and MiDaS v3.1 from their official checkpoints.

Public API::

    load_depth_model(checkpoint_path, *, variant=None, device="cpu", input_size=None) -> DepthModel
    build_preset(name, *, checkpoint_dir=None, device="cpu") -> DepthModel
    PRESETS                       # preset name -> Preset(family, variant, filename, url)
    CheckpointError, CheckpointNotFoundError

``DepthModel.predict(rgb_uint8 (H,W,3)) -> (H,W) float32`` reproduces the official inference scripts;
``DepthModel(tiles (B,3,H,W), *, K=None, R=None) -> (B,H,W)`` is the 360 pipeline's depth-model interface.
"""

from .checkpoints import ENV_VAR, CheckpointError, CheckpointNotFoundError, find_checkpoint, read_state_dict
from .depth_anything_v2 import DAV2_CONFIGS, DepthAnythingV2
from .loader import (
    build_network,
    build_preset,
    load_depth_model,
    load_network,
    official_layout,
    official_state_dict,
    resolve_variant,
)
from .midas import MIDAS_CONFIGS, MIDAS_UNSUPPORTED, MidasDPT
from .model import DepthModel
from .presets import PRESETS, Preset

__all__ = [
    "ENV_VAR", "CheckpointError", "CheckpointNotFoundError", "find_checkpoint", "read_state_dict",
    "DAV2_CONFIGS", "DepthAnythingV2", "MIDAS_CONFIGS", "MIDAS_UNSUPPORTED", "MidasDPT", "DepthModel",
    "PRESETS", "Preset", "build_network", "build_preset", "load_depth_model", "load_network",
    "official_layout", "official_state_dict", "resolve_variant",
]
