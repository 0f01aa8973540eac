"""Winograd F(2x2,3x3) convolution: the CPU inference fast path of the DPT decoder's wide 3x3 convolutions.

:class:`WinogradConv2d` is an ``nn.Conv2d`` (same parameters and state dict) that switches to
:func:`winograd_conv3x3` when autograd is off and the layer is wide enough to gain; the plain convolution is
the reference (the tests compare the two).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tensor_cache import TensorSnapshot

__all__ = ["winograd_weights", "winograd_conv3x3", "WinogradConv2d"]


# Winograd F(2x2, 3x3) (Lavin & Gray 2016): Y = A^T [(G g G^T) * (B^T d B)] A on 4x4 input tiles, stride 2
_WINO_BT = ((1.0, 0.0, -1.0, 0.0), (0.0, 1.0, 1.0, 0.0), (0.0, -1.0, 1.0, 0.0), (0.0, 1.0, 0.0, -1.0))
_WINO_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_WINO_AT = ((1.0, 1.0, 1.0, 0.0), (0.0, 1.0, -1.0, -1.0))
_WINO_MATS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _wino_transforms(device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kron(B^T, B^T) (16,16), kron(A^T, A^T) (4,16))`` on ``device``/``dtype``."""
    key = (str(device), dtype)
    if key not in _WINO_MATS:
        bt, at = torch.tensor(_WINO_BT, dtype=torch.float64), torch.tensor(_WINO_AT, dtype=torch.float64)
        _WINO_MATS[key] = (torch.kron(bt, bt).to(device, dtype), torch.kron(at, at).to(device, dtype))
    return _WINO_MATS[key]


def winograd_weights(weight: torch.Tensor) -> torch.Tensor:
    """3x3 kernels (K,C,3,3) -> their F(2x2,3x3) transforms ``G g G^T`` as (16, C, K), computed in float64."""
    g = torch.tensor(_WINO_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ar,kcrs,bs->abck", g, weight.detach().double(), g)
    return u.reshape(16, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, band_bytes: int) -> torch.Tensor:
    """Stride-1, zero-padding-1 3x3 convolution by Winograd F(2x2,3x3): (B,C,H,W), H and W even -> (B,K,H,W).

    ``u`` (16,C,K) from :func:`winograd_weights`. 4x4 input tiles (stride 2) are transformed with one small
    matmul, the 16 tile positions multiplied with one batched matmul (2.25x fewer multiply-adds than the
    direct convolution), the 2x2 outputs transformed back and the bias added while writing them in place.
    Work runs in bands of tile rows whose transformed tiles take about ``band_bytes`` (cache-sized
    buffers). Result in channels-last memory format; equal to ``F.conv2d`` up to float rounding (the
    transforms only use the factors 0, +-1 and +-1/2).
    """
    b, c, h, w = x.shape
    k = u.shape[2]
    kin, kout = _wino_transforms(x.device, x.dtype)
    xn = x.permute(0, 2, 3, 1)  # (B,H,W,C) view (contiguous for channels-last input)
    th, tw = h // 2, w // 2
    y = torch.empty((b, h, w, k), dtype=x.dtype, device=x.device)
    rows = max(1, band_bytes // (16 * max(c, k) * x.element_size() * tw))
    for bi in range(b):
        for i0 in range(0, th, rows):
            nr = min(th, i0 + rows) - i0
            nt = nr * tw
            r0, r1 = 2 * i0 - 1, 2 * (i0 + nr) + 1  # input rows of the band's tiles, incl. the zero border
            slab = F.pad(xn[bi, max(r0, 0): min(r1, h)], (0, 0, 1, 1, max(0, -r0), max(0, r1 - h)))
            s_h, s_w, _ = slab.stride()
            tiles = slab.as_strided((4, 4, nr, tw, c), (s_h, s_w, 2 * s_h, 2 * s_w, 1))
            v = torch.mm(kin, tiles.reshape(16, nt * c)).view(16, nt, c)
            m = torch.bmm(v, u)  # (16, nt, K)
            o = torch.mm(kout, m.view(16, nt * k)).view(2, 2, nr, tw, k).permute(2, 0, 3, 1, 4)
            dst = y[bi, 2 * i0: 2 * (i0 + nr)].view(nr, 2, tw, 2, k)
            if bias is None:
                dst.copy_(o)
            else:
                torch.add(o, bias, out=dst)
    return y.permute(0, 3, 1, 2)


class WinogradConv2d(nn.Conv2d):
    """A 3x3, stride-1, padding-1 ``nn.Conv2d`` (same parameters and state dict) that runs inference on CPU
    by Winograd F(2x2,3x3) (:func:`winograd_conv3x3`) when it pays off.

    Used when autograd is off, the input is a float32 CPU tensor with even H and W, H*W is at least
    ``min_pixels`` (smaller maps gain too little for the extra operator calls) and both channel counts are at
    least ``min_channels`` (below that the batched matmul is too thin to beat oneDNN's direct convolution);
    otherwise the ordinary convolution runs. The transformed kernels are cached, keyed on the
    weight's ``data_ptr`` and in-place version counter (``load_state_dict``, optimiser steps and in-place
    edits under ``torch.no_grad`` invalidate them; edits through ``.data`` need :meth:`clear_cache`).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, *, min_channels: int = 128,
                 min_pixels: int = 32 * 32, band_bytes: int = 8 * 2**20):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)
        self.min_channels = min_channels
        self.min_pixels = min_pixels
        self.band_bytes = band_bytes
        self._wino: tuple | None = None

    def clear_cache(self) -> None:
        """Drop the cached Winograd kernels."""
        self._wino = None

    def uses_winograd(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` takes the Winograd path."""
        return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
                and x.ndim == 4 and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0
                and x.shape[-2] * x.shape[-1] >= self.min_pixels
                and min(self.in_channels, self.out_channels) >= self.min_channels
                and not self.weight.is_inference() and self.padding_mode == "zeros")

    def winograd_kernels(self) -> torch.Tensor:
        """The cached (16, C, K) transformed kernels (recomputed when the weight changed)."""
        if self._wino is None or not self._wino[0].matches(self.weight):
            self._wino = (TensorSnapshot(self.weight), winograd_weights(self.weight))
        return self._wino[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.uses_winograd(x):
            return super().forward(x)
        return winograd_conv3x3(x, self.winograd_kernels(), self.bias, self.band_bytes)
