"""The depth-model interface around a network: official single-image ``predict`` and batched tiles."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from .preprocess import ResizeRule, network_size, prepare_tensor, prepare_uint8, resize_output

__all__ = ["DepthModel"]


class DepthModel(nn.Module):
    """A Depth Anything V2 / MiDaS network with its official pre- and post-processing.

    Two entry points:

    * ``predict(rgb (H,W,3) uint8) -> (H,W) float32``: the official inference script's output (cv2 resize of
      the float64 image, float64 normalisation, network, output resize), bit-for-bit the same operations.
    * ``model(tiles (B,3,H,W) float in [0,1], *, K=None, R=None) -> (B,H,W) float32``: the depth-model interface
      of the 360 pipeline. Same size rule, kernel and normalisation, but the resize runs in torch
      (``F.interpolate`` bicubic; OpenCV's float32 cubic weights make it differ by ~5e-5 of the intensity
      range) and the tiles are not quantised to 8 bits. K and R are accepted and ignored.

    Attributes:
        net: the network (normalised (B,3,h,w) -> (B,h,w) disparity).
        rule: the :class:`~immersivedepth.depth.models.preprocess.ResizeRule`.
        input_size: the network's nominal input side (518 for DA V2, the MiDaS net size), read by the 360
            pipeline to choose tile sizes.
        name: the preset name (e.g. ``dav2_vitl``).
        max_batch: tiles per forward pass (memory bound).
        precision: ``"auto"`` (bf16 autocast on CUDA if supported, else fp16; float32 on CPU), ``"fp32"``,
            ``"bf16"`` or ``"fp16"`` (autocast on CUDA only).
        channels_last: run the DPT head in channels-last memory format (default; its 3x3 convolutions run
            20-40 % faster in oneDNN on CPU; results differ from NCHW by float rounding, ~1e-6 of the range).
    """

    def __init__(
        self,
        net: nn.Module,
        rule: ResizeRule,
        *,
        name: str = "",
        checkpoint_path: str | None = None,
        device: str | torch.device = "cpu",
        max_batch: int = 4,
        precision: str = "auto",
        channels_last: bool = True,
    ):
        super().__init__()
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto/fp32/bf16/fp16, got {precision!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.net = net.eval()
        self.rule = rule
        self.input_size = rule.height
        self.name = name
        self.family = getattr(net, "family", "")
        self.checkpoint_path = checkpoint_path
        self.max_batch = int(max_batch)
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.requires_grad_(False)
        self.to(device)
        if self.channels_last:  # the conv-heavy DPT head only (a CNN backbone in NHWC drifts by ~1e-4)
            self.net.head.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _autocast(self):
        dev = self.device
        if dev.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        if self.precision == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (B,3,h,w) -> (B,h,w) float32, in chunks of ``max_batch``."""
        outs = []
        for i in range(0, x.shape[0], self.max_batch):
            xi = x[i: i + self.max_batch]
            with self._autocast():
                outs.append(self.net(xi).float())
        return torch.cat(outs, dim=0)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) an image of ``height`` x ``width`` is resized to before the network."""
        return network_size(height, width, self.rule)

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Official single-image inference: RGB uint8 (H,W,3) -> relative disparity float32 (H,W)."""
        rgb = np.asarray(rgb)
        x = prepare_uint8(rgb, self.rule).to(self.device)
        y = self._run(x)
        y = resize_output(y, (rgb.shape[0], rgb.shape[1]), self.rule)
        return y[0].cpu().numpy().astype(np.float32)

    def forward(self, tiles: torch.Tensor, *, K: torch.Tensor | None = None,
                R: torch.Tensor | None = None) -> torch.Tensor:
        """Tiles (B,3,H,W) float RGB in [0,1] -> relative disparity (B,H,W) float32 at tile resolution.

        ``K`` (B,3,3) and ``R`` (B,3,3) are part of the depth-model interface and ignored by the networks.
        Runs under ``torch.inference_mode``; the result is an ordinary tensor (usable in later autograd code).
        """
        with torch.inference_mode():
            y = self._forward_tiles(tiles)
        return y.clone()

    def _forward_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(tiles) or tiles.ndim != 4 or tiles.shape[1] != 3:
            shape = tuple(tiles.shape) if hasattr(tiles, "shape") else type(tiles).__name__
            raise ValueError(f"tiles must be a float tensor of shape (B,3,H,W), got {shape}")
        if not tiles.is_floating_point():
            raise ValueError(f"tiles must be float RGB in [0,1], got dtype {tiles.dtype}")
        out_device = tiles.device
        x = prepare_tensor(tiles.to(self.device, torch.float32), self.rule)
        y = self._run(x)
        y = resize_output(y, tuple(tiles.shape[-2:]), self.rule)
        return y.to(out_device)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, max_batch={self.max_batch}"
