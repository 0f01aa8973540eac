"""Checkpoints of the radiance field: atomic save, validated load, and ``load_trained_field``.

A checkpoint is a ``torch.save`` dict of tensors and primitive types only (it loads with
``torch.load(weights_only=True)``): ``format``, ``step``, ``config`` (the resolved ``field`` config as a JSON
string), ``model`` (state dict, including the scene box and the occupancy grid), ``optimizer`` (Adam state),
``generator`` (the sampling RNG state), ``image_size``, ``wall_time``, ``metrics``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import torch

from immersivedepth import io
from immersivedepth.errors import CheckpointError, CheckpointNotFoundError, OutputError, one_line
from immersivedepth.train.config import build_field, diff_keys, model_signature, resolve_config

__all__ = ["CheckpointError", "CheckpointManager", "FORMAT", "FRESH_START", "TRAIN_COMMAND", "save_checkpoint",
           "link_checkpoint", "load_checkpoint", "check_model_config", "field_from_checkpoint", "load_trained_field",
           "checkpoint_dir"]

FORMAT = "immersivedepth.field/1"
TRAIN_COMMAND = ("python perf_runner.py --config-name nerf dataset.image_path=<image> "
                 "device.base_exp_dir=<base> mode=train")
# What to do with a checkpoint that cannot be resumed. A run is never replaced silently (RunConfig.overwrite): the
# options are a new run beside it or an explicit overwrite, never a bare is_continue=false (refused over an
# existing last.pt).
FRESH_START = ("train a new run with a new exp_name (this one is kept), or retrain in place with "
               "is_continue=false overwrite=true")


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(path, payload: dict) -> Path:
    """``torch.save`` ``payload`` to ``path`` atomically (temp file + ``os.replace``); on any failure (disk full,
    interruption) the previous file at ``path`` is left as it was and the exception propagates."""
    path = Path(path)
    with io.atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


class CheckpointManager:
    """The ``checkpoints/`` folder of a run: periodic ``step_XXXXXX.pt`` files, ``last.pt`` and their rotation.

    ``last.pt`` is a hard link of the newest periodic checkpoint (no extra space); only the newest ``keep`` periodic
    files are kept. A failed write (full or read-only disk, a path that is a file) raises :class:`OutputError` and
    leaves the previous ``last.pt`` intact.
    """

    def __init__(self, folder, keep: int):
        self.folder = Path(folder)
        self.keep = int(keep)

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    def save(self, payload: dict, step: int, *, periodic: bool = True) -> Path:
        """Write ``payload`` as step ``step`` (periodic: also ``step_XXXXXX.pt``); returns ``last.pt``'s path."""
        try:
            if periodic:
                link_checkpoint(save_checkpoint(self.folder / f"step_{step:06d}.pt", payload), self.last)
            else:
                save_checkpoint(self.last, payload)
        except OutputError as exc:
            # io already named the file, the cause, the fix and that earlier outputs are intact: add only what is new
            raise OutputError(f"checkpoint of step {step} not saved: {exc}; then resume with is_continue=true") from exc
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
            raise OutputError(f"checkpoint of step {step} not saved in {self.folder} ({one_line(exc, 200)}); the "
                              f"previous {self.last.name} is intact; free disk space or fix the folder's permissions, "
                              "then resume with is_continue=true") from exc
        olds = sorted(self.folder.glob("step_*.pt"))
        for p in olds[:-self.keep] if self.keep > 0 else []:
            p.unlink(missing_ok=True)
        return self.last

    def load_for_resume(self, cfg: dict, digest: str, map_location) -> dict:
        """The ``last.pt`` payload, checked to fit ``cfg``'s model and the supervision ``digest``.

        Raises :class:`CheckpointNotFoundError` when there is none, :class:`CheckpointError` when it is corrupt,
        foreign, from another model config or from other supervision.
        """
        path = self.last
        if not path.is_file():
            raise CheckpointNotFoundError(f"resume requested (is_continue=true) but {path} does not exist: nothing to "
                                          "resume; train from scratch (resume=False), or rename the newest "
                                          "checkpoints/step_*.pt to last.pt if there is one")
        payload = load_checkpoint(path, map_location=map_location)
        check_model_config(payload, cfg, path)
        if payload.get("data_digest") != digest:
            raise CheckpointError(f"checkpoint {path} was trained on a different panorama or distance map, so it "
                                  f"cannot be resumed on this one; {FRESH_START}")
        return payload


