"""Multiresolution hash-grid encoding with tiny-cuda-nn's exact semantics.

Formula (per level ``l``, identical to tcnn's ``GridEncodingTemplated`` with ``interpolation="Linear"``):

    scale_l = 2^(l * log2(per_level_scale)) * base_resolution - 1      (float32 arithmetic)
    res_l   = ceil(scale_l) + 1
    pos     = fma(scale_l, x, 0.5);   cell = floor(pos);   frac = pos - cell        (per input dimension)
    index   = cell_x + res*(cell_y + res*cell_z)             if the level is dense (res^D <= table size)
            = (cell_x*1) XOR (cell_y*2654435761) XOR (cell_z*805459861)   otherwise,
              all in uint32 arithmetic (32-bit wraparound), then  index % size_l
    out_l   = sum over the 2^D cell corners of trilinear weight * table[offset_l + index]

Table layout = tcnn's flat parameter vector: level ``l`` owns entries ``[offset_l, offset_l + size_l)`` with
``size_l = min(next_multiple(res_l^D, 8), 2^log2_hashmap_size)``; entry ``e`` feature ``f`` lives at
``params[e * F + f]``. A tcnn ``Encoding``'s ``params`` therefore loads into ``HashGridEncoding.params`` as is
(and back): see :meth:`HashGridEncoding.to_tcnn_params` / :meth:`HashGridEncoding.from_tcnn_params`.
Because of the +0.5 offset, the upper corner of a dense level can index one past the last vertex of a row;
tcnn lets that wrap into the next row (``% size``) and so do we.

A level counts as dense exactly when tcnn's own test says so: it accumulates the strides ``res^d`` in uint32
while they are <= size and hashes if the last one exceeds the size. For ``res >= 2^16`` (e.g. 16 levels with
``per_level_scale=2``) that stride wraps to 0 and tcnn indexes such levels "densely" with z dropping out; this
is reproduced, not fixed (choose ``per_level_scale`` from the finest resolution, see :func:`per_level_scale_for`).

Inputs are expected in ``[0, 1]``; values outside are clamped to ``[0, 1]``. The input gradient is zero
outside ``[0, 1]`` and passes through on the closed interval (points at exactly 0 or 1 still get one, unlike
``torch.clamp``'s). Non-finite inputs raise ``ValueError``.

Backends: ``"torch"`` (vectorised reference, any float dtype, gradients wrt table and inputs, double
backward), ``"cpu"`` (fused C++/OpenMP op built on first use; float32 CPU only; gradients wrt table and
inputs, no double backward), ``"tcnn"`` (``tinycudann.Encoding`` on CUDA) and ``"auto"`` (tcnn on CUDA
tensors when tinycudann imports, else the C++ op for float32 CPU tensors when it builds, else torch).
The table gradient is dense (n_params floats, 64 MB for 16 x 2^19 x 2), as Adam expects; a sparse-aware
fused optimizer step would avoid touching it all but is not implemented.
Numerical agreement between backends is to float32 rounding; the per-level ``scale`` is computed once in
float32 like tcnn's host code (tcnn's device ``exp2f`` may differ from it by an ulp in rare cases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .backends import tcnn_available

__all__ = [
    "HashGridEncoding",
    "HashGridLayout",
    "hashgrid_layout",
    "hash_encode_torch",
    "tcnn_available",
    "per_level_scale_for",
    "PRIMES",
    "BACKENDS",
]

PRIMES = (1, 2654435761, 805459861)
BACKENDS = ("auto", "torch", "cpu", "tcnn")
_UINT32 = 0xFFFFFFFF
_TCNN_FEATURES = (1, 2, 4, 8)
_MAX_LOG2_HASHMAP = 30


def per_level_scale_for(base_resolution: int, finest_resolution: float, n_levels: int) -> float:
    """Growth factor so that level ``n_levels - 1`` reaches ``finest_resolution``: exp(ln(finest/base) / (L-1))."""
    if n_levels < 2:
        return 1.0
    if base_resolution <= 0 or finest_resolution < base_resolution:
        raise ValueError(
            f"per_level_scale_for: need 0 < base_resolution <= finest_resolution, got {base_resolution} and "
            f"{finest_resolution}"
        )
    return math.exp(math.log(finest_resolution / base_resolution) / (n_levels - 1))


@dataclass(frozen=True)
class HashGridLayout:
    """Per-level constants of a hash grid, computed exactly as tcnn does.

    Attributes:
        scales: (L,) float32 ``scale_l``.
        resolutions: (L,) ``res_l = ceil(scale_l) + 1``.
        sizes: (L,) table entries per level (``hashmap_size`` in tcnn).
        offsets: (L+1,) first entry of each level; ``offsets[-1]`` = total entries.
        dense: (L,) True where the level is indexed densely (no hashing).
        n_features_per_level: F.
    """

    scales: np.ndarray
    resolutions: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    dense: np.ndarray
    n_features_per_level: int

    @property
    def n_levels(self) -> int:
        return int(self.scales.shape[0])

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector (entries x F), tcnn's ``n_params()``."""
        return int(self.offsets[-1]) * self.n_features_per_level


