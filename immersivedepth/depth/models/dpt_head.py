"""The DPT decoder shared by Depth Anything V2 and MiDaS v3.1.

Both families use the same dense-prediction head (Ranftl et al., "Vision Transformers for Dense
Prediction"): four backbone feature maps are *reassembled* (optional readout projection, 1x1 projection,
resampling to strides 4/8/16/32), brought to a common width by 3x3 convolutions, fused coarse-to-fine by
RefineNet blocks (two pre-activation residual units, bilinear upsampling with ``align_corners=True``, 1x1
output convolution) and turned into one non-negative channel by a small convolutional output head.

The module names here are ours; each family maps them to and from its official checkpoint layout
(``depth_anything_v2.py`` / ``midas.py``).  The differences between the families are parameters:

* where the reassemble layers live and whether a readout token is projected (MiDaS ViT/BEiT: ``project``),
* which resampling each level uses (``resize``: ConvTranspose k=s=4, k=s=2, identity, Conv s=2),
* the size of the final upsampling (DA V2: to ``14 * patch grid``; MiDaS: ``2 x`` the finest fusion map).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualConvUnit", "FusionBlock", "Reassemble", "DPTHead"]


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``x + conv2(relu(conv1(relu(x))))``; shapes (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        return out + x


class FusionBlock(nn.Module):
    """RefineNet-style fusion: ``out_conv(up(res2(x + res1(skip))))``.

    ``forward(x (B,C,h,w), skip (B,C,h,w) | None, size (H,W))`` -> (B,C,H,W); the upsampling is bilinear with
    ``align_corners=True`` (for which a ``scale_factor=2`` call and ``size=(2h,2w)`` are the same operation).
    """

    def __init__(self, features: int):
        super().__init__()
        self.res1 = ResidualConvUnit(features)
        self.res2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, stride=1, padding=0, bias=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor:
        if skip is not None:
            x = x + self.res1(skip)
        x = self.res2(x)
        x = F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Reassemble(nn.Module):
    """Tokens of one tapped layer -> a feature map at the level's stride.

    Args:
        in_channels: token width D of the backbone (or channels of a CNN feature map).
        out_channels: channels after the 1x1 projection (``None``: no projection, pass-through).
        resize: ``"up4"`` (ConvTranspose k=s=4), ``"up2"`` (k=s=2), ``"none"``, ``"down2"`` (Conv 3x3 s=2).
        readout: ``"project"`` (concatenate the class token, Linear(2D->D) + GELU), or ``"ignore"``.

    ``forward(tokens (B,N,D), cls (B,D) | None, grid (h,w))`` -> (B,out,h',w'); a 4-D input (B,C,h,w) skips
    the token handling.
    """

    def __init__(self, in_channels: int, out_channels: int | None, resize: str = "none", readout: str = "ignore"):
        super().__init__()
        if readout not in ("ignore", "project"):
            raise ValueError(f"readout must be 'ignore' or 'project', got {readout!r}")
        self.readout = (
            nn.Sequential(nn.Linear(2 * in_channels, in_channels), nn.GELU()) if readout == "project" else None
        )
        self.project = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
            if out_channels is not None
            else None
        )
        c = out_channels if out_channels is not None else in_channels
        if resize == "up4":
            self.resize = nn.ConvTranspose2d(c, c, kernel_size=4, stride=4, padding=0)
        elif resize == "up2":
            self.resize = nn.ConvTranspose2d(c, c, kernel_size=2, stride=2, padding=0)
        elif resize == "down2":
            self.resize = nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1)
        elif resize == "none":
            self.resize = None
        else:
            raise ValueError(f"resize must be one of up4/up2/none/down2, got {resize!r}")

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None, grid: Sequence[int]) -> torch.Tensor:
        if x.ndim == 3:
            if self.readout is not None:
                if cls is None:
                    raise ValueError("Reassemble with readout='project' needs the class token")
                x = self.readout(torch.cat((x, cls[:, None, :].expand_as(x)), dim=-1))
            b, n, d = x.shape
            h, w = int(grid[0]), int(grid[1])
            if n != h * w:
                raise ValueError(f"token count {n} does not match the patch grid {h}x{w}")
            x = x.transpose(1, 2).reshape(b, d, h, w)
        if self.project is not None:
            x = self.project(x)
        if self.resize is not None:
            x = self.resize(x)
        return x


class DPTHead(nn.Module):
    """Reassemble + fusion + output head.

    Args:
        in_channels: width of each of the four taps (tokens D or CNN channels).
        reassemble_channels: per level, the 1x1 projection width (``None`` = no projection).
        resizes: per level, see :class:`Reassemble`.
        features: fusion width (DA V2: 64/128/256/384; MiDaS: 256).
        readout: ``"project"`` or ``"ignore"`` for the token levels.
        head_features_2: channels of the second output conv (32 in both families).

    ``forward(taps, cls_tokens, grid, out_size)``: ``taps`` four tensors, each (B,N,D) tokens on the
    ``grid`` (h,w) or (B,C,h_i,w_i) maps; ``cls_tokens`` four (B,D) tensors or ``None``; ``out_size`` the
    (H,W) of the final upsampling. Returns (B,1,H,W), ReLU'd.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        reassemble_channels: Sequence[int | None],
        resizes: Sequence[str],
        features: int,
        readout: Sequence[str] | str = "ignore",
        head_features_2: int = 32,
    ):
        super().__init__()
        if isinstance(readout, str):
            readout = [readout] * len(in_channels)
        self.reassemble = nn.ModuleList(
            Reassemble(c, r, s, ro) for c, r, s, ro in zip(in_channels, reassemble_channels, resizes, readout)
        )
        level_channels = [r if r is not None else c for c, r in zip(in_channels, reassemble_channels)]
        self.layer_rn = nn.ModuleList(
            nn.Conv2d(c, features, kernel_size=3, stride=1, padding=1, bias=False) for c in level_channels
        )
        self.fusion = nn.ModuleList(FusionBlock(features) for _ in level_channels)
        self.out_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, stride=1, padding=1)
        self.out_conv2 = nn.Conv2d(features // 2, head_features_2, kernel_size=3, stride=1, padding=1)
        self.out_conv3 = nn.Conv2d(head_features_2, 1, kernel_size=1, stride=1, padding=0)

    def forward(
        self,
        taps: Sequence[torch.Tensor],
        cls_tokens: Sequence[torch.Tensor | None] | None,
        grid: Sequence[int],
        out_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        if cls_tokens is None:
            cls_tokens = [None] * len(taps)
        feats = [self.layer_rn[i](self.reassemble[i](t, c, grid)) for i, (t, c) in enumerate(zip(taps, cls_tokens))]
        n = len(feats)
        # coarse-to-fine: fusion[n-1] takes the coarsest level alone, every finer one adds its skip
        path = self.fusion[n - 1](feats[n - 1], None, feats[n - 2].shape[-2:])
        for i in range(n - 2, -1, -1):
            size = feats[i - 1].shape[-2:] if i > 0 else (2 * feats[0].shape[-2], 2 * feats[0].shape[-1])
            path = self.fusion[i](path, feats[i], size)
        out = self.out_conv1(path)
        if out_size is None:
            out_size = (2 * out.shape[-2], 2 * out.shape[-1])
        out = F.interpolate(out, size=tuple(int(s) for s in out_size), mode="bilinear", align_corners=True)
        out = F.relu(self.out_conv2(out))
        out = F.relu(self.out_conv3(out))
        return out
