"""Radiance field: sampler, renderer (analytic answers), model and losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from immersivedepth.field.model import RadianceField, scene_bounds_from_points, sh_encoding, trunc_exp
from immersivedepth.field.renderer import composite_weights, render_panorama, render_rays
from immersivedepth.field.sampler import (
    OccupancyGrid,
    band_samples,
    occupancy_samples,
    occupied_segments,
    ray_box_intersect,
    uniform_samples,
)
from immersivedepth.train.losses import distortion_loss


class SlabField(nn.Module):
    """Density ``sigma`` where ``lo <= x . axis < hi`` (world), constant colour; no occupancy grid."""

    def __init__(self, sigma, lo, hi, color=(0.2, 0.4, 0.6), axis=(1.0, 0.0, 0.0), box=10.0, bg=(1.0, 0.0, 0.0)):
        super().__init__()
        self.sigma, self.lo, self.hi = sigma, lo, hi
        self.axis = torch.tensor(axis)
        self.col = torch.tensor(color)
        self.bounds = (torch.full((3,), -box), torch.full((3,), box))
        self.occupancy = None
        self.bg = torch.tensor(bg)
        self.render_options = {"color_weight_threshold": 0.0}

    def density(self, x):
        s = x @ self.axis
        return torch.where((s >= self.lo) & (s < self.hi), torch.full_like(s, self.sigma), torch.zeros_like(s))

    def color(self, x, d=None):
        return self.col.expand(x.shape[0], 3)

    def background_color(self):
        return self.bg


def _rays(n=4, origin=(0.0, 0.0, 0.0), direction=(1.0, 0.0, 0.0)):
    o = torch.tensor(origin, dtype=torch.float32).expand(n, 3).contiguous()
    d = torch.tensor(direction, dtype=torch.float32).expand(n, 3).contiguous()
    return o, d


# ------------------------------------------------------------------------------------------------ renderer, analytic
def test_constant_slab_opacity_is_beer_lambert():
    sigma, a, b = 1.7, 1.0, 2.5
    f = SlabField(sigma, a, b)
    o, d = _rays()
    out = render_rays(f, o, d, near=0.0, far=4.0, n_samples=400)  # interval 0.01: a, b on interval edges
    expect = 1.0 - math.exp(-sigma * (b - a))
    assert torch.allclose(out["opacity"], torch.full((4,), expect), atol=1e-5)
    # colour = opacity * slab colour + (1 - opacity) * background
    rgb = expect * f.col + (1 - expect) * f.bg
    assert torch.allclose(out["rgb"], rgb.expand(4, 3), atol=1e-5)


def test_step_density_expected_distance():
    sigma, a, far = 2.0, 1.5, 4.0
    f = SlabField(sigma, a, 100.0)
    o, d = _rays(2)
    out = render_rays(f, o, d, far=far, n_samples=4000)
    # continuous answer: a + (1 - exp(-sigma (F - a))) / sigma   (background at F)
    expect = a + (1 - math.exp(-sigma * (far - a))) / sigma
    assert abs(float(out["distance"][0]) - expect) < 2e-3


def test_opaque_surface_distance_from_novel_origin():
    # a very dense slab starting at x = 3: from origin (1, 0.5, 0) along +x the surface is 2 away
    f = SlabField(1e4, 3.0, 3.5)
    o, d = _rays(3, origin=(1.0, 0.5, 0.0))
    out = render_rays(f, o, d, far=8.0, n_samples=2000)
    assert torch.allclose(out["distance"], torch.full((3,), 2.0), atol=5e-3)
    assert torch.allclose(out["opacity"], torch.ones(3), atol=1e-6)


def test_composite_weights_sum_to_opacity():
    sigma = torch.rand(5, 30) * 3
    delta = torch.rand(5, 30) * 0.1
    w = composite_weights(sigma, delta)
    assert torch.allclose(w.sum(1), 1 - torch.exp(-(sigma * delta).sum(1)), atol=1e-6)


def test_normals_from_density_gradient():
    # slab along y: surface at y = 1 seen from below -> normal points to -y (towards the viewer)
    f = SlabField(1e3, 1.0, 5.0, axis=(0.0, 1.0, 0.0))
    f.normal_eps = 1e-3
    o, d = _rays(2, direction=(0.0, 1.0, 0.0))
    d = torch.nn.functional.normalize(d + torch.tensor([0.3, 0.0, 0.0]), dim=-1)
    # smooth the step so finite differences see a gradient: density ramps over 0.01
    f.density = lambda x: 1e3 * torch.clamp((x[:, 1] - 1.0) / 0.01, 0, 1)
    out = render_rays(f, o, d, far=3.0, n_samples=1000, compute_normals=True)
    assert torch.allclose(out["normal"], torch.tensor([[0.0, -1.0, 0.0]]).expand(2, 3), atol=1e-4)


# ------------------------------------------------------------------------------------------------ samplers
def test_ray_box_intersect():
    o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t0, t1 = ray_box_intersect(o, d, torch.tensor([-1.0, -1, -1]), torch.tensor([2.0, 1, 1]))
    assert float(t0[0]) == 0.0 and abs(float(t1[0]) - 2.0) < 1e-6
    assert float(t1[1]) <= float(t0[1])  # the second ray misses


def test_uniform_and_band_samples_tile_their_range():
    t0, t1 = torch.tensor([0.5, 1.0]), torch.tensor([2.5, 1.0])
    s = uniform_samples(t0, t1, 8)
    assert torch.allclose(s.delta[0].sum(), torch.tensor(2.0))
    assert torch.allclose(s.t[0], 0.5 + (torch.arange(8) + 0.5) * 0.25)
    assert not s.valid[1].any()
    g = torch.Generator().manual_seed(0)
    b = band_samples(torch.tensor([3.0]), torch.tensor([0.2]), 10, perturb=True, generator=g)
    assert bool(((b.t >= 2.8) & (b.t <= 3.2)).all())
    edges = 2.8 + torch.arange(11) * 0.04
    assert bool(((b.t[0] >= edges[:-1] - 1e-6) & (b.t[0] <= edges[1:] + 1e-6)).all())  # one per stratum


def test_occupancy_grid_seed_query_and_update():
    g = OccupancyGrid([0.0, 0.0, 0.0], [4.0, 2.0, 2.0], resolution=8)
    assert tuple(g.mask.shape) == (8, 4, 4)
    g.seed_from_points(torch.tensor([[2.1, 1.1, 1.1]]), dilation=0)
    assert int(g.mask.sum()) == 1
    assert bool(g.query(torch.tensor([[2.2, 1.2, 1.2]]))[0])
    assert not bool(g.query(torch.tensor([[0.2, 0.2, 0.2], [9.0, 1.0, 1.0]])).any())
    g.seed_from_points(torch.tensor([[2.1, 1.1, 1.1]]), dilation=1)
    assert int(g.mask.sum()) == 27
    # density zero everywhere except x > 2.0: update keeps only those seed cells
    frac = g.update(lambda x: (x[:, 0] > 2.0).float() * 10.0, threshold=1.0, generator=torch.Generator().manual_seed(0))
    assert int(g.mask.sum()) == 18 and abs(frac - 18 / 27) < 1e-6
    assert bool((g.mask <= g.seed).all())


def test_occupancy_samples_only_in_occupied_cells():
    g = OccupancyGrid([-2.0, -2.0, -2.0], [2.0, 2.0, 2.0], resolution=8)  # cells of 0.5
    g.seed_from_points(torch.tensor([[1.2, 0.1, 0.1]]), dilation=0)  # cell x in [1.0, 1.5)
    o = torch.tensor([[0.0, 0.1, 0.1], [0.0, 1.6, 0.1], [-1.9, 0.1, 0.1]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t0, t1 = ray_box_intersect(o, d, g.bmin, g.bmax)
    s = occupancy_samples(g, o, d, t0, t1, coarse_step=0.125, max_segments=8, per_segment=2)
    x0 = (o[0, 0] + s.t[0][s.valid[0]])
    assert s.valid[0].sum() == 8 and bool(((x0 >= 1.0) & (x0 < 1.5)).all())
    assert not s.valid[1].any()  # this ray misses the cell
    x2 = (o[2, 0] + s.t[2][s.valid[2]])  # novel origin: same world positions
    assert bool(((x2 >= 1.0 - 1e-5) & (x2 < 1.5 + 1e-5)).all()) and s.valid[2].sum() >= 6
    assert torch.allclose(s.delta[0][s.valid[0]], torch.full((8,), 0.0625))


# ------------------------------------------------------------------------------------------------ losses
def _brute_distortion(w, t, delta):
    out = []
    for i in range(w.shape[0]):
        ww, tt, dd = w[i], t[i], delta[i]
        pair = (ww[:, None] * ww[None, :] * (tt[:, None] - tt[None, :]).abs()).sum()
        out.append(pair + (ww * ww * dd).sum() / 3)
    return torch.stack(out).mean()


def test_distortion_loss_matches_bruteforce():
    g = torch.Generator().manual_seed(3)
    w = torch.rand(6, 20, generator=g)
    t = torch.sort(torch.rand(6, 20, generator=g) * 5, dim=1).values
    delta = torch.rand(6, 20, generator=g) * 0.1
    w[:, 5] = 0.0  # padding anywhere is harmless
    fast = distortion_loss(w, t, delta, scale=2.0)
    slow = _brute_distortion(w, t / 2.0, delta / 2.0)
    assert torch.allclose(fast, slow, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ model
def _tiny_field(**kw):
    cfg = {"density_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
           "color_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
           "density_mlp": {"width": 16, "depth": 1}, "color_mlp": {"width": 16, "depth": 1}}
    cfg.update(kw)
    torch.manual_seed(0)
    return RadianceField([-2.0, -1.0, -3.0], [3.0, 1.5, 2.0], cfg, occupancy_resolution=16, image_size=(8, 16))


def test_radiance_field_api_shapes_and_units():
    f = _tiny_field()
    x = torch.rand(50, 3) * 2 - 1
    sigma, rgb = f(x, torch.nn.functional.normalize(torch.randn(50, 3), dim=-1))
    assert sigma.shape == (50,) and rgb.shape == (50, 3)
    assert bool((sigma >= 0).all()) and bool(((rgb >= 0) & (rgb <= 1)).all())
    assert torch.equal(f.bounds[0], torch.tensor([-2.0, -1.0, -3.0]))
    assert abs(f.unit - 2.5) < 1e-6
    xn = f.normalize(torch.tensor([[-2.0, -1.0, -3.0], [3.0, 1.5, 2.0], [0.5, 0.25, -0.5]]))
    assert torch.allclose(xn, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]))
    # density is per world unit: the raw network output is divided by `unit`
    assert torch.allclose(f.density(x), trunc_exp(f.density_net(f.density_encoding(f.normalize(x)))[:, 0]) / 2.5)


def test_view_dependence_and_background_options():
    f = _tiny_field(view_dependent=True, background="white")
    x = torch.rand(10, 3)
    assert f.color(x, None).shape == (10, 3)
    assert torch.equal(f.background_color(), torch.ones(3))
    d = torch.nn.functional.normalize(torch.randn(10, 3), dim=-1)
    sh = sh_encoding(d)
    assert sh.shape == (10, 9) and torch.allclose(sh[:, 0], torch.full((10,), 0.28209479177387814))
    with pytest.raises(ValueError, match="background must be"):
        _tiny_field(background="purple")


def test_render_rays_chunking_is_consistent_and_uses_grid():
    f = _tiny_field()
    f.occupancy.seed_from_points(torch.tensor([[1.0, 0.2, 0.3], [-1.0, 0.0, 1.0]]), dilation=1)
    o = torch.zeros(37, 3) + torch.tensor([0.1, 0.0, 0.0])
    d = torch.nn.functional.normalize(torch.randn(37, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    with torch.no_grad():
        a = render_rays(f, o, d)
        b = render_rays(f, o, d, chunk=8)
    for k in ("rgb", "distance", "opacity"):
        assert torch.allclose(a[k], b[k], atol=1e-6)
    assert a["n_density"] == b["n_density"] and a["n_density"] < 37 * 64  # empty cells skipped
    pano = render_panorama(f, 8, 16)
    assert pano["rgb"].shape == (8, 16, 3) and pano["distance"].shape == (8, 16)


def test_render_rays_rejects_bad_shapes_and_guides():
    f = _tiny_field()
    o = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"origins and dirs must both be \(N, 3\)"):
        render_rays(f, o, torch.zeros(4, 3))


def test_scene_bounds_from_points():
    lo, hi = scene_bounds_from_points(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]]), margin=0.1)
    assert torch.allclose(lo, torch.tensor([-1.4, -0.4, -0.4])) and torch.allclose(hi, torch.tensor([1.4, 2.4, 4.4]))
    with pytest.raises(ValueError, match="need \\(P, 3\\) points"):
        scene_bounds_from_points(torch.zeros(0, 3))


def test_field_density_matches_numpy_reference_of_trunc_exp_gradient():
    x = torch.tensor([0.0, 20.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([1.0, float(np.exp(15.0))]))


def test_fused_cpu_march_equals_the_torch_march(monkeypatch):
    """The C++ occupancy march (CPU float32, no jitter) returns exactly the torch version's segments, including
    rays with empty spans, rays leaving the box and rays with more occupied segments than slots."""
    from immersivedepth.field import sampler
    from immersivedepth.field._cpu_ext import load_cpu_ext

    if load_cpu_ext(warn=False) is None:
        pytest.skip("the C++ op does not build here")
    torch.manual_seed(0)
    g = OccupancyGrid(torch.tensor([-3.0, -1.5, -2.0]), torch.tensor([4.0, 2.5, 3.0]), 64)
    g.mask.copy_(torch.rand(g.mask.shape) < 0.05)
    n = 20000
    d = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    o = torch.rand(n, 3) * 2 - 1
    t0 = torch.rand(n) * 0.5
    t1 = t0 + torch.rand(n) * 8  # many rays leave the box
    t1[::7] = t0[::7]  # empty spans
    assert sampler._march_ext(False, g, o, d, t0, t1) is not None
    fused = occupied_segments(g, o, d, t0, t1, coarse_step=0.05, max_segments=16)
    monkeypatch.setattr(sampler, "_march_ext", lambda *args: None)
    ref = occupied_segments(g, o, d, t0, t1, coarse_step=0.05, max_segments=16)
    assert torch.equal(fused[0], ref[0]) and torch.equal(fused[1], ref[1])
    assert int(ref[1].sum()) > 10000 and bool(ref[1][:, -1].any())  # segments found, some rays fill every slot
    assert not ref[1][::7].any()


def _sparse_grid_and_rays(n: int):
    """A grid whose occupied cells sit in a few clusters and one plane, probed by random rays and by rays grazing
    the plane's cell face (which cell a probe falls in is decided by float rounding there)."""
    torch.manual_seed(1)
    g = OccupancyGrid(torch.tensor([-2.0, -2.0, -2.0]), torch.tensor([2.3, 2.3, 2.3]), 64)  # cell 4.3/64: inexact
    g.mask.zero_()
    for c in torch.randint(0, 60, (12, 3)):
        g.mask[c[0]:c[0] + 3, c[1]:c[1] + 2, c[2]:c[2] + 4] = True
    g.mask[:, 31, ::2] = True  # occupied cells just below the face between cells 31 and 32
    face = float(g.bmin[1] + 32 * g.cell_size[1])
    d = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    o = torch.rand(n, 3) * 2 - 1
    graze = torch.arange(0, n, 5)
    # rays along x within float rounding of that face, drifting across it: which cell a probe lands in is decided
    # by rounding
    d[graze] = torch.nn.functional.normalize(
        torch.stack([torch.ones(graze.numel()), (torch.rand(graze.numel()) - 0.5) * 4e-7,
                     torch.zeros(graze.numel())], 1), dim=-1)
    o[graze, 1] = face + (torch.rand(graze.numel()) - 0.5) * 4e-7
    o[graze, 2] = float(g.bmin[2]) + (torch.randint(0, 64, (graze.numel(),)).float() + 0.5) * float(g.cell_size[2])
    t0, t1 = torch.zeros(n), torch.full((n,), 6.0)
    return g, o, d, t0, t1