def _validate_config(n_input_dims, n_levels, n_features_per_level, log2_hashmap_size, base_resolution, per_level_scale):
    if not isinstance(n_input_dims, (int, np.integer)) or n_input_dims not in (2, 3):
        raise ValueError(f"HashGridEncoding: n_input_dims must be 2 or 3 (as in tinycudann), got {n_input_dims!r}")
    if not isinstance(n_levels, (int, np.integer)) or not 1 <= n_levels <= 32:
        raise ValueError(f"HashGridEncoding: n_levels must be an integer in [1, 32], got {n_levels!r}")
    if n_features_per_level not in _TCNN_FEATURES:
        raise ValueError(
            f"HashGridEncoding: n_features_per_level must be one of {_TCNN_FEATURES} (tinycudann's supported "
            f"values), got {n_features_per_level!r}"
        )
    if not isinstance(log2_hashmap_size, (int, np.integer)) or not 1 <= log2_hashmap_size <= _MAX_LOG2_HASHMAP:
        raise ValueError(
            f"HashGridEncoding: log2_hashmap_size must be an integer in [1, {_MAX_LOG2_HASHMAP}], "
            f"got {log2_hashmap_size!r}"
        )
    if not isinstance(base_resolution, (int, np.integer)) or base_resolution < 1:
        raise ValueError(f"HashGridEncoding: base_resolution must be an integer >= 1, got {base_resolution!r}")
    if not (isinstance(per_level_scale, (int, float, np.floating)) and math.isfinite(per_level_scale)) or (
        per_level_scale <= 0
    ):
        raise ValueError(f"HashGridEncoding: per_level_scale must be a finite number > 0, got {per_level_scale!r}")


def hashgrid_layout(
    n_input_dims: int = 3,
    n_levels: int = 16,
    n_features_per_level: int = 2,
    log2_hashmap_size: int = 19,
    base_resolution: int = 16,
    per_level_scale: float = 2.0,
) -> HashGridLayout:
    """Level scales, resolutions, table sizes and offsets, following tcnn's constructor step by step.

    ``per_level_scale`` is rounded to float32 (tcnn reads it as ``float``) and every level constant is computed
    in float32 (``exp2f(l * log2f(per_level_scale)) * base_resolution - 1``).
    """
    _validate_config(n_input_dims, n_levels, n_features_per_level, log2_hashmap_size, base_resolution, per_level_scale)
    f32 = np.float32
    log2_pls = f32(math.log2(float(f32(per_level_scale))))
    max_params = _UINT32 // 2
    table = 1 << int(log2_hashmap_size)
    scales, res, sizes, offsets, dense = [], [], [], [0], []
    for level in range(int(n_levels)):
        exponent = f32(f32(level) * log2_pls)
        scale = f32(f32(f32(2.0 ** float(exponent)) * f32(base_resolution)) - f32(1.0))
        r = int(math.ceil(float(scale))) + 1
        params = max_params if float(r) ** n_input_dims > float(max_params) else r**n_input_dims
        params = (params + 7) // 8 * 8  # tcnn: "make sure memory accesses will be aligned"
        size = min(params, table)
        # tcnn's grid_index: dense strides accumulate in uint32 while stride <= size; hash if size < stride.
        stride = 1
        for _ in range(n_input_dims):
            if stride > size:
                break
            stride = (stride * r) & _UINT32
        scales.append(scale)
        res.append(r)
        sizes.append(size)
        offsets.append(offsets[-1] + size)
        dense.append(not size < stride)
    return HashGridLayout(
        scales=np.asarray(scales, dtype=np.float32),
        resolutions=np.asarray(res, dtype=np.int64),
        sizes=np.asarray(sizes, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.int64),
        dense=np.asarray(dense, dtype=bool),
        n_features_per_level=int(n_features_per_level),
    )


