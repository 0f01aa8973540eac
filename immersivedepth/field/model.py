"""The per-panorama radiance field: hash-grid density and colour, world units at the API.

Scene normalisation (stored in the checkpoint as the ``bmin``/``bmax`` buffers): the field's box is the
axis-aligned bounding box of the supervised surface points (every valid pixel of the distance map back-projected
from the panorama centre, ``x = distance * dir``) together with the centre itself, grown by ``scene_margin`` times
its largest extent on every side. Inside, world points map to the encodings' unit cube per axis,
``x_n = (x - bmin) / (bmax - bmin)`` (so the hash-grid cells are slightly anisotropic in a non-cubic room).
Densities are per world unit: ``sigma = trunc_exp(mlp(...) + density_bias) / unit`` with ``unit = half the
box's largest extent``, so training behaves the same whatever the scene's scale.

Layout: two hash grids (PERF's split) -- a density grid + small MLP evaluated at every sample, and a
finer colour grid + MLP evaluated only at the samples that carry compositing weight (see ``renderer.py``).
Colour is Lambertian by default; ``view_dependent: true`` feeds a degree-2 real spherical-harmonic encoding of
the view direction into the colour MLP. Rays that leave the box (or cross no surface) see the background: one
colour (learned or fixed), or ``background: env_map``, a learned environment map of direction
(:class:`~immersivedepth.field.background.EnvironmentMap`, ``env_map_width`` columns; 0 = the training panorama's
width), for panoramas whose open doors, windows or sky have no distance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import torch
from torch import nn

from immersivedepth.config import as_dict, from_mapping, non_negative, one_of, positive, require
from immersivedepth.errors import ConfigError
from immersivedepth.field.background import EnvironmentMap
from immersivedepth.field.encodings import HashGridEncoding, per_level_scale_for
from immersivedepth.field.mlp import make_mlp
from immersivedepth.field.sampler import OccupancyGrid

__all__ = ["RadianceField", "TruncExp", "trunc_exp", "sh_encoding", "scene_bounds_from_points", "FieldModelConfig",
           "HashGridConfig", "MLPConfig"]


@dataclass
class HashGridConfig:
    """A multiresolution hash grid (tinycudann semantics, see ``field/encodings.py``)."""

    n_levels: int = 12
    n_features_per_level: int = 2
    log2_hashmap_size: int = 17  # T = 2^log2_hashmap_size entries per level
    base_resolution: int = 16  # coarsest level's resolution over the scene box
    finest_resolution: int = 512  # per_level_scale = (finest/base)^(1/(n_levels-1))

    def __post_init__(self):
        # keys relative to the section: config.from_mapping names field.model.density_grid / color_grid in front
        for key in ("n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution"):
            positive(getattr(self, key), key)
        require(self.finest_resolution >= self.base_resolution, "finest_resolution",
                f"must be >= base_resolution ({self.base_resolution}), got {self.finest_resolution}")


@dataclass
class MLPConfig:
    width: int = 64  # hidden width
    depth: int = 1  # hidden layers

    def __post_init__(self):
        # keys relative to the section: config.from_mapping names field.model.density_mlp / color_mlp in front
        positive(self.width, "width")
        non_negative(self.depth, "depth")


@dataclass
class FieldModelConfig:
    """``field.model``: the keys that fix the parameter shapes (a checkpoint resumes only under identical values)."""

    # evaluated at every sample
    density_grid: HashGridConfig = dataclass_field(default_factory=HashGridConfig)
    # evaluated only at samples that carry compositing weight
    color_grid: HashGridConfig = dataclass_field(
        default_factory=lambda: HashGridConfig(n_levels=16, log2_hashmap_size=19, finest_resolution=2048))
    # output -> trunc_exp -> density per world unit
    density_mlp: MLPConfig = dataclass_field(default_factory=MLPConfig)
    # output -> sigmoid -> RGB
    color_mlp: MLPConfig = dataclass_field(default_factory=lambda: MLPConfig(width=64, depth=2))
    view_dependent: bool = False  # true: degree-2 spherical harmonics of the view direction feed the colour MLP
    density_bias: float = 0.0  # added before trunc_exp (density = exp(raw + bias) / unit)
    # what rays that leave the box see: env_map (a learned ERP texture of direction, content at infinity, initialised
    # from the panorama) | learned (one colour) | black | white | [r, g, b]
    background: Any = "env_map"
    env_map_width: int = 0  # env_map texture columns (rows = half); 0 = the training panorama's width
    scene_margin: float = 0.05  # box = bbox(supervised points + centre) grown by this x its largest extent per side
    encoding_backend: str = "auto"  # auto (tcnn on CUDA, C++ op on CPU, else torch) | torch | cpu | tcnn

    def __post_init__(self):
        non_negative(self.scene_margin, "field.model.scene_margin")
        one_of(self.encoding_backend, ("auto", "torch", "cpu", "tcnn"), "field.model.encoding_backend")
        require(self.env_map_width == 0 or (self.env_map_width >= 2 and self.env_map_width % 2 == 0),
                "field.model.env_map_width", f"must be an even number >= 2 (or 0 for the panorama's width), got "
                f"{self.env_map_width}")


class TruncExp(torch.autograd.Function):
    """``exp(x)`` whose gradient uses ``exp(min(x, clamp))`` (instant-ngp's trick against exploding gradients)."""

    @staticmethod
    def forward(ctx, x, clamp: float = 15.0):
        ctx.save_for_backward(x)
        ctx.clamp = clamp
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=ctx.clamp)), None


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """:class:`TruncExp` applied to ``x``."""
    return TruncExp.apply(x)


