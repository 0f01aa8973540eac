"""The field contract: what the renderer, the mesher and the frame/video code need from a radiance field.

:class:`~immersivedepth.field.model.RadianceField` implements it; tests implement it with analytic scenes (exact
geometry, no training), and a user can render any object that does.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Field"]


@runtime_checkable
class Field(Protocol):
    """Density and colour over a world box.

    Required: ``bounds`` -- ``(bmin (3,), bmax (3,))`` world tensors; ``density(x (N,3)) -> (N,)`` per world unit;
    ``color(x (N,3), d (N,3) | None) -> (N,3)`` in [0, 1].

    Optional, read with ``getattr`` where present: ``occupancy`` (an
    :class:`~immersivedepth.field.sampler.OccupancyGrid`: empty-space skipping), ``render_options`` (overrides of
    the renderer's defaults), ``background_color() -> (3,)`` (colour of rays that leave the box; a field whose
    ``directional_background`` is true is called ``background_color(dirs (N,3)) -> (N,3)`` instead: an environment
    map, content at infinity), ``unit`` and
    ``normal_eps`` (world lengths for losses and finite-difference normals).
    """

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def density(self, x: torch.Tensor) -> torch.Tensor: ...

    def color(self, x: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor: ...
