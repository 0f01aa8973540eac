"""The field contract (field/protocol.py): the trained field and the tests' analytic field both satisfy it, and the
renderer needs nothing beyond it."""

from __future__ import annotations

import torch
from test_render_support import AnalyticSceneField

from immersivedepth.field.protocol import Field
from immersivedepth.field.renderer import render_rays
from immersivedepth.train.config import build_field, resolve_config


class _Minimal:
    """Only the required members: a dense spherical shell (radius 1 to 1.5) of constant colour around the origin,
    inside a box (no occupancy grid)."""

    bounds = (torch.full((3,), -2.0), torch.full((3,), 2.0))

    def density(self, x):
        r = x.norm(dim=-1)
        return torch.where((r > 1.0) & (r < 1.5), 1e4, 0.0)

    def color(self, x, d=None):
        return torch.tensor([0.2, 0.4, 0.6]).expand(x.shape[0], 3)


def test_trained_and_analytic_fields_satisfy_the_contract():
    cfg = resolve_config({"model": {"density_grid": {"n_levels": 2, "log2_hashmap_size": 10},
                                    "color_grid": {"n_levels": 2, "log2_hashmap_size": 10}}})
    assert isinstance(build_field(cfg, -torch.ones(3), torch.ones(3), image_size=(8, 16)), Field)
    assert isinstance(AnalyticSceneField(), Field)
    assert not isinstance(object(), Field)


def test_renderer_needs_only_the_contract():
    f = _Minimal()
    assert isinstance(f, Field)
    dirs = torch.eye(3)
    out = render_rays(f, torch.zeros(3, 3), dirs, n_samples=512)
    assert torch.allclose(out["distance"], torch.ones(3), atol=0.01)  # the shell's inner surface at distance 1
    assert torch.allclose(out["rgb"], torch.tensor([0.2, 0.4, 0.6]).expand(3, 3), atol=1e-3)