def test_fused_cpu_march_from_k_start_and_in_rounds(monkeypatch):
    """Marching on from ``k_start`` gives the torch march's segments (sparse clusters, rays grazing a cell face
    within float rounding), and ``SegmentRounds`` (lazy, a round at a time) hands out the one long march's."""
    from immersivedepth.field import sampler
    from immersivedepth.field._cpu_ext import load_cpu_ext
    from immersivedepth.field.sampler import SegmentRounds, segment_index

    if load_cpu_ext(warn=False) is None:
        pytest.skip("the C++ op does not build here")
    g, o, d, t0, t1 = _sparse_grid_and_rays(20000)
    fused = occupied_segments(g, o, d, t0, t1, coarse_step=0.03, max_segments=24)
    k0 = torch.randint(0, 60, (o.shape[0],))
    fused_k = occupied_segments(g, o, d, t0, t1, coarse_step=0.03, max_segments=8, k_start=k0, n_coarse=200)
    with monkeypatch.context() as mp:
        mp.setattr(sampler, "_march_ext", lambda *args: None)
        ref = occupied_segments(g, o, d, t0, t1, coarse_step=0.03, max_segments=24)
        ref_k = occupied_segments(g, o, d, t0, t1, coarse_step=0.03, max_segments=8, k_start=k0, n_coarse=200)
    assert torch.equal(fused[0], ref[0]) and torch.equal(fused[1], ref[1])
    assert torch.equal(fused_k[0], ref_k[0]) and torch.equal(fused_k[1], ref_k[1])
    assert int(ref[1].sum()) > 1000 and bool(ref[1][::5].any())  # grazing rays do find the line beside the face
    # marching in rounds of 8 from where each round stopped gives the one long march's segments
    full = occupied_segments(g, o, d, t0, t1, coarse_step=0.03, max_segments=24, n_coarse=200)
    rounds = SegmentRounds(g, o, d, t0, t1, coarse_step=0.03, per_round=8, max_total=24, lazy=True)
    rows = torch.arange(o.shape[0])
    for r in range(0, 24, 8):
        rows = rows[rounds.candidates(r)[rows]]
        lo, ok = rounds.round(rows, r)
        assert torch.equal(lo[ok], full[0][rows, r:r + 8][ok]) and torch.equal(ok, full[1][rows, r:r + 8])
        assert torch.equal(segment_index(lo[ok], t0[rows][:, None].expand_as(lo)[ok], 0.03),
                           torch.round((full[0][rows, r:r + 8][ok] - t0[rows][:, None].expand_as(lo)[ok]) / 0.03)
                           .long())
