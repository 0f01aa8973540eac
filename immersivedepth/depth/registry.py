"""Build the depth models named in ``depth.models``: preset names or ``_target_`` configs.

Presets defined here are the exact oracles used by tests and benchmarks (``oracle``, ``oracle_noisy``,
``oracle_warped``, ``oracle_blurred`` on the bundled synthetic ``living_room``, and ``oracle_box`` on the built-in
analytic room); they refuse any panorama that is not a rendering of their scene. Every other name
goes to ``immersivedepth.depth.models.build_preset`` (the real networks, e.g. ``dav2_vitl`` and
``midas_beit_l512``). A mapping with ``_target_`` is instantiated with Hydra, e.g.
``'depth.models=[{_target_: mypkg.MyModel, scale: 2}]'``; an optional ``name`` key names it in logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import instantiate

from immersivedepth.config import instantiate_failure, to_plain
from immersivedepth.depth.models import ENV_VAR, PRESETS, build_preset, find_checkpoint
from immersivedepth.depth.models.checkpoints import checkpoint_dirs
from immersivedepth.depth.oracle import OracleDepthModel
from immersivedepth.errors import CheckpointNotFoundError, ConfigError

__all__ = ["ORACLE_PRESETS", "DepthModelError", "available_presets", "build_depth_models"]


class DepthModelError(ConfigError):
    """A depth model entry cannot be built, or a model returned unusable output."""


ORACLE_PRESETS: dict[str, dict[str, Any]] = {
    # exact disparity up to a random per-tile affine map
    "oracle": {"noise": 0.0, "warp_amplitude": 0.0},
    # + 1% multiplicative noise
    "oracle_noisy": {"noise": 0.01, "warp_amplitude": 0.0},
    # + 1% noise and +-10% smooth warps per tile
    "oracle_warped": {"noise": 0.01, "warp_amplitude": 0.1},
    # edge-blurred (Gaussian of 2 tile pixels) + 1% noise
    "oracle_blurred": {"noise": 0.01, "blur_sigma": 2.0},
    # the analytic box room, exact up to the per-tile affine map (needs no scene module)
    "oracle_box": {"scene": "box"},
}


def available_presets() -> list[str]:
    """Every preset name that :func:`build_depth_models` accepts."""
    return sorted(set(ORACLE_PRESETS) | set(PRESETS))


def _build_preset(name: str, checkpoint_dir, device: str):
    if name in ORACLE_PRESETS:
        return OracleDepthModel(**ORACLE_PRESETS[name], name=name)
    if name not in PRESETS:
        raise DepthModelError(
            f"unknown depth model preset {name!r}; available presets: {', '.join(available_presets())} "
            "(or give a config with _target_)"
        )
    return build_preset(name, checkpoint_dir=checkpoint_dir, device=device)


def build_depth_models(entries, *, checkpoint_dir=None, device: str = "cpu") -> list[tuple[str, Any]]:
    """``entries`` (a preset name, a ``_target_`` mapping, or a list of these; OmegaConf or plain) ->
    ``[(name, model), ...]`` where each model is callable as ``model(tiles, *, K, R)``."""
    entries = to_plain(entries)
    if isinstance(entries, str | Mapping):
        entries = [entries]
    if not isinstance(entries, Sequence) or len(entries) == 0:
        raise DepthModelError(
            f"depth.models must be a non-empty list of preset names or _target_ configs, got {entries!r}; "
            f"available presets: {', '.join(available_presets())}"
        )
    # every missing checkpoint is named at once (users should not learn of the second after a 1.3 GB download)
    missing = []
    for entry in entries:
        if isinstance(entry, str) and entry in PRESETS:
            try:
                find_checkpoint(entry, checkpoint_dir)
            except CheckpointNotFoundError:
                missing.append(PRESETS[entry])
    if len(missing) > 1:
        # one entry per file, not the single-file message repeated: the runner's one line is cut at 600 characters
        where = ", ".join(str(d) for d in checkpoint_dirs(checkpoint_dir))
        files = ", ".join(p.filename for p in missing)
        urls = " ".join(p.url for p in missing)
        raise CheckpointNotFoundError(
            f"{len(missing)} depth-model checkpoints are missing: {files} (searched: {where}); download them into that "
            f"folder or point depth.checkpoint_dir / ${ENV_VAR} at the folder that holds them, or use a reference "
            f"distance (dataset.distance_path=<file> depth.source=reference); nothing is downloaded automatically: "
            f"{urls}")
    out: list[tuple[str, Any]] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        entry = to_plain(entry)
        if isinstance(entry, str):
            name, model = entry, _build_preset(entry, checkpoint_dir, device)
        elif isinstance(entry, Mapping):
            if "_target_" not in entry:
                raise DepthModelError(
                    f"depth.models[{i}] is a mapping without _target_ ({dict(entry)}); give a preset name "
                    f"({', '.join(available_presets())}) or a config with _target_"
                )
            cfg = dict(entry)
            name = str(cfg.pop("name", None) or str(cfg["_target_"]).rsplit(".", 1)[-1])
            try:
                model = instantiate(cfg)
            except Exception as exc:
                raise DepthModelError(f"depth.models[{i}]: cannot instantiate {cfg['_target_']!r} "
                                      f"({instantiate_failure(exc)}); give an importable _target_ (package installed, "
                                      "module.Class spelled right) and its keyword arguments") from exc
        else:
            raise DepthModelError(
                f"depth.models[{i}] = {entry!r} is neither a preset name nor a mapping with _target_"
            )
        if not callable(model):
            raise DepthModelError(f"depth model {name!r} is not callable as model(tiles, *, K, R)")
        base, k = name, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        out.append((name, model))
    return out
