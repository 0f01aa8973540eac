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

CPU inference fast paths, each equal to the textbook order up to float rounding: wide 3x3 convolutions by
Winograd F(2x2,3x3) (:class:`~immersivedepth.depth.models.winograd.WinogradConv2d` in ``winograd.py``, autograd
off only, its transformed kernels cached under a ``tensor_cache.TensorSnapshot`` key); each fusion block's 1x1
output convolution before its bilinear upsampling (both linear, the bilinear weights sum to 1); the
high-resolution tail in batch/channel chunks that keep every intermediate below glibc's mmap threshold
(``chunk_bytes``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .tensor_cache import TensorSnapshot
from .winograd import WinogradConv2d, winograd_conv3x3, winograd_weights

# TensorSnapshot and the Winograd names live in tensor_cache.py / winograd.py and stay importable from here.
__all__ = ["TensorSnapshot", "WinogradConv2d", "winograd_weights", "winograd_conv3x3", "ResidualConvUnit",
           "FusionBlock", "Reassemble", "DPTHead"]


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``x + conv2(relu(conv1(relu(x))))``; shapes (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = WinogradConv2d(features, features)
        self.conv2 = WinogradConv2d(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(F.relu(x)), inplace=True)  # in place on a fresh conv output (autograd-safe)
        return self.conv2(out).add_(x)


class FusionBlock(nn.Module):
    """RefineNet-style fusion: ``out_conv(up(res2(x + res1(skip))))``.

    ``forward(x (B,C,h,w), skip (B,C,h,w) | None, size (H,W))`` -> (B,C,H,W); the upsampling is bilinear with
    ``align_corners=True`` (for which a ``scale_factor=2`` call and ``size=(2h,2w)`` are the same operation).

    The 1x1 ``out_conv`` runs *before* the upsampling: both are linear, and every bilinear output pixel is a
    convex combination of input pixels (weights summing to 1, so the bias passes through unchanged), hence
    ``out_conv(up(y)) == up(out_conv(y))`` up to float rounding, at a quarter of the convolution's cost.
    """

    def __init__(self, features: int):
        super().__init__()
        self.res1 = ResidualConvUnit(features)
        self.res2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, stride=1, padding=0, bias=True)

    def refine(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """``out_conv(res2(x + res1(skip)))`` at the input resolution: (B,C,h,w) -> (B,C,h,w)."""
        if skip is not None:
            x = self.res1(skip).add_(x)
        return self.out_conv(self.res2(x))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor:
        return _upsample(self.refine(x, skip), size)


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear, ``align_corners=True`` resize of (B,C,h,w) to (B,C,*size)."""
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=True)


def _groups(n: int, item_bytes: int, budget: int, min_items: int = 1) -> list[slice]:
    """Split ``range(n)`` into near-equal contiguous slices whose items total at most ``budget`` bytes each, but
    with at least ``min_items`` items per slice (so a slice may exceed the budget)."""
    k = max(1, min(n // max(min_items, 1), -(-n * item_bytes // max(budget, 1))))  # number of groups
    step = -(-n // k)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


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
        chunk_bytes: the largest intermediate tensor the high-resolution tail (finest fusion upsampling, the
            output convolutions and the final upsampling) allocates; bigger ones are computed in batch and
            channel chunks with the same result up to float rounding. Allocations above glibc's 32 MiB mmap
            ceiling are fresh, page-faulted memory on every call (~20 ms per 32 MiB on CPU), which costs more
            than the few extra operator calls of the chunks. ``None``: no chunking.
        chunk_min_channels: channel chunks are never narrower than this (thin convolutions lose more than
            the page faults cost).

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
        chunk_bytes: int | None = 16 * 2**20,
        chunk_min_channels: int = 32,
    ):
        super().__init__()
        if chunk_bytes is not None and chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive byte count or None, got {chunk_bytes}")
        if chunk_min_channels < 1:
            raise ValueError(f"chunk_min_channels must be >= 1, got {chunk_min_channels}")
        self.chunk_bytes = chunk_bytes
        self.chunk_min_channels = chunk_min_channels
        if isinstance(readout, str):
            readout = [readout] * len(in_channels)
        self.reassemble = nn.ModuleList(
            Reassemble(c, r, s, ro) for c, r, s, ro in zip(in_channels, reassemble_channels, resizes, readout)
        )
        level_channels = [r if r is not None else c for c, r in zip(in_channels, reassemble_channels)]
        self.layer_rn = nn.ModuleList(
            WinogradConv2d(c, features, bias=False) for c in level_channels
        )
        self.fusion = nn.ModuleList(FusionBlock(features) for _ in level_channels)
        self.out_conv1 = WinogradConv2d(features, features // 2)
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
        for i in range(n - 2, 0, -1):
            path = self.fusion[i](path, feats[i], feats[i - 1].shape[-2:])
        low = self.fusion[0].refine(path, feats[0])  # (B,F,h0,w0); upsampled to 2x in the tail
        mid_size = (2 * feats[0].shape[-2], 2 * feats[0].shape[-1])
        if out_size is None:
            out_size = (2 * mid_size[0], 2 * mid_size[1])
        out_size = (int(out_size[0]), int(out_size[1]))
        return self._tail(low, mid_size, out_size)

    def _tail(self, low: torch.Tensor, mid_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
        """``relu(conv3(relu(conv2(up(conv1(up(low)))))))``: (B,F,h0,w0) -> (B,1,H,W), in memory-bounded chunks.

        Batch chunks keep ``up(low)`` within ``chunk_bytes``; inside a chunk the final upsampling runs on groups
        of input channels (each group's share of ``out_conv2`` summed), and ``out_conv2`` on groups of output
        channels (each group's share of the 1x1 ``out_conv3`` summed).
        """
        budget = self.chunk_bytes
        b, f, _, _ = low.shape
        esize = low.element_size()
        if budget is None:
            batches = [slice(0, b)]
        else:
            batches = _groups(b, f * mid_size[0] * mid_size[1] * esize, budget)
        w2, b2 = self.out_conv2.weight, self.out_conv2.bias
        w3, b3 = self.out_conv3.weight, self.out_conv3.bias
        c_in, c_out = w2.shape[1], w2.shape[0]
        outs = []
        for bs in batches:
            x = self.out_conv1(_upsample(low[bs], mid_size))
            nb = x.shape[0]
            plane = nb * out_size[0] * out_size[1] * esize
            if budget is None or max(c_in, c_out) * plane <= budget:
                y = F.relu(self.out_conv2(_upsample(x, out_size)), inplace=True)
                outs.append(F.relu(self.out_conv3(y), inplace=True))
                continue
            in_groups = _groups(c_in, plane, budget, self.chunk_min_channels)
            out_groups = _groups(c_out, plane, budget, self.chunk_min_channels)
            # one output group: upsample each input group just before its use (one upsampled group alive at a
            # time, so its memory is recycled); several: upsample once, reuse for every output group
            ups = None if len(out_groups) == 1 else [_upsample(x[:, g], out_size) for g in in_groups]
            acc = None
            for og in out_groups:
                y = None
                for j, g in enumerate(in_groups):
                    u = _upsample(x[:, g], out_size) if ups is None else ups[j]
                    part = F.conv2d(u, w2[og, g], b2[og] if y is None and b2 is not None else None, padding=1)
                    y = part if y is None else y.add_(part)
                    del u
                y = F.relu(y, inplace=True)
                part = F.conv2d(y, w3[:, og], b3 if acc is None else None)
                acc = part if acc is None else acc.add_(part)
            outs.append(F.relu(acc, inplace=True))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
