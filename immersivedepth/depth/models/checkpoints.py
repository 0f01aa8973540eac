"""Finding, reading and checking official checkpoint files (never downloads anything).

* :func:`checkpoint_dirs` / :func:`find_checkpoint`: where files are looked for (``checkpoint_dir`` argument,
  else ``$IMMERSIVEDEPTH_CHECKPOINTS``, else ``checkpoints/`` in the current directory and the repository root).
* :func:`read_state_dict`: ``torch.load(weights_only=True)`` for ``.pth``/``.pt``, safetensors for
  ``.safetensors``; unwraps MiDaS's ``{"model", "optimizer"}`` training files like the official loader.
* :func:`detect_variant`: which family/variant a state dict is, from its keys and shapes.
* :func:`check_layout`: compares a state dict's keys and shapes with the expected official layout.

Every failure raises :class:`CheckpointError` (a ``ValueError``; the missing-file case also is a
``FileNotFoundError``) whose message names the file, what was expected, and what to do.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from immersivedepth.errors import CheckpointError, CheckpointNotFoundError

from .presets import PRESETS, Preset

__all__ = [
    "CheckpointError", "CheckpointNotFoundError", "ENV_VAR", "checkpoint_dirs", "find_checkpoint",
    "missing_checkpoint_message", "read_state_dict", "detect_variant", "check_layout",
]

ENV_VAR = "IMMERSIVEDEPTH_CHECKPOINTS"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_MAX_LISTED = 8  # keys listed per category in a layout error


# ---------------------------------------------------------------------------------------------------------
# locating files
# ---------------------------------------------------------------------------------------------------------
def checkpoint_dirs(checkpoint_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for checkpoint files, in order.

    ``checkpoint_dir`` if given; else ``$IMMERSIVEDEPTH_CHECKPOINTS`` if set; else ``./checkpoints`` and
    ``<repo>/checkpoints``.
    """
    if checkpoint_dir is not None:
        return [Path(checkpoint_dir)]
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env)]
    dirs = [Path.cwd() / "checkpoints", _REPO_ROOT / "checkpoints"]
    out: list[Path] = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def missing_checkpoint_message(preset: Preset, searched: list[Path]) -> str:
    """The message for a missing official file: what to download, from where, where to put it, alternatives."""
    where = ", ".join(str(d) for d in searched)
    note = f" Note: {preset.note}." if preset.note else ""
    return (
        f"checkpoint {preset.filename!r} for depth model '{preset.name}' not found (searched: {where}). "
        f"Download it from {preset.url} and put it into one of those directories, or point "
        f"depth.checkpoint_dir / ${ENV_VAR} at the directory that holds it.{note} Nothing is downloaded "
        f"automatically. To run without depth networks, give a reference distance map instead: "
        f"dataset.distance_path=<file> depth.source=reference."
    )


