"""Building networks and loading official checkpoints into them."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .checkpoints import (
    CheckpointError,
    check_layout,
    detect_variant,
    find_checkpoint,
    read_state_dict,
)
from .depth_anything_v2 import DAV2_CONFIGS, DAV2_RESIZE, DepthAnythingV2
from .midas import MIDAS_CONFIGS, MIDAS_UNSUPPORTED, MidasDPT, midas_resize_rule
from .model import DepthModel
from .preprocess import ResizeRule
from .presets import PRESETS, preset_for_variant

__all__ = [
    "resolve_variant", "build_network", "official_layout", "official_state_dict", "materialize",
    "load_network", "load_depth_model", "build_preset", "default_resize_rule",
]


def resolve_variant(variant: str) -> tuple[str, str]:
    """Any accepted spelling -> ``(family, variant)``.

    Accepts DA V2 encoders (``vits``), preset names (``dav2_vits``, ``midas_beit_b384``) and MiDaS model types
    (``dpt_beit_base_384``).
    """
    if variant in PRESETS:
        p = PRESETS[variant]
        return p.family, p.variant
    if variant in DAV2_CONFIGS:
        return "dav2", variant
    if variant in MIDAS_CONFIGS:
        return "midas", variant
    if variant in MIDAS_UNSUPPORTED:
        raise CheckpointError(f"MiDaS model {variant!r} is not supported: {MIDAS_UNSUPPORTED[variant]}")
    raise CheckpointError(
        f"unknown depth-model variant {variant!r}; use a preset ({sorted(PRESETS)}), a Depth Anything V2 encoder "
        f"({sorted(DAV2_CONFIGS)}) or a MiDaS model type ({sorted(MIDAS_CONFIGS)})"
    )


def build_network(family: str, variant: str, device: str | torch.device = "meta") -> nn.Module:
    """An uninitialised network of the given architecture (on ``meta`` by default: no memory, no init cost)."""
    with torch.device(device):
        if family == "dav2":
            return DepthAnythingV2(DAV2_CONFIGS[variant])
        if family == "midas":
            return MidasDPT(MIDAS_CONFIGS[variant])
    raise ValueError(f"unknown family {family!r}")


def default_resize_rule(net: nn.Module) -> ResizeRule:
    """The official preprocessing of a network built by :func:`build_network`."""
    return DAV2_RESIZE if net.family == "dav2" else midas_resize_rule(net.cfg)


def official_layout(net: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{official key: shape}`` of ``net``'s checkpoint file, including the buffers the official files store."""
    out = {net.to_official_key(k): tuple(v.shape) for k, v in net.state_dict(keep_vars=True).items()}
    for k, v in net.official_extra_buffers().items():
        out[k] = tuple(v.shape)
    return out


def official_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s weights in the official file layout (what ``torch.save`` of the official model would write)."""
    out = {net.to_official_key(k): v.detach() for k, v in net.state_dict().items()}
    for k, v in net.official_extra_buffers().items():
        out[k] = v.detach().clone()
    return out


def materialize(net: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """After ``load_state_dict(assign=True)``: create and compute the non-persistent buffers left on ``meta``."""
    for mod in net.modules():
        for name, buf in list(mod._buffers.items()):
            if buf is not None and buf.is_meta:
                mod._buffers[name] = torch.empty_like(buf, device=device)
    for mod in net.modules():
        init = getattr(mod, "init_non_persistent_buffers", None)
        if callable(init):
            init()
    left = [n for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t is not None and t.is_meta]
    if left:
        raise RuntimeError(f"tensors left uninitialised after loading: {left[:8]}")
    return net


def load_network(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike,
    variant: str | None = None,
    *,
    compute_buffers: bool = True,
) -> nn.Module:
    """Check an official ``state_dict`` (read from ``path``) and load it into a new CPU network (eval mode).

    The variant is detected from the keys and shapes; if ``variant`` is given it must agree, otherwise the
    :class:`CheckpointError` lists the keys/shapes by which the file differs from the requested variant.
    ``compute_buffers=False`` skips computing the non-persistent buffers (for layout checks with ``meta``
    tensors; the network cannot run then).
    """
    family, detected = detect_variant(state_dict, path)
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    if variant is not None:
        req_family, req_variant = resolve_variant(variant)
        if (req_family, req_variant) != (family, detected):
            want = build_network(req_family, req_variant)
            check_layout(got, official_layout(want), path,
                         f"the requested variant {req_family} {req_variant} (the file looks like {family} {detected})")
            raise CheckpointError(f"checkpoint {str(path)!r} looks like {family} {detected}, not the requested "
                                  f"{req_family} {req_variant}")
    net = build_network(family, detected)
    check_layout(got, official_layout(net), path, f"the official {family} {detected} layout")
    extras = set(net.official_extra_buffers())
    mapped = {}
    for k, v in state_dict.items():
        if k in extras:
            continue  # recomputed exactly by our modules (the reference recomputes or never reads them)
        mapped[net.from_official_key(k)] = v.float().contiguous() if v.is_floating_point() else v
    net.load_state_dict(mapped, strict=True, assign=True)
    if compute_buffers:
        materialize(net, "cpu")
    return net.eval()


def load_depth_model(
    checkpoint_path: str | os.PathLike,
    *,
    variant: str | None = None,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    **model_kwargs,
) -> DepthModel:
    """Load an official Depth Anything V2 / MiDaS v3.1 checkpoint as a ready-to-use :class:`DepthModel`.

    Args:
        checkpoint_path: ``depth_anything_v2_vit*.pth`` / ``.safetensors`` or ``dpt_*.pt``.
        variant: optional expected variant (preset name, ``vitl``, ``dpt_beit_large_512``...); checked.
        device: where to run.
        input_size: the official ``--input-size`` (DA V2, default 518) / ``--height`` (MiDaS, default the
            model's net size).
        model_kwargs: passed to :class:`DepthModel` (``max_batch``, ``precision``, ``channels_last``).

    Returns:
        a :class:`DepthModel`; ``predict(rgb_uint8 (H,W,3))`` -> float32 (H,W) equals the official script.
    """
    path = Path(checkpoint_path)
    sd = read_state_dict(path)
    net = load_network(sd, path, variant)
    del sd
    rule = default_resize_rule(net)
    if input_size is not None:
        rule = rule.with_size(int(input_size))
    preset = preset_for_variant(net.family, net.cfg.name)
    return DepthModel(net, rule, name=preset.name, checkpoint_path=str(path), device=device, **model_kwargs)


def build_preset(
    name: str,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    **model_kwargs,
) -> DepthModel:
    """The preset's official file from the checkpoint directory, loaded and checked against the preset.

    ``checkpoint_dir`` default: ``$IMMERSIVEDEPTH_CHECKPOINTS`` if set, else ``checkpoints/`` relative to the
    current directory and to the repository root. A missing file raises
    :class:`~immersivedepth.depth.models.checkpoints.CheckpointNotFoundError` naming the file and its URL.
    """
    if name not in PRESETS:
        raise CheckpointError(f"unknown depth-model preset {name!r}; choose one of {sorted(PRESETS)}")
    path = find_checkpoint(PRESETS[name], checkpoint_dir)
    return load_depth_model(path, variant=name, device=device, input_size=input_size, **model_kwargs)
