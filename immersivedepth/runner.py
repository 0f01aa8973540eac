"""Compatibility name of the runner: ``immersivedepth.runner.run(cfg)`` / ``main(cfg)`` live in
:mod:`immersivedepth.stages.runner` (the stages themselves in :mod:`immersivedepth.stages`)."""

from immersivedepth.stages.runner import main, prepare_run, resolve_device, run, scene_name_for, validate_config

__all__ = ["run", "main", "prepare_run", "resolve_device", "scene_name_for", "validate_config"]