def hash_encode_torch(x: torch.Tensor, params: torch.Tensor, layout: HashGridLayout) -> torch.Tensor:
    """Reference (vectorised PyTorch) hash encoding.

    Args:
        x: (N, D) positions; clamped to [0, 1]. Any float dtype; computation in ``params``' dtype.
        params: (n_params,) flat table in tcnn layout.
        layout: from :func:`hashgrid_layout`.
    Returns:
        (N, L*F) features, level-major (level 0's F features first), like tcnn.
    """
    n, d = x.shape
    f = layout.n_features_per_level
    dtype = params.dtype
    x = x.to(dtype)
    # Clamp to [0, 1]; the gradient passes on the closed interval (also at exactly 0 and 1), zero outside.
    x = torch.where((x >= 0) & (x <= 1), x, x.detach().clamp(0.0, 1.0))
    table = params.view(-1, f)
    bits = torch.arange(1 << d, device=x.device)
    corner = ((bits[:, None] >> torch.arange(d, device=x.device)[None]) & 1).to(torch.int64)  # (2^D, D)
    primes = torch.tensor(PRIMES[:d], dtype=torch.int64, device=x.device)
    # fma(scale, x, 0.5) in float32: the product of two floats is exact in float64, one rounding afterwards.
    x_wide = x.double() if dtype == torch.float32 else x
    feats = []
    for level in range(layout.n_levels):
        scale = float(layout.scales[level])
        res = int(layout.resolutions[level])
        size = int(layout.sizes[level])
        offset = int(layout.offsets[level])
        pos = (x_wide * scale + 0.5).to(dtype)
        cell = torch.floor(pos)
        frac = pos - cell  # (N, D); d frac / dx = scale
        loc = cell.to(torch.int64)[:, None, :] + corner[None]  # (N, 2^D, D)
        if layout.dense[level]:
            idx = torch.zeros(loc.shape[:2], dtype=torch.int64, device=x.device)
            stride = 1
            for k in range(d):
                idx = (idx + loc[..., k] * stride) & _UINT32
                stride = (stride * res) & _UINT32
        else:
            h = (loc * primes) & _UINT32
            idx = h[..., 0]
            for k in range(1, d):
                idx = idx ^ h[..., k]
        idx = idx % size
        w = torch.where(corner[None].bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)  # (N, 2^D)
        vals = table[offset + idx]  # (N, 2^D, F)
        feats.append((vals * w[..., None]).sum(1))
    if not feats:
        return x.new_zeros(n, 0)
    return torch.cat(feats, -1)


class _HashGridCPUFunction(torch.autograd.Function):
    """Autograd wrapper of the fused C++ op (float32 CPU)."""

    @staticmethod
    def forward(ctx, x, params, meta, ext, backward_block):
        scales, res, offsets, dense, f = meta
        out = ext.hashgrid_forward(x, params, scales, res, offsets, dense, f)
        ctx.save_for_backward(x, params)
        ctx.meta = meta
        ctx.ext = ext
        ctx.block = backward_block
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, params = ctx.saved_tensors
        scales, res, offsets, dense, f = ctx.meta
        g_table, g_x = ctx.ext.hashgrid_backward(
            x, params, grad_out, scales, res, offsets, dense, f, bool(ctx.needs_input_grad[0]), ctx.block
        )
        return (g_x if ctx.needs_input_grad[0] else None), g_table, None, None, None


