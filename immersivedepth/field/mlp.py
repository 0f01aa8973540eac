"""Small MLPs for the radiance field: fast on CPU, tinycudann's FullyFusedMLP on CUDA when available.

``make_mlp(n_in, n_out, width, depth)`` builds ``depth`` hidden layers of ``width`` units (tcnn's
``n_hidden_layers``), i.e. ``depth + 1`` linear layers: n_in -> width -> ... -> width -> n_out.

CPU backends of :class:`FusedMLP` (same ``nn.Linear`` parameters, so they are interchangeable):
  * ``"cpu"``: a fused C++ op (``csrc/fused_mlp.cpp``) that walks the batch in row chunks small enough to stay
    in L1/L2 and writes no per-layer (N, width) tensors. When gradients are needed, the forward stores the hidden
    activations once, chunk-major, in a pooled (already faulted-in) buffer, and the backward reads them instead of
    recomputing them. At N ~ 1e5 and width 64 the plain PyTorch version spends most of its time allocating,
    page-faulting and streaming activation tensors between separate kernels, not multiplying.
  * ``"torch"``: plain ``nn.Linear`` + activation modules (reference; any dtype/device; double backward).
``"auto"`` uses the C++ op for float32 CPU inputs when it builds, torch otherwise.

:class:`TcnnMLP` wraps ``tinycudann.Network`` (FullyFusedMLP for widths 16/32/64/128, else CutlassMLP).
Its parameters are tcnn's own flat vector and do **not** load into a :class:`FusedMLP` (tcnn pads and
transposes its layers); only encodings have interchangeable parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .backends import tcnn_available

__all__ = ["make_mlp", "FusedMLP", "TcnnMLP", "ACTIVATIONS"]

ACTIVATIONS = {None: 0, "none": 0, "relu": 1, "sigmoid": 2}
_TCNN_ACT = {0: "None", 1: "ReLU", 2: "Sigmoid"}
_TCNN_FUSED_WIDTHS = (16, 32, 64, 128)
_MAX_CPU_WIDTH = 128


def _act_code(name, arg: str) -> int:
    key = name.lower() if isinstance(name, str) else name
    if key not in ACTIVATIONS:
        raise ValueError(f"make_mlp: {arg} must be one of 'relu', 'sigmoid', 'none' or None, got {name!r}")
    return ACTIVATIONS[key]


def _apply_act(x: torch.Tensor, code: int) -> torch.Tensor:
    if code == 1:
        return torch.relu(x)
    if code == 2:
        return torch.sigmoid(x)
    return x


class _FusedMLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, ext, act, out_act, chunk, n_layers, has_bias, save_hidden, *params):
        weights = list(params[:n_layers])
        biases = list(params[n_layers:]) if has_bias else []
        y, hidden = ext.mlp_forward(x, weights, biases, act, out_act, chunk, save_hidden)
        ctx.save_for_backward(x, hidden, *params)
        ctx.cfg = (ext, act, out_act, chunk, n_layers, has_bias)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, hidden, *params = ctx.saved_tensors
        ext, act, out_act, chunk, n_layers, has_bias = ctx.cfg
        weights = params[:n_layers]
        biases = params[n_layers:] if has_bias else []
        need_gx = bool(ctx.needs_input_grad[0])
        res = ext.mlp_backward(x, list(weights), list(biases), grad_y, act, out_act, chunk, need_gx, hidden)
        gx = res[0] if need_gx else None
        gw = res[1 : 1 + n_layers]
        gb = res[1 + n_layers :] if has_bias else []
        return (gx, None, None, None, None, None, None, None, *gw, *gb)


class FusedMLP(nn.Module):
    """MLP ``n_in -> width x depth -> n_out`` with a fused CPU path.

    Args:
        n_in, n_out: input / output features.
        width: hidden units per layer (<= 128 for the C++ path).
        depth: number of hidden layers (0 = a single linear layer).
        activation: hidden activation, "relu" | "sigmoid" | "none".
        output_activation: None | "relu" | "sigmoid".
        bias: linear layers with bias.
        backend: "auto" | "cpu" | "torch".
        chunk_rows: rows per cache-resident chunk in the C++ op (a multiple of its 6-row register tile; 48-72
            measured 5% faster than 32 for width 64).

    ``forward(x (N, n_in)) -> (N, n_out)``. Parameters live in ``self.layers`` (``nn.Linear`` modules).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "relu",
        output_activation: str | None = None,
        bias: bool = True,
        backend: str = "auto",
        chunk_rows: int = 48,
    ) -> None:
        super().__init__()
        for name, v, lo in (("n_in", n_in, 1), ("n_out", n_out, 1), ("width", width, 1), ("depth", depth, 0)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"make_mlp: {name} must be an integer >= {lo}, got {v!r}")
        if backend not in ("auto", "cpu", "torch"):
            raise ValueError(f"FusedMLP: backend must be 'auto', 'cpu' or 'torch', got {backend!r}")
        self.act = _act_code(activation, "activation")
        self.out_act = _act_code(output_activation, "output_activation")
        dims = [n_in] + [width] * depth + [n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:]))
        self.n_input_dims, self.n_output_dims = n_in, n_out
        self.width, self.depth, self.has_bias = width, depth, bias
        self.backend = backend
        self.chunk_rows = int(chunk_rows)
        self._cpu_fits = max(dims) <= _MAX_CPU_WIDTH
        if backend == "cpu":
            if not self._cpu_fits:
                raise ValueError(f"FusedMLP(backend='cpu'): layer widths must be <= {_MAX_CPU_WIDTH}, got {dims}")
            self._ext()

    @staticmethod
    def _ext():
        from ._cpu_ext import load_cpu_ext

        return load_cpu_ext()

    def resolve_backend(self, x: torch.Tensor) -> str:
        """"cpu" or "torch": what ``forward`` uses for this input."""
        if self.backend == "torch":
            return "torch"
        ok = (
            self._cpu_fits
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in self.parameters())
        )
        if not ok:
            if self.backend == "cpu":
                raise ValueError(
                    f"FusedMLP(backend='cpu') needs float32 CPU inputs and parameters, got x {x.dtype} on {x.device}"
                )
            return "torch"
        return "cpu" if self._ext() is not None else "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_in) -> (N, n_out)."""
        if x.dim() != 2 or x.shape[1] != self.n_input_dims:
            raise ValueError(f"FusedMLP.forward: x must have shape (N, {self.n_input_dims}), got {tuple(x.shape)}")
        if self.resolve_backend(x) == "cpu":
            weights = [layer.weight for layer in self.layers]
            biases = [layer.bias for layer in self.layers] if self.has_bias else []
            # the backward reads saved hidden activations instead of recomputing them; only worth their memory
            # when a backward will follow
            save_hidden = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in weights))
            return _FusedMLPFunction.apply(
                x.contiguous(),
                self._ext(),
                self.act,
                self.out_act,
                self.chunk_rows,
                len(weights),
                self.has_bias,
                save_hidden,
                *weights,
                *biases,
            )
        h = x
        for i, layer in enumerate(self.layers):
            h = _apply_act(layer(h), self.out_act if i == len(self.layers) - 1 else self.act)
        return h