def link_checkpoint(src, dst) -> Path:
    """Make ``dst`` the same checkpoint as ``src`` atomically: a hard link (no copy, no extra disk space) renamed onto
    ``dst``; falls back to a copy where the filesystem has no hard links. The previous ``dst`` survives failures."""
    src, dst = Path(src), Path(dst)
    with io.atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            shutil.copyfile(src, tmp)
    return dst


# torch's refusal of pickled code starts with this; its long hint ends on "weights_only=False", which must never be
# what a user reads as the fix for a file they did not write.
_UNSAFE_PICKLE = "Weights only load failed"
_REASON_CHARS = 160


def _load_failure(exc: BaseException) -> str:
    """A short reason for a failed ``torch.load``: no multi-line torch hints."""
    text = str(exc)
    if _UNSAFE_PICKLE in text and "Unsupported global" in text:
        return "it holds Python objects that the safe loader (weights_only=True) refuses to run"
    if _UNSAFE_PICKLE in text:  # not a pickle torch can read at all (garbage, a truncated or foreign file)
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        return f"unreadable: {found.group(1).strip()[:_REASON_CHARS] if found else 'not a torch checkpoint'}"
    first = (text.strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:_REASON_CHARS]}"


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load and sanity-check a checkpoint; errors name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not an ImmersiveDepth field checkpoint ({_load_failure(exc)}); rename "
            f"an older checkpoints/step_*.pt to last.pt and resume, or {FRESH_START}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"checkpoint {path} has format {got!r}, expected {FORMAT!r}; it was not written by this "
                              f"version's trainer: {FRESH_START}")
    for key in ("step", "config", "model"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks the entry {key!r}; it is incomplete: rename an older "
                                  f"checkpoints/step_*.pt to last.pt and resume, or {FRESH_START}")
    return payload


def check_model_config(payload: dict, cfg: dict, path) -> None:
    """Raise :class:`CheckpointError` naming the differing keys if ``cfg``'s model signature differs."""
    saved = resolve_config(json.loads(payload["config"]))
    a, b = model_signature(saved), model_signature(cfg)
    keys = diff_keys(a, b)
    if keys:
        detail = ", ".join(f"field.{k}: checkpoint {a.get(k, '<missing>')!r} vs config {b.get(k, '<missing>')!r}"
                           for k in keys)
        raise CheckpointError(f"checkpoint {path} was trained with a different model config ({detail}); resume with "
                              f"the checkpoint's settings (its run's config.yaml), or {FRESH_START}")


def field_from_checkpoint(payload: dict, device="cpu", path=None):
    """Rebuild the field stored in a loaded checkpoint ``payload`` (on ``device``, eval mode)."""
    cfg = resolve_config(json.loads(payload["config"]))
    state = payload["model"]
    field = build_field(cfg, state["bmin"], state["bmax"], image_size=payload.get("image_size"))
    try:
        field.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match its own config's model: {str(exc)[:300]}") from exc
    return field.to(device).eval(), cfg


def load_trained_field(run_dir, device="cpu", path=None):
    """``(field, info)`` from ``path`` (default ``<run_dir>/checkpoints/last.pt``).

    ``info``: ``step``, ``config`` (resolved dict), ``image_size`` ``(H, W)``, ``metrics``, ``path``.
    Raises ``FileNotFoundError`` naming the run dir and the training command when there is no checkpoint.
    """
    run_dir = Path(run_dir)
    path = Path(path) if path is not None else checkpoint_dir(run_dir) / "last.pt"
    if not path.is_file():
        raise CheckpointNotFoundError(f"no trained field in {run_dir}: {path} does not exist. Train it first: "
                                f"{TRAIN_COMMAND}")
    payload = load_checkpoint(path, map_location=device)
    field, cfg = field_from_checkpoint(payload, device, path)
    info = {"step": int(payload["step"]), "config": cfg, "image_size": tuple(payload.get("image_size", ())),
            "metrics": dict(payload.get("metrics", {})), "path": str(path)}
    return field, info