def find_checkpoint(preset: Preset | str, checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``preset``'s official file in :func:`checkpoint_dirs`; :class:`CheckpointNotFoundError` if absent."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise CheckpointError(f"unknown depth-model preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    dirs = checkpoint_dirs(checkpoint_dir)
    for d in dirs:
        for name in (preset.filename, Path(preset.filename).with_suffix(".safetensors").name):
            p = d / name
            if p.is_file():
                return p
    raise CheckpointNotFoundError(missing_checkpoint_message(preset, dirs))


# ---------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------
def _preset_by_filename(path: Path) -> Preset | None:
    for p in PRESETS.values():
        if Path(p.filename).stem == path.stem:
            return p
    return None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict (CPU), safely.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``.
    Raises :class:`CheckpointNotFoundError` if the file is missing and :class:`CheckpointError` if it is
    truncated, not a checkpoint, contains non-tensor objects, or is not a flat state dict.
    """
    path = Path(path)
    if not path.is_file():
        preset = _preset_by_filename(path)
        if preset is not None:
            raise CheckpointNotFoundError(missing_checkpoint_message(preset, [path.parent]))
        raise CheckpointNotFoundError(
            f"checkpoint file {str(path)!r} does not exist. Give the path of an official Depth Anything V2 "
            f"(depth_anything_v2_vit*.pth) or MiDaS v3.1 (dpt_*.pt) file; presets: {sorted(PRESETS)}. To run "
            f"without depth networks use dataset.distance_path=<file> depth.source=reference."
        )
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {str(path)!r} ({size} bytes) is not a readable safetensors file - it is probably "
                f"truncated or corrupt ({type(e).__name__}: {e}); download it again"
            ) from e
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains objects other than tensors and plain containers; it is not "
                f"an official state-dict file and is not unpickled for safety (weights_only=True): {e}"
            ) from e
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {str(path)!r} ({size} bytes) cannot be read - it is truncated or corrupt "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); download it again"
            ) from e
    if isinstance(obj, Mapping) and "optimizer" in obj and "model" in obj:  # MiDaS BaseModel.load convention
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict of named tensors"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a flat state dict: {len(bad)} entries are not tensors "
            f"(e.g. {[str(b) for b in bad[:_MAX_LISTED]]}); expected an official Depth Anything V2 / MiDaS file"
        )
    return dict(obj)


# ---------------------------------------------------------------------------------------------------------
# identifying and checking
# ---------------------------------------------------------------------------------------------------------
_DAV2_BY_DIM = {384: "vits", 768: "vitb", 1024: "vitl", 1536: "vitg"}
_SWIN2_BY_DIM = {96: "dpt_swin2_tiny_256", 128: "dpt_swin2_base_384", 192: "dpt_swin2_large_384"}


def _foreign(path, sd: Mapping[str, torch.Tensor], why: str) -> CheckpointError:
    keys = list(sd.keys())[:5]
    return CheckpointError(
        f"checkpoint {str(path)!r} is not a supported Depth Anything V2 or MiDaS v3.1 file: {why}. "
        f"Its first keys are {keys}. Expected an official depth_anything_v2_vit{{s,b,l,g}}.pth "
        f"(keys 'pretrained.*', 'depth_head.*') or dpt_*.pt (keys 'pretrained.model.*', 'scratch.*'); "
        f"supported presets: {sorted(PRESETS)}"
    )


def detect_variant(sd: Mapping[str, torch.Tensor], path: str | os.PathLike = "<state dict>") -> tuple[str, str]:
    """``(family, variant)`` of an official state dict, e.g. ``("dav2", "vitl")``, ``("midas", "dpt_beit_base_384")``.

    Raises :class:`CheckpointError` for foreign or unsupported files.
    """
    def shape(k):
        return tuple(sd[k].shape) if k in sd else None

    if any(k.startswith("depth_head.") for k in sd):
        pe = shape("pretrained.pos_embed")
        if pe is None or len(pe) != 3:
            raise _foreign(path, sd, "it has 'depth_head.*' keys but no 'pretrained.pos_embed' of shape (1,N,D)")
        if pe[-1] not in _DAV2_BY_DIM:
            raise _foreign(path, sd, f"Depth Anything V2 layout with unknown width {pe[-1]} "
                                     f"(known: {sorted(_DAV2_BY_DIM)})")
        return "dav2", _DAV2_BY_DIM[pe[-1]]
    if any(k.startswith("scratch.refinenet") for k in sd) and any(k.startswith("pretrained.") for k in sd):
        pm = "pretrained.model."
        proj = shape(pm + "patch_embed.proj.weight")
        if shape(pm + "blocks.0.attn.relative_position_bias_table") is not None:
            dim = proj[0] if proj else None
            if dim == 768:
                return "midas", "dpt_beit_base_384"
            if dim == 1024:
                rows = shape(pm + "blocks.0.attn.relative_position_bias_table")[0]
                by_rows = {(2 * 24 - 1) ** 2 + 3: "dpt_beit_large_384", (2 * 32 - 1) ** 2 + 3: "dpt_beit_large_512"}
                if rows in by_rows:
                    return "midas", by_rows[rows]
            raise _foreign(path, sd, f"BEiT layout with width {dim} is not one of the MiDaS v3.1 BEiT models")
        if shape(pm + "layers.0.blocks.0.attn.logit_scale") is not None:
            dim = proj[0] if proj else None
            if dim in _SWIN2_BY_DIM:
                return "midas", _SWIN2_BY_DIM[dim]
            raise _foreign(path, sd, f"Swin V2 layout with width {dim} is not one of the MiDaS v3.1 Swin V2 models")
        if shape(pm + "layers.0.blocks.0.attn.relative_position_bias_table") is not None:
            raise CheckpointError(f"checkpoint {str(path)!r} is MiDaS dpt_swin_large_384 (Swin V1), which is not "
                                  f"supported; use dpt_swin2_large_384 (preset midas_swin2_l384)")
        if shape(pm + "patch_embed.0.c.weight") is not None:
            raise CheckpointError(f"checkpoint {str(path)!r} is MiDaS dpt_levit_224 (LeViT), which is not supported "
                                  f"(no timm >= 0.9 key remap); use another MiDaS v3.1 model")
        if shape(pm + "patch_embed.backbone.stem.conv.weight") is not None:
            return "midas", "dpt_hybrid_384"
        pe = shape(pm + "pos_embed")
        if pe is not None and pe[-1] == 1024:
            return "midas", "dpt_large_384"
        raise _foreign(path, sd, "MiDaS-like layout with an unsupported backbone")
    raise _foreign(path, sd, "neither the Depth Anything V2 nor the MiDaS key layout")


def check_layout(
    got: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    path: str | os.PathLike,
    what: str,
) -> None:
    """Raise :class:`CheckpointError` unless ``got`` has exactly the keys and shapes of ``expected``.

    The message lists (up to a few of each) missing keys, unexpected keys and shape differences.
    """
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [(k, tuple(got[k]), tuple(expected[k])) for k in expected if k in got and tuple(got[k]) != tuple(
        expected[k])]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:_MAX_LISTED]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:_MAX_LISTED]})")
    if shapes:
        shown = ", ".join(f"{k}: file {g} vs expected {e}" for k, g, e in shapes[:_MAX_LISTED])
        parts.append(f"{len(shapes)} shape differences ({shown})")
    raise CheckpointError(
        f"checkpoint {str(path)!r} does not match {what}: " + "; ".join(parts)
        + ". Is the file complete and the requested variant the right one?"
    )
