"""Network input preparation exactly as the official inference scripts do it.

Both official code bases resize with the same ``Resize`` transform (``keep_aspect_ratio``, a resize method,
``ensure_multiple_of``, ``cv2.INTER_CUBIC``) applied to a float64 RGB image in [0, 1], normalise in float64 and
cast to float32.  :func:`network_size` reproduces the size rule (including NumPy's round-half-to-even),
:func:`prepare_uint8` the full cv2 path, :func:`prepare_tensor` the same semantics on torch tensors for
batched tiles (bicubic ``F.interpolate``, a = -0.75 like OpenCV; see its docstring for the difference).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ResizeRule", "network_size", "prepare_uint8", "prepare_tensor", "resize_output"]

_RESIZE_METHODS = ("lower_bound", "upper_bound", "minimal")


@dataclass(frozen=True)
class ResizeRule:
    """How an image is resized before the network (the official ``Resize`` transform's arguments).

    Attributes:
        height, width: the target ("net") size.
        keep_aspect_ratio: scale both sides by one factor chosen by ``method``.
        method: ``"lower_bound"`` (DA V2: at least the target), ``"upper_bound"``, ``"minimal"`` (MiDaS v3.1:
            the factor closest to 1).
        multiple_of: output sides are multiples of this (14 for DA V2, 32 for MiDaS).
        mean, std: per-channel normalisation applied after resizing.
        output_mode: interpolation of the prediction back to the input size: ``"bilinear_ac"`` (bilinear,
            ``align_corners=True``; DA V2) or ``"bicubic"`` (``align_corners=False``; MiDaS ``run.py``).
    """

    height: int
    width: int
    keep_aspect_ratio: bool
    method: str
    multiple_of: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_mode: str = "bilinear_ac"

    def __post_init__(self):
        if self.method not in _RESIZE_METHODS:
            raise ValueError(f"ResizeRule.method must be one of {_RESIZE_METHODS}, got {self.method!r}")
        if self.output_mode not in ("bilinear_ac", "bicubic"):
            raise ValueError(f"ResizeRule.output_mode must be 'bilinear_ac' or 'bicubic', got {self.output_mode!r}")
        if self.height <= 0 or self.width <= 0 or self.multiple_of <= 0:
            raise ValueError(f"ResizeRule sizes must be positive, got {self.height}x{self.width}/{self.multiple_of}")

    def with_size(self, size: int) -> ResizeRule:
        """The same rule with a square target ``size`` (the official ``--input-size`` / ``--height``)."""
        return ResizeRule(size, size, self.keep_aspect_ratio, self.method, self.multiple_of, self.mean, self.std,
                          self.output_mode)


def _constrain(x: float, multiple: int, min_val: int = 0, max_val: int | None = None) -> int:
    y = int(np.round(x / multiple) * multiple)
    if max_val is not None and y > max_val:
        y = int(np.floor(x / multiple) * multiple)
    if y < min_val:
        y = int(np.ceil(x / multiple) * multiple)
    return y


def network_size(height: int, width: int, rule: ResizeRule) -> tuple[int, int]:
    """The (h, w) the official ``Resize`` produces for an image of ``height`` x ``width``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale_h = rule.height / height
    scale_w = rule.width / width
    if rule.keep_aspect_ratio:
        if rule.method == "lower_bound":
            if scale_w > scale_h:
                scale_h = scale_w
            else:
                scale_w = scale_h
        elif rule.method == "upper_bound":
            if scale_w < scale_h:
                scale_h = scale_w
            else:
                scale_w = scale_h
        else:  # minimal
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h
    m = rule.multiple_of
    if rule.method == "lower_bound":
        return _constrain(scale_h * height, m, min_val=rule.height), _constrain(scale_w * width, m, min_val=rule.width)
    if rule.method == "upper_bound":
        return _constrain(scale_h * height, m, max_val=rule.height), _constrain(scale_w * width, m, max_val=rule.width)
    return _constrain(scale_h * height, m), _constrain(scale_w * width, m)


def prepare_uint8(rgb: np.ndarray, rule: ResizeRule) -> torch.Tensor:
    """RGB uint8 (H,W,3) -> normalised float32 tensor (1,3,h,w), bit-for-bit the official cv2 path."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"predict expects an RGB uint8 array of shape (H,W,3), got {rgb.dtype} {rgb.shape}")
    image = rgb / 255.0  # float64, as cv2.cvtColor(...) / 255.0 in the official scripts
    h, w = network_size(rgb.shape[0], rgb.shape[1], rule)
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
    image = (image - np.asarray(rule.mean)) / np.asarray(rule.std)
    image = np.ascontiguousarray(np.transpose(image, (2, 0, 1))).astype(np.float32)
    return torch.from_numpy(image)[None]


def prepare_tensor(tiles: torch.Tensor, rule: ResizeRule) -> torch.Tensor:
    """Float RGB tiles (B,3,H,W) in [0,1] -> normalised (B,3,h,w) with (h,w) = ``network_size(H, W)``.

    Same size rule, interpolation kernel (cubic convolution, a = -0.75, half-pixel centres, no antialiasing)
    and normalisation as :func:`prepare_uint8`, computed in the tiles' dtype with ``F.interpolate``. Both clamp
    the 4-tap support at the borders; the only difference is that OpenCV computes its cubic weights in float32,
    so resized values differ by up to ~5e-5 of the [0,1] range (measured; tested to < 2e-4). Inputs already at
    the network size are not resampled. The uint8 input is not re-quantised here (tiles are float).
    """
    if tiles.ndim != 4 or tiles.shape[1] != 3:
        raise ValueError(f"tiles must have shape (B,3,H,W), got {tuple(tiles.shape)}")
    h, w = network_size(tiles.shape[-2], tiles.shape[-1], rule)
    x = tiles
    if (h, w) != tuple(tiles.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
    mean = torch.tensor(rule.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(rule.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def resize_output(pred: torch.Tensor, size: tuple[int, int], rule: ResizeRule) -> torch.Tensor:
    """Network output (B,h,w) -> (B,H,W) with the family's output interpolation."""
    x = pred[:, None]
    if rule.output_mode == "bilinear_ac":
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    else:
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return x[:, 0]
