"""Background model for rays that leave the known scene: environment map, compositing, config, training rays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from immersivedepth import sphere
from immersivedepth.errors import CheckpointError, ConfigError
from immersivedepth.field.background import EnvironmentMap
from immersivedepth.field.model import RadianceField
from immersivedepth.field.renderer import render_rays
from immersivedepth.train.checkpoint import check_model_config
from immersivedepth.train.config import resolve_config
from immersivedepth.train.dataset import PanoramaRays
from immersivedepth.train.sampler import far_ray_count


def _pano(h=8, w=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, (h, w, 3)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ environment map
def test_env_map_reads_the_panorama_back_at_pixel_centres():
    img = _pano()
    env = EnvironmentMap(8, 16)
    env.init_from_panorama(img)
    dirs = torch.from_numpy(sphere.erp_directions(8, 16).reshape(-1, 3))
    with torch.no_grad():
        got = env(dirs).reshape(8, 16, 3).numpy()
    np.testing.assert_allclose(got, img, atol=1e-5)


def test_env_map_wraps_longitude_and_interpolates_bilinearly():
    img = _pano()
    env = EnvironmentMap(8, 16)
    env.init_from_panorama(img)
    logits = torch.logit(torch.from_numpy(img).clamp(1e-3, 1 - 1e-3))
    # on the seam (u = W - 0.5) between the last and the first column of row 3, at its centre latitude
    lon, lat = sphere.pixel_to_lonlat(15.5, 3.0, 16, 8)
    d = sphere.lonlat_to_dir(torch.tensor([lon], dtype=torch.float64), torch.tensor([lat], dtype=torch.float64))
    want = torch.sigmoid(0.5 * (logits[3, 15] + logits[3, 0]))
    with torch.no_grad():
        assert torch.allclose(env(d.float())[0], want, atol=1e-5)
    # halfway between rows 2 and 3 of column 5
    lon, lat = sphere.pixel_to_lonlat(5.0, 2.5, 16, 8)
    d = sphere.lonlat_to_dir(torch.tensor([lon], dtype=torch.float64), torch.tensor([lat], dtype=torch.float64))
    with torch.no_grad():
        assert torch.allclose(env(d.float())[0], torch.sigmoid(0.5 * (logits[2, 5] + logits[3, 5])), atol=1e-5)


def test_env_map_init_resizes_and_rejects_bad_shapes():
    env = EnvironmentMap(4, 8)
    img = np.zeros((8, 16, 3), np.float32)
    img[:, :8] = 0.8  # left half bright
    env.init_from_panorama(img)
    with torch.no_grad():
        col = torch.sigmoid(env.logits).mean(0)
    assert torch.allclose(col[:, :4], torch.full((4, 4), 0.8), atol=1e-5)
    assert torch.allclose(col[:, 4:], torch.full((4, 4), 1e-3), atol=1e-5)  # black clipped to eps
    with pytest.raises(ValueError, match=r"need \(H, W, 3\) colours"):
        env.init_from_panorama(np.zeros((8, 16)))
    with pytest.raises(ValueError, match="W = 2H"):
        EnvironmentMap(4, 7)


def test_env_map_gradient_reaches_only_the_texels_it_reads():
    env = EnvironmentMap(8, 16)
    d = torch.from_numpy(sphere.erp_directions(8, 16)[2, 5][None])
    env(d).sum().backward()
    g = env.logits.grad.abs().sum(0)
    assert g[2, 5] > 0.7 and float(g.sum() - g[2, 5]) < 1e-5  # float32 round-off of the pixel coordinate


# ------------------------------------------------------------------------------------------------ field + renderer
def _field(**kw):
    cfg = {"density_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
           "color_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
           "density_mlp": {"width": 16, "depth": 1}, "color_mlp": {"width": 16, "depth": 1}}
    cfg.update(kw)
    torch.manual_seed(0)
    return RadianceField([-2.0, -1.0, -3.0], [3.0, 1.5, 2.0], cfg, occupancy_resolution=16, image_size=(8, 16))


def test_content_at_infinity_does_not_move_with_the_camera():
    """An empty field (density ~ 0) shows exactly env(d) from any position: the background depends on the ray
    direction only."""
    f = _field(density_bias=-40.0)
    f.environment.init_from_panorama(_pano())
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(2)), dim=-1)
    with torch.no_grad():
        want = f.environment(d)
        for pos in ((0.0, 0.0, 0.0), (1.0, 0.3, -1.5), (-1.5, -0.5, 1.0)):
            o = torch.tensor(pos).expand(64, 3).contiguous()
            out = render_rays(f, o, d, n_samples=32)
            assert torch.allclose(out["rgb"], want, atol=1e-5)
            assert float(out["opacity"].max()) < 1e-6


class SlabEnvField(nn.Module):
    """Density ``sigma`` for ``lo <= x < hi``, colour ``c``; environment map behind (directional background)."""

    directional_background = True

    def __init__(self, sigma, lo, hi, env):
        super().__init__()
        self.sigma, self.lo, self.hi, self.env = sigma, lo, hi, env
        self.bounds = (torch.full((3,), -10.0), torch.full((3,), 10.0))
        self.occupancy = None
        self.render_options = {"color_weight_threshold": 0.0, "color_samples": None}

    def density(self, x):
        s = x[:, 0]
        return torch.where((s >= self.lo) & (s < self.hi), torch.full_like(s, self.sigma), torch.zeros_like(s))

    def color(self, x, d=None):
        return torch.tensor([0.2, 0.4, 0.6]).expand(x.shape[0], 3)

    def background_color(self, dirs):
        return self.env(dirs)


def test_renderer_composites_the_environment_behind_a_semitransparent_slab():
    env = EnvironmentMap(8, 16)
    env.init_from_panorama(_pano())
    sigma, a, b = 0.7, 1.0, 2.0
    f = SlabEnvField(sigma, a, b, env)
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0.2], [1.0, -0.3, 0.0], [1.0, 0.0, -0.4]]), dim=-1)
    o = torch.zeros(3, 3)
    with torch.no_grad():
        out = render_rays(f, o, d, near=0.0, far=6.0, n_samples=3000)  # slab edges within 1 mm
        length = (b - a) / d[:, 0]  # path length inside the slab
        opacity = 1.0 - torch.exp(-sigma * length)
        want = opacity[:, None] * torch.tensor([0.2, 0.4, 0.6]) + (1 - opacity)[:, None] * env(d)
    assert torch.allclose(out["opacity"], opacity, atol=2e-3)
    assert torch.allclose(out["rgb"], want, atol=2e-3)


def test_background_options_and_their_errors():
    assert _field().directional_background
    assert not _field(background="learned").directional_background
    assert torch.equal(_field(background=[0.1, 0.2, 0.3]).background_color(), torch.tensor([0.1, 0.2, 0.3]))
    assert _field(env_map_width=32).environment.shape == (16, 32)
    assert _field().environment.shape == (8, 16)  # env_map_width 0: the training panorama's width
    with pytest.raises(ConfigError, match=r"field.model.env_map_width must be an even number >= 2.*got 7"):
        _field(env_map_width=7)
    with pytest.raises(ConfigError, match="env_map_width: 0 .* needs the training image size"):
        RadianceField([-1.0] * 3, [1.0] * 3, {"background": "env_map"}, occupancy_resolution=4)
    with pytest.raises(ConfigError, match="background must be 'learned', 'env_map'"):
        _field(background="sky")
    with pytest.raises(ValueError, match="needs the ray directions"):
        _field().background_color()


def test_checkpoint_of_another_background_is_refused_by_name():
    saved = resolve_config({"model": {"background": "learned"}})
    with pytest.raises(CheckpointError, match=r"field.model.background: checkpoint 'learned' vs config 'env_map'"):
        check_model_config({"config": json.dumps(saved)}, resolve_config({}), "last.pt")


# ------------------------------------------------------------------------------------------------ training rays
def test_pixels_without_distance_become_colour_only_far_rays():
    h, w = 16, 32
    rgb = _pano(h, w)
    dist = np.full((h, w), 2.0, np.float32)
    dist[3:6, 10:14] = 0.0  # unknown (sensor hole)
    dist[0, :] = np.inf  # far (sky)
    dist[8, 4] = np.nan
    rays = PanoramaRays(rgb, dist)
    far = ~(np.isfinite(dist) & (dist > 0))
    assert len(rays.far_rgb) == int(far.sum()) == 12 + w + 1
    assert len(rays) + len(rays.far_rgb) == h * w
    np.testing.assert_array_equal(rays.far_pixel.numpy(), np.flatnonzero(far))
    np.testing.assert_allclose(rays.far_rgb.numpy(), rgb.reshape(-1, 3)[far.reshape(-1)])
    np.testing.assert_allclose(rays.far_dirs.numpy(), sphere.erp_directions(h, w).reshape(-1, 3)[far.reshape(-1)])
    assert bool(torch.isfinite(rays.distance).all()) and bool((rays.distance > 0).all())


def test_far_ray_count_is_the_pixel_share():
    assert far_ray_count(9850, 150, 4096) == round(4096 * 150 / 10000)
    assert far_ray_count(1000, 1000, 100, weight=3.0) == 75
    assert far_ray_count(10 ** 6, 1, 4096) == 1  # a tiny hole still trains every step
    assert far_ray_count(100, 0, 4096) == 0 and far_ray_count(100, 10, 4096, weight=0.0) == 0
    assert far_ray_count(1, 10 ** 6, 64) == 63  # always at least one ray with a distance
    assert math.isclose(far_ray_count(3, 1, 4), 1)
