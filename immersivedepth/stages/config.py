"""The run's own config keys (``configs/nerf.yaml`` outside the groups): typed schema, defaults, meaning."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from immersivedepth import io
from immersivedepth.config import positive
from immersivedepth.eval.config import EvaluateConfig  # the evaluate keys belong to eval/ (one owner)

__all__ = ["DatasetConfig", "DeviceConfig", "EvaluateConfig", "RunConfig"]


@dataclass
class DatasetConfig:
    image_path: str | None = None  # the equirectangular panorama (PNG/JPEG/TIFF/EXR, 2:1)
    distance_path: str | None = None  # reference distance; null: look beside the image for <stem>_distance.*
    # auto | npy | exr | matterport3d | stanford2d3d | structured3d | pano3d, or {scale: .., invalid: ..}
    distance_format: Any = "auto"
    scene_name: str | None = None  # default: the image's file stem (its folder's name if the stem is "image")
    allow_resample: bool = False  # resample a panorama that is not 2:1 instead of refusing it
    # a folder of panoramas: perf_runner.py expands it into a sweep over image_path (stages/sweep.py)
    image_dir: str | None = None
    glob: str | None = None  # which files of image_dir (e.g. '*.jpg'); null: every .png/.jpg/.jpeg/.tif/.tiff/.exr
    # refuse image/distance files whose header claims more pixels, before decoding (null: no cap)
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.max_pixels is not None:
            positive(self.max_pixels, "dataset.max_pixels")


@dataclass
class DeviceConfig:
    type: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:1 ...
    base_exp_dir: str = "exp"  # runs go to <base_exp_dir>/<scene_name>/<exp_name>/
    num_threads: int | None = None  # torch CPU threads; null keeps torch's default

    def __post_init__(self):
        if self.num_threads is not None:
            positive(self.num_threads, "device.num_threads")


@dataclass
class RunConfig:
    """Top-level keys. ``mode``: depth | train | inpaint | render_dense | all | evaluate."""

    mode: str = "all"
    is_continue: bool = False  # resume training from <run>/checkpoints/last.pt; render an existing run
    overwrite: bool = False  # allow a new training to replace an existing run's checkpoints (else: refuse)
    exp_name: str = "default"  # runs go to <device.base_exp_dir>/<dataset.scene_name>/<exp_name>/
    # a second run on the same run directory refuses, naming the running one; true: wait for it to finish instead
    wait_for_lock: bool = False
    seed: int = 0
    dataset: DatasetConfig = dataclass_field(default_factory=DatasetConfig)
    device: DeviceConfig = dataclass_field(default_factory=DeviceConfig)
    evaluate: EvaluateConfig = dataclass_field(default_factory=EvaluateConfig)