class HashGridEncoding(nn.Module):
    """tcnn-compatible multiresolution hash encoding.

    Args:
        n_input_dims: D, 2 or 3.
        n_levels: L.
        n_features_per_level: F (1, 2, 4 or 8).
        log2_hashmap_size: log2 of the maximum entries per level (T).
        base_resolution: coarsest grid resolution (vertices per axis, before the -1 of tcnn's formula).
        per_level_scale: growth factor between levels (tcnn's default is 2.0; always pass it explicitly).
        backend: "auto" | "torch" | "cpu" | "tcnn" (see module docstring).
        init_range: parameters are initialised U(-init_range, init_range) (tcnn: 1e-4).
        backward_block: points per block in the C++ backward (cache tiling, no effect on results); 0 = the whole
            batch, i.e. level-major passes that keep one level's table in the last-level cache.

    Attributes:
        params: (n_params,) flat parameter vector in tcnn's layout (interchangeable with tcnn's ``params``).
        n_output_dims: L * F.
        layout: :class:`HashGridLayout`.

    ``forward(x (N, D)) -> (N, L*F)`` features in ``params``' dtype (float32 by default).
    """

    def __init__(
        self,
        n_input_dims: int = 3,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        per_level_scale: float = 2.0,
        backend: str = "auto",
        init_range: float = 1e-4,
        backward_block: int = 0,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"HashGridEncoding: backend must be one of {BACKENDS}, got {backend!r}")
        self.layout = hashgrid_layout(
            n_input_dims, n_levels, n_features_per_level, log2_hashmap_size, base_resolution, per_level_scale
        )
        self.n_input_dims = int(n_input_dims)
        self.n_levels = int(n_levels)
        self.n_features_per_level = int(n_features_per_level)
        self.log2_hashmap_size = int(log2_hashmap_size)
        self.base_resolution = int(base_resolution)
        self.per_level_scale = float(per_level_scale)
        self.n_output_dims = self.n_levels * self.n_features_per_level
        self.backend = backend
        self.backward_block = int(backward_block)
        self.params = nn.Parameter(torch.empty(self.layout.n_params).uniform_(-init_range, init_range))
        self._meta = (
            torch.from_numpy(self.layout.scales.copy()),
            torch.from_numpy(self.layout.resolutions.copy()),
            torch.from_numpy(self.layout.offsets.copy()),
            torch.from_numpy(self.layout.dense.copy()),
            self.n_features_per_level,
        )
        self._tcnn_module = None  # created lazily on the first CUDA forward
        if backend == "tcnn" and not tcnn_available():
            raise RuntimeError(
                "HashGridEncoding(backend='tcnn') needs tinycudann and a CUDA device; install tiny-cuda-nn's torch "
                "bindings or use backend='auto' / 'cpu' / 'torch'"
            )
        if backend == "cpu":
            self._cpu_ext()  # build now so a failure warns at construction time

    # ---- configuration ---------------------------------------------------------------------------------------
    def tcnn_config(self) -> dict:
        """The ``encoding_config`` for ``tinycudann.Encoding`` that reproduces this encoding."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": "Linear",
        }

    def to_tcnn_params(self) -> torch.Tensor:
        """(n_params,) float32 copy of the table in tcnn's layout (the layouts are identical)."""
        return self.params.detach().float().clone()

    @torch.no_grad()
    def from_tcnn_params(self, params: torch.Tensor) -> None:
        """Load a tcnn ``Encoding.params`` vector (same config) into this module."""
        params = torch.as_tensor(params)
        if params.dim() != 1 or params.numel() != self.layout.n_params:
            raise ValueError(
                f"HashGridEncoding.from_tcnn_params: expected a flat vector of {self.layout.n_params} values for "
                f"config {self.tcnn_config()}, got shape {tuple(params.shape)}; the tcnn encoding must use the "
                "same n_levels, n_features_per_level, log2_hashmap_size, base_resolution and per_level_scale"
            )
        self.params.copy_(params.to(self.params.dtype))

    def extra_repr(self) -> str:
        return (
            f"n_input_dims={self.n_input_dims}, n_levels={self.n_levels}, "
            f"n_features_per_level={self.n_features_per_level}, log2_hashmap_size={self.log2_hashmap_size}, "
            f"base_resolution={self.base_resolution}, per_level_scale={self.per_level_scale:.6g}, "
            f"backend={self.backend!r}, n_params={self.layout.n_params}"
        )

    # ---- backends --------------------------------------------------------------------------------------------
    @staticmethod
    def _cpu_ext():
        from ._cpu_ext import load_cpu_ext

        return load_cpu_ext()

    def resolve_backend(self, x: torch.Tensor) -> str:
        """The backend that ``forward`` uses for this input ("torch", "cpu" or "tcnn")."""
        if self.backend == "torch":
            return "torch"
        if self.backend == "tcnn":
            return "tcnn"
        cpu_ok = x.device.type == "cpu" and x.dtype == torch.float32 and self.params.dtype == torch.float32
        if self.backend == "cpu":
            if not cpu_ok:
                raise ValueError(
                    "HashGridEncoding(backend='cpu') needs float32 CPU tensors, got x "
                    f"{x.dtype} on {x.device} and params {self.params.dtype}; use backend='auto' or 'torch'"
                )
            return "cpu" if self._cpu_ext() is not None else "torch"
        if x.is_cuda and tcnn_available():
            return "tcnn"
        if cpu_ok and self._cpu_ext() is not None:
            return "cpu"
        return "torch"

    def _tcnn_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            raise ValueError(f"HashGridEncoding(backend='tcnn'): x must be a CUDA tensor, got device {x.device}")
        if self._tcnn_module is None:
            import tinycudann as tcnn

            module = tcnn.Encoding(self.n_input_dims, self.tcnn_config(), dtype=torch.float32)
            if module.n_output_dims != self.n_output_dims or module.params.numel() != self.layout.n_params:
                raise RuntimeError(
                    f"tinycudann's HashGrid has {module.params.numel()} params / {module.n_output_dims} outputs, "
                    f"expected {self.layout.n_params} / {self.n_output_dims}; this tinycudann version lays the "
                    "grid out differently, use backend='torch'"
                )
            # Hidden from nn.Module registration so the state dict keeps the single key "params".
            self.__dict__["_tcnn_module"] = module
        module = self._tcnn_module
        module.params = self.params  # share our parameter (same layout), so optimizers and state dicts see one
        return module(x.float().clamp(0.0, 1.0)).to(self.params.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode positions.

        Args:
            x: (N, D) positions in [0, 1] (clamped).
        Returns:
            (N, L*F) features.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.n_input_dims:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"HashGridEncoding.forward: x must have shape (N, {self.n_input_dims}), got {shape}; "
                "flatten leading dimensions first, e.g. x.reshape(-1, 3)"
            )
        if not x.is_floating_point():
            raise ValueError(f"HashGridEncoding.forward: x must be a floating-point tensor, got {x.dtype}")
        if x.shape[0] == 0:
            return self.params.new_zeros(0, self.n_output_dims)
        backend = self.resolve_backend(x)
        if backend == "tcnn":
            return self._tcnn_forward(x)
        if backend == "cpu":
            ext = self._cpu_ext()
            try:
                return _HashGridCPUFunction.apply(x.contiguous(), self.params, self._meta, ext, self.backward_block)
            except RuntimeError as exc:
                if "non-finite" in str(exc) or "NaN" in str(exc):
                    raise ValueError(str(exc).splitlines()[0]) from None
                raise
        if not bool(torch.isfinite(x).all()):
            raise ValueError("HashGridEncoding: x contains NaN or infinite coordinates; positions must be finite")
        return hash_encode_torch(x, self.params, self.layout)