def sh_encoding(d: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics up to degree 2 of unit directions ``(N, 3)`` -> ``(N, 9)``."""
    x, y, z = d.unbind(-1)
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x,
        1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.31539156525252005 * (2 * z * z - x * x - y * y),
        -1.0925484305920792 * x * z, 0.5462742152960396 * (x * x - y * y),
    ], -1)


def scene_bounds_from_points(points: torch.Tensor, margin: float = 0.05, include_origin: bool = True):
    """Box ``(bmin (3,), bmax (3,))`` around ``points`` ``(P, 3)`` (and the origin), grown by ``margin`` x its
    largest extent on every side."""
    if points.ndim != 2 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise ValueError(f"scene_bounds_from_points: need (P, 3) points with P > 0, got {tuple(points.shape)}")
    pts = points.float()
    if include_origin:
        pts = torch.cat([pts, torch.zeros(1, 3, dtype=pts.dtype, device=pts.device)])
    lo, hi = pts.amin(0), pts.amax(0)
    pad = float(margin) * float((hi - lo).max().clamp_min(1e-6))
    return lo - pad, hi + pad


def _env_map_size(cfg: Mapping, image_size: Sequence[int] | None) -> tuple[int, int]:
    """``(H, W)`` of the environment map: ``env_map_width`` columns, or the training panorama's when it is 0."""
    width = int(cfg["env_map_width"])
    if width == 0:
        if image_size is None:
            raise ConfigError("field.model.env_map_width: 0 (the panorama's width) needs the training image size; "
                              "pass image_size=(H, W) or set an explicit even width")
        width = int(image_size[1])
    return width // 2, width


def _hash_grid(g: Mapping, backend: str):
    pls = per_level_scale_for(int(g["base_resolution"]), float(g["finest_resolution"]), int(g["n_levels"]))
    return HashGridEncoding(n_input_dims=3, n_levels=int(g["n_levels"]),
                            n_features_per_level=int(g["n_features_per_level"]),
                            log2_hashmap_size=int(g["log2_hashmap_size"]), base_resolution=int(g["base_resolution"]),
                            per_level_scale=pls, backend=backend)


def _mlp(n_in: int, n_out: int, m: Mapping):
    return make_mlp(n_in, n_out, width=int(m["width"]), depth=int(m["depth"]))


class RadianceField(nn.Module):
    """Density + colour field over the world box ``[bmin, bmax]``.

    Args:
        bmin, bmax: ``(3,)`` world box (see the module docstring for how training chooses it).
        model_cfg: the ``field.model`` config (:class:`FieldModelConfig` or a mapping of its keys; missing keys take
            the defaults).
        occupancy_resolution: cells along the box's longest axis of the occupancy grid (``None``: no grid).
        render_options: sampling defaults for :func:`~immersivedepth.field.renderer.render_rays`.
        image_size: ``(H, W)`` of the training panorama; sizes the environment map when
            ``background: env_map`` and ``env_map_width: 0``.

    Attributes: ``bounds`` (``(bmin, bmax)`` world tensors), ``occupancy`` (:class:`OccupancyGrid` or ``None``),
    ``unit`` (world length of one normalised unit), ``normal_eps`` (finite-difference step for normals),
    ``environment`` (:class:`EnvironmentMap` or ``None``), ``directional_background`` (the background depends on
    the ray direction: :meth:`background_color` takes directions).
    """

    def __init__(self, bmin, bmax, model_cfg: Mapping | None = None, *, occupancy_resolution: int | None = 128,
                 render_options: Mapping | None = None, image_size: Sequence[int] | None = None):
        super().__init__()
        cfg = as_dict(from_mapping(FieldModelConfig, model_cfg, "field.model"))
        self.cfg = cfg
        bmin = torch.as_tensor(bmin, dtype=torch.float32).reshape(3)
        bmax = torch.as_tensor(bmax, dtype=torch.float32).reshape(3)
        if not bool((bmax > bmin).all()):
            raise ValueError(f"RadianceField: empty box min {bmin.tolist()} max {bmax.tolist()}")
        self.register_buffer("bmin", bmin)
        self.register_buffer("bmax", bmax)
        backend = str(cfg["encoding_backend"])
        self.density_encoding = _hash_grid(cfg["density_grid"], backend)
        self.density_net = _mlp(self.density_encoding.n_output_dims, 1, cfg["density_mlp"])
        self.color_encoding = _hash_grid(cfg["color_grid"], backend)
        self.view_dependent = bool(cfg["view_dependent"])
        n_col_in = self.color_encoding.n_output_dims + (9 if self.view_dependent else 0)
        self.color_net = _mlp(n_col_in, 3, cfg["color_mlp"])
        self.density_bias = float(cfg["density_bias"])
        bg = cfg["background"]
        self.environment = None
        self.background_logit = None
        if bg == "learned":
            self.background_logit = nn.Parameter(torch.zeros(3))
        elif bg == "env_map":
            self.environment = EnvironmentMap(*_env_map_size(cfg, image_size))
        else:
            fixed = {"black": [0.0, 0.0, 0.0], "white": [1.0, 1.0, 1.0]}.get(bg, bg) if isinstance(bg, str) else bg
            if isinstance(fixed, str) or not isinstance(fixed, Sequence) or len(fixed) != 3:
                raise ConfigError(f"field.model.background must be 'learned', 'env_map', 'black', 'white' or "
                                  f"[r, g, b]; got {bg!r}")
            self.register_buffer("background_fixed", torch.tensor([float(v) for v in fixed]))
        self.occupancy = OccupancyGrid(bmin, bmax, int(occupancy_resolution)) if occupancy_resolution else None
        self.render_options = dict(render_options or {})

    # ------------------------------------------------------------------ geometry helpers
    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """World box ``(bmin (3,), bmax (3,))``."""
        return self.bmin, self.bmax

    @property
    def unit(self) -> float:
        """World length of one normalised unit (half the box's largest extent)."""
        return 0.5 * float((self.bmax - self.bmin).max())

    @property
    def normal_eps(self) -> float:
        """Central-difference step for normals: one cell of the finest density level (world units)."""
        return float((self.bmax - self.bmin).max()) / float(self.cfg["density_grid"]["finest_resolution"])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """World points ``(N, 3)`` -> the encodings' unit cube (clamped to ``[0, 1]``)."""
        return ((x - self.bmin) / (self.bmax - self.bmin)).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ heads
    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density ``(N,)`` >= 0 (per world unit) at world points ``(N, 3)``."""
        if x.shape[0] == 0:
            return x.new_zeros(0)
        h = self.density_net(self.density_encoding(self.normalize(x)))
        return trunc_exp(h[..., 0].float() + self.density_bias) / self.unit

    def color(self, x: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
        """RGB ``(N, 3)`` in [0, 1] at world points ``(N, 3)`` seen along unit directions ``d`` ``(N, 3)``
        (ignored unless the field is view dependent; ``None`` there means "no view direction": SH of +y)."""
        if x.shape[0] == 0:
            return x.new_zeros(0, 3)
        feat = self.color_encoding(self.normalize(x))
        if self.view_dependent:
            if d is None:
                d = torch.zeros_like(x)
                d[:, 1] = 1.0
            feat = torch.cat([feat, sh_encoding(d).to(feat)], -1)
        return torch.sigmoid(self.color_net(feat).float())

    def forward(self, x: torch.Tensor, d: torch.Tensor | None = None):
        """``(sigma (N,), rgb (N, 3))`` at world points ``x`` ``(N, 3)`` along directions ``d`` ``(N, 3)``."""
        return self.density(x), self.color(x, d)

    @property
    def directional_background(self) -> bool:
        """True when the background depends on the ray direction (an environment map)."""
        return self.environment is not None

    def background_color(self, dirs: torch.Tensor | None = None) -> torch.Tensor:
        """Colour of rays that leave the box without hitting anything: ``(N, 3)`` along directions ``dirs``
        ``(N, 3)`` for an environment map (which needs them), else the one ``(3,)`` colour."""
        if self.environment is not None:
            if dirs is None:
                raise ValueError("RadianceField.background_color: an environment-map background needs the ray "
                                 "directions")
            return self.environment(dirs)
        if self.background_logit is not None:
            return torch.sigmoid(self.background_logit)
        return self.background_fixed
