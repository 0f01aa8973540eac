"""The stage interface and the run context every stage receives.

A stage is one step of the pipeline (``depth -> train -> inpaint -> render_dense``, plus ``evaluate``): it names the
config group it reads, says which of its inputs decide whether its outputs are still valid (:meth:`Stage.fingerprint`),
which files must exist for a finished run of it to be reused (:meth:`Stage.outputs`), and does its work
(:meth:`Stage.run`). The runner (:mod:`immersivedepth.stages.runner`) only orders the stages, compares fingerprints
with ``run.json``, records status and reports; adding a stage is one module in this package (with a ``STAGE`` object)
plus one config group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig

from immersivedepth import io
from immersivedepth.config import to_plain

__all__ = ["Stage", "RunContext", "fingerprint", "file_digest", "write_json"]

LOG = logging.getLogger("immersivedepth")

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (memoised on path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (configs, digests, earlier fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json(path: Path, data: Mapping) -> None:
    with io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@dataclass
class RunContext:
    """Everything a stage needs: the resolved config, where to write, and the run record (``run.json``)."""

    cfg: DictConfig
    run_dir: Path
    image_path: Path
    device: str
    record: dict = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    lock: Any = None  # the run directory's RunLock, held while the run lasts

    @property
    def depth_dir(self) -> Path:
        return self.run_dir / "depth"

    def group(self, name: str) -> Any:
        """The plain (resolved) config group ``name``."""
        return to_plain(self.cfg[name]) if name in self.cfg else None

    def stage_record(self, stage: str) -> dict:
        return self.record.setdefault("stages", {}).get(stage, {})

    def stage_done(self, stage: str) -> bool:
        return self.stage_record(stage).get("status") == "done"

    def save_record(self) -> None:
        write_json(self.run_dir / "run.json", self.record)

    def mark(self, stage: str, fp: str | None, status: str, **info: Any) -> None:
        self.record.setdefault("stages", {})[stage] = {
            "fingerprint": fp,
            "status": status,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **info,
        }
        self.save_record()

    def field_checkpoint(self) -> Path:
        """The checkpoint of the newest field: that of the last finished stage that produces one (e.g. the
        inpainting stage's refined field), else the training stage's ``checkpoints/last.pt``."""
        for st in sorted(self.stages, key=lambda s: -s.order):
            path = st.field_checkpoint(self)
            if path is not None and self.stage_done(st.name) and st.enabled(self) and path.is_file():
                return path
        return self.run_dir / "checkpoints" / "last.pt"


class Stage:
    """One pipeline stage. Subclasses set the class attributes and implement :meth:`fingerprint` and :meth:`run`."""

    #: the mode name and the key in ``run.json``
    name: ClassVar[str]
    #: position in the pipeline (depth 10, train 20, inpaint 30, render_dense 40; evaluate 90)
    order: ClassVar[int]
    #: the config group the stage reads (None: none)
    config_group: ClassVar[str | None] = None
    #: the group's schema (a dataclass registered with Hydra's ConfigStore as ``<group>/schema``)
    config_schema: ClassVar[type | None] = None
    #: part of ``mode=all``
    in_pipeline: ClassVar[bool] = True
    #: ``mode=<name>`` runs this stage alone on an existing run (its inputs must exist) instead of the pipeline
    #: up to it
    standalone: ClassVar[bool] = False
    #: pipeline stages a standalone ``mode=<name>`` runs first (each reused when its fingerprint is unchanged)
    requires: ClassVar[tuple[str, ...]] = ()
    #: ``mode=<name>`` re-runs the stage even when its fingerprint is unchanged
    rerun_when_requested: ClassVar[bool] = False

    def enabled(self, ctx: RunContext) -> bool:
        """False: the stage is switched off by its config (the run behaves as if it did not exist)."""
        return True

    def fingerprint(self, ctx: RunContext, upstream: str | None) -> str:
        """A hash of everything that decides this stage's outputs (``upstream``: the previous stage's fingerprint)."""
        raise NotImplementedError

    def outputs(self, ctx: RunContext) -> list[Path]:
        """Files that must exist for a finished run of this stage to be reused."""
        return []

    def run(self, ctx: RunContext) -> dict:
        """Do the work; returns a JSON-able summary recorded in ``run.json``."""
        raise NotImplementedError

    def field_checkpoint(self, ctx: RunContext) -> Path | None:
        """The radiance-field checkpoint this stage produces (None: it produces none)."""
        return None
