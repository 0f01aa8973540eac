"""Deterministic stand-in weights in the official checkpoint layout (for parity tests; no real weights here).

Every tensor is drawn from a generator seeded by a hash of ``(seed, official key)``, so the same state dict is
produced anywhere, in any key order. Scales keep activations in a realistic range through deep stacks:
fan-in-scaled normals for conv/linear weights, ~1 for normalisation weights, small biases, moderate
position embeddings / relative-position tables (large enough that resampling them matters), LayerScale
~0.3. The final two head biases and the last 1x1 conv's weights are positive so the ReLU'd disparity is
non-zero (a meaningful comparison). Buffers that the
official files persist (BEiT ``relative_position_index``, Swin V2 ``attn_mask``) are computed by the
modules exactly as the reference computes them.
"""

from __future__ import annotations

import hashlib
import math
import re

import torch

from .loader import build_network, materialize, official_state_dict

__all__ = ["deterministic_tensor", "deterministic_state_dict", "state_dict_digest"]

_TRANSPOSED_CONV = re.compile(r"(depth_head\.resize_layers\.[01]\.weight|pretrained\.act_postprocess[12]\.4\.weight)$")
_LAST_BIASES = re.compile(r"(depth_head\.scratch\.output_conv2\.[02]\.bias|scratch\.output_conv\.[24]\.bias)$")
_LAST_WEIGHT = re.compile(r"(depth_head\.scratch\.output_conv2\.2\.weight|scratch\.output_conv\.4\.weight)$")


def _generator(key: str, seed: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def deterministic_tensor(key: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The float32 stand-in value of the official parameter ``key`` with ``shape``."""
    g = _generator(key, seed)
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    name = key.rsplit(".", 1)[-1]
    if _LAST_BIASES.search(key):
        return 0.5 + 0.1 * z
    if name in ("pos_embed", "cls_token", "mask_token"):
        return 0.2 * z
    if name == "relative_position_bias_table":
        return 0.5 * z
    if name == "logit_scale":  # Swin V2 cosine-attention temperature, log-space (init log 10)
        return math.log(10.0) + 0.1 * z
    if name in ("gamma", "gamma_1", "gamma_2"):  # LayerScale
        return 0.3 * (1.0 + 0.2 * z)
    if name in ("bias", "q_bias", "v_bias"):
        return 0.02 * z
    if len(shape) <= 1:  # normalisation weights
        return 1.0 + 0.1 * z
    if _LAST_WEIGHT.search(key):  # positive 1x1 output conv on ReLU'd features: disparity > 0 almost everywhere
        return z.abs() / math.sqrt(math.prod(shape[1:]))
    fan_in = shape[0] if _TRANSPOSED_CONV.search(key) else math.prod(shape[1:])
    return z / math.sqrt(fan_in)


@torch.no_grad()
def deterministic_state_dict(family: str, variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full official-layout state dict for ``(family, variant)`` (e.g. ``("dav2", "vits")``), deterministic.

    Floating parameters come from :func:`deterministic_tensor`; persistent official buffers are the values the
    modules compute. Saving it with ``torch.save`` gives a file in the official format.
    """
    net = build_network(family, variant)
    weights = {}
    for k, v in net.state_dict(keep_vars=True).items():
        off = net.to_official_key(k)
        if not v.is_floating_point():
            raise RuntimeError(f"unexpected non-float persistent tensor {off}")
        weights[k] = deterministic_tensor(off, tuple(v.shape), seed)
    net.load_state_dict(weights, strict=True, assign=True)
    materialize(net, "cpu")
    return official_state_dict(net)


def state_dict_digest(sd: dict[str, torch.Tensor]) -> str:
    """SHA-256 over keys, dtypes, shapes and bytes (sorted by key): identifies a generated state dict."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()
