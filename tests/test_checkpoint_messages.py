"""Field-checkpoint failures: one short line, never torch's multi-line "weights_only=False" hint, advice that matches
the overwrite rule (a run is never replaced silently: resume, a new exp_name, or is_continue=false overwrite=true),
and a failed save that says everything once."""

from __future__ import annotations

import errno
import json
import re

import pytest
import torch

from immersivedepth.errors import OutputError
from immersivedepth.train import checkpoint as ckpt
from immersivedepth.train.checkpoint import FORMAT, FRESH_START, CheckpointError, CheckpointManager, load_checkpoint
from immersivedepth.train.config import resolve_config

# a bare is_continue=false is refused over an existing last.pt (stages/train.py): advice must never stop there
BARE_FRESH_START = re.compile(r"is_continue=false(?! overwrite=true)")


class Foreign:
    """Stands for any pickled object (a malicious __reduce__ would run code in an unsafe load)."""


def _assert_real_options(msg: str) -> None:
    assert "\n" not in msg and len(msg) < 600, msg
    assert "new exp_name" in msg and "is_continue=false overwrite=true" in msg, msg
    assert not BARE_FRESH_START.search(msg) and "delete" not in msg, msg


def test_pickled_objects_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"payload": Foreign()}, path)  # a class the safe loader does not know: it refuses to build it
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and "weights_only=False" not in msg
    assert f"checkpoint {path} is corrupt or not an ImmersiveDepth field checkpoint (it holds Python objects" in msg
    assert msg.endswith(FRESH_START)
    _assert_real_options(msg)


def test_garbage_reason_is_one_short_line(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert len(msg) - len(str(path)) < 350 and "rename an older checkpoints/step_*.pt to last.pt and resume" in msg
    assert "(unreadable: Unsupported operand" in msg and "Python objects" not in msg  # garbage is not "objects"
    _assert_real_options(msg)


def test_every_unresumable_checkpoint_names_the_real_options(tmp_path):
    """Foreign format, a missing entry, another model config, other supervision: each says resume with the right
    settings (where that can work), a new exp_name, or is_continue=false overwrite=true; never a bare
    is_continue=false (which the train stage refuses over an existing checkpoint) and never 'delete it'."""
    cfg = resolve_config(None)
    good = {"format": FORMAT, "step": 3, "config": json.dumps(cfg), "model": {}, "data_digest": "abc"}
    manager = CheckpointManager(tmp_path / "checkpoints", keep=2)
    manager.folder.mkdir()
    cases = {
        "has format 'other'": {**good, "format": "other"},
        "lacks the entry 'model'": {k: v for k, v in good.items() if k != "model"},
        "different model config": {**good, "config": json.dumps(
            resolve_config({"model": {"density_mlp": {"width": 2 * cfg["model"]["density_mlp"]["width"]}}}))},
        "different panorama or distance map": {**good, "data_digest": "something else"},
    }
    for words, payload in cases.items():
        torch.save(payload, manager.last)
        with pytest.raises(CheckpointError) as info:
            manager.load_for_resume(cfg, "abc", "cpu")
        msg = str(info.value)
        assert words in msg and str(manager.last) in msg, msg
        _assert_real_options(msg)
    torch.save(good, manager.last)
    assert manager.load_for_resume(cfg, "abc", "cpu")["step"] == 3
    manager.last.unlink()
    with pytest.raises(CheckpointError) as info:
        manager.load_for_resume(cfg, "abc", "cpu")
    assert "nothing to resume" in str(info.value) and not BARE_FRESH_START.search(str(info.value))


@pytest.mark.parametrize("fault", ["folder_is_a_file", "disk_full", "torch_writer"])
def test_failed_save_says_everything_once(tmp_path, monkeypatch, fault):
    """io's OutputError already names the file, the cause, the fix and that earlier outputs are intact; the checkpoint
    manager adds the step and how to resume, without wrapping (and so repeating) that text."""
    folder = tmp_path / "run" / "checkpoints"
    if fault == "folder_is_a_file":
        (tmp_path / "run").write_text("a file where the run folder should be")
    else:
        def broken(*args, **kw):
            if fault == "disk_full":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
        monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(OutputError) as info:
        CheckpointManager(folder, keep=2).save({"format": FORMAT}, 7)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("checkpoint of step 7 not saved: cannot write "), msg
    for once in ("step_000007.pt", "intact", "device.base_exp_dir", "is_continue=true", "cannot write"):
        assert msg.count(once) == 1, (once, msg)
    assert not list(tmp_path.rglob(".tmp-*"))