class TcnnMLP(nn.Module):
    """``tinycudann.Network`` with the same constructor arguments (CUDA only; half precision inside).

    Biases are not supported by tcnn networks; ``bias`` must be False or it raises.
    """

    def __init__(self, n_in, n_out, width=64, depth=2, activation="relu", output_activation=None, bias=False):
        super().__init__()
        if bias:
            raise ValueError("TcnnMLP: tinycudann networks have no biases; pass bias=False or use backend='torch'")
        import tinycudann as tcnn

        otype = "FullyFusedMLP" if width in _TCNN_FUSED_WIDTHS else "CutlassMLP"
        self.network_config = {
            "otype": otype,
            "activation": _TCNN_ACT[_act_code(activation, "activation")],
            "output_activation": _TCNN_ACT[_act_code(output_activation, "output_activation")],
            "n_neurons": width,
            "n_hidden_layers": depth,
        }
        self.net = tcnn.Network(n_in, n_out, self.network_config)
        self.n_input_dims, self.n_output_dims = n_in, n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_in) CUDA -> (N, n_out) float32."""
        return self.net(x).float()


def make_mlp(
    n_in: int,
    n_out: int,
    width: int = 64,
    depth: int = 2,
    activation: str = "relu",
    output_activation: str | None = None,
    backend: str = "auto",
    bias: bool = True,
    **kwargs,
) -> nn.Module:
    """Build an MLP with ``depth`` hidden layers of ``width`` units.

    Args:
        backend: "auto" (tinycudann when it imports and CUDA is present, else :class:`FusedMLP` with its own
            auto CPU/torch choice), "tcnn", "cpu" or "torch".
        kwargs: passed to :class:`FusedMLP` (e.g. ``chunk_rows``).
    Returns:
        an ``nn.Module`` mapping (N, n_in) -> (N, n_out).
    """
    if backend not in ("auto", "tcnn", "cpu", "torch"):
        raise ValueError(f"make_mlp: backend must be 'auto', 'tcnn', 'cpu' or 'torch', got {backend!r}")
    if backend == "tcnn" or (backend == "auto" and tcnn_available()):
        if not tcnn_available():
            raise RuntimeError("make_mlp(backend='tcnn') needs tinycudann and a CUDA device; use 'auto' or 'cpu'")
        return TcnnMLP(n_in, n_out, width, depth, activation, output_activation, bias=False)
    return FusedMLP(n_in, n_out, width, depth, activation, output_activation, bias=bias, backend=backend, **kwargs)
