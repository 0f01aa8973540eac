"""Field-checkpoint load failures: one short line, never torch's multi-line "weights_only=False" hint."""

from __future__ import annotations

import pytest
import torch

from immersivedepth.train.checkpoint import CheckpointError, load_checkpoint


class Foreign:
    """Stands for any pickled object (a malicious __reduce__ would run code in an unsafe load)."""


def test_pickled_objects_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"payload": Foreign()}, path)  # a class the safe loader does not know: it refuses to build it
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and "weights_only=False" not in msg
    assert f"checkpoint {path} is corrupt or not an ImmersiveDepth field checkpoint (it holds Python objects" in msg
    assert msg.endswith("or start over with a new exp_name")


def test_garbage_reason_is_one_short_line(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 400 and "delete it" in msg
