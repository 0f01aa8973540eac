"""Temporary stand-in for ``immersivedepth.field.mlp.make_mlp`` while helper "hashgrid" writes it.

Only installed (into ``sys.modules``) when the real module cannot be imported; the package never uses it.
"""

from __future__ import annotations

import importlib
import sys
import types

from torch import nn


def _standin_make_mlp(n_in: int, n_out: int, width: int = 64, depth: int = 2, **_) -> nn.Module:
    layers, d = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def install() -> None:
    """Make ``immersivedepth.field.mlp.make_mlp`` importable (real module if present, else the stand-in)."""
    try:
        importlib.import_module("immersivedepth.field.mlp")
        return
    except ImportError:
        pass
    mod = types.ModuleType("immersivedepth.field.mlp")
    mod.make_mlp = _standin_make_mlp
    sys.modules["immersivedepth.field.mlp"] = mod


def test_standin_available():
    install()
    from immersivedepth.field.mlp import make_mlp

    import torch

    net = make_mlp(8, 3, width=16, depth=1)
    assert net(torch.zeros(5, 8)).shape == (5, 3)
