"""Typed configs: one dataclass schema per config group, built from a mapping with errors that name the key.

Every config group (``depth``, ``field``, ``render``, ``inpaint`` and the run's own keys) is a tree of dataclasses
that holds each key's type, default and documentation in one place. Hydra sees the same dataclasses through its
ConfigStore (``immersivedepth.stages.schema``), so the YAML presets in ``configs/`` are overlays that list only what
differs, and command-line overrides are type-checked. Library callers (tests, scripts, the app) pass plain dicts;
:func:`from_mapping` fills the defaults and refuses unknown keys, wrong types and -- through each dataclass's
``__post_init__`` -- out-of-range values, always naming the dotted key, e.g.
``unknown key field.optim.stepz; valid keys under field.optim: batch_rays, betas, ...``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from immersivedepth.errors import ConfigError, one_line

__all__ = ["to_plain", "from_mapping", "as_dict", "require", "positive", "non_negative", "one_of",
           "instantiate_failure"]

T = TypeVar("T")


def to_plain(cfg: Any) -> Any:
    """OmegaConf nodes -> plain, resolved Python containers; dataclass instances -> dicts; anything else unchanged.

    The one conversion every consumer uses (configs arrive as DictConfig from Hydra, as dicts from tests and scripts).
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf  # hydra-core depends on it
    except ImportError:  # pragma: no cover - only without hydra, where every config is already plain
        DictConfig = ListConfig = ()  # type: ignore[assignment]
    if DictConfig and isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return cfg


def as_dict(obj: Any) -> dict:
    """A dataclass config as a plain nested dict (what checkpoints and fingerprints store)."""
    return dataclasses.asdict(obj)


def _strip_optional(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), True
    return hint, False


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked (and, for numbers, converted) against the annotation ``hint``."""
    hint, optional = _strip_optional(hint)
    if value is None:
        if optional or hint is Any:
            return None
        raise ConfigError(f"{where} must not be null")
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of {hint.__name__} keys, got {value!r}")
        return from_mapping(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (list, Sequence, tuple):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a whole number, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return int(f)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _deep_merge(base: dict, over: Mapping) -> dict:
    """``over`` on top of ``base``, recursively for nested mappings (lists and scalars replace)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def from_mapping(cls: type[T], data: Mapping | None, where: str) -> T:
    """Build the dataclass ``cls`` from ``data`` (dict, OmegaConf node, an instance of ``cls``, None: all defaults).

    Unknown keys are a :class:`ConfigError` naming the dotted key and the valid ones; values are type-checked
    recursively (nested dataclasses, lists of dataclasses) and range-checked by the classes' ``__post_init__``; a
    check may name its key relative to its own section (``require(ok, "n_levels", ...)``), and ``where`` is put in
    front of it here, for sections that sit under several keys.
    ``where`` is the dotted path of ``data`` (e.g. ``"field"``), used in every message.
    """
    if isinstance(data, cls):
        return data
    data = to_plain(data)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"unknown key {where}.{key}; valid keys under {where}: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        hint, _ = _strip_optional(hints[k])
        if dataclasses.is_dataclass(hint) and isinstance(v, Mapping):
            # a partial section overrides the *field's* default (which may differ from the section class's own
            # defaults, e.g. the colour grid's finer resolution), not the class defaults
            default = _field_default(fields[k])
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                v = _deep_merge(dataclasses.asdict(default), v)
        kwargs[k] = _coerce(v, hints[k], f"{where}.{k}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # a section used in several places (e.g. field.model.density_grid and .color_grid) names its key relative to
        # itself ("n_levels must be > 0"): the message gets this section's dotted path, so it names the exact key
        msg = str(exc)
        if msg.split(" ", 1)[0] in fields:
            raise ConfigError(f"{where}.{msg}") from exc
        raise
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from exc


def require(ok: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("<key> <message>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} {message}")


def positive(value, key: str) -> None:
    """``value`` > 0 (counts, intervals, sizes, learning rates)."""
    require(value is not None and value > 0, key, f"must be > 0, got {value!r}")


def non_negative(value, key: str) -> None:
    require(value is not None and value >= 0, key, f"must be >= 0, got {value!r}")


def one_of(value, choices: Sequence, key: str) -> None:
    require(value in choices, key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


_HYDRA_HINT = re.compile(r",?\s*set env var HYDRA_FULL_ERROR=1 to see chained exception\.?")


def instantiate_failure(exc: BaseException, limit: int = 200) -> str:
    """Why ``hydra.utils.instantiate`` failed, on one line, without Hydra's ``HYDRA_FULL_ERROR=1`` hint (this project
    shows tracebacks with ``IMMERSIVEDEPTH_DEBUG=1``)."""
    return one_line(_HYDRA_HINT.sub("", str(exc)).strip() or type(exc).__name__, limit)
