"""Forward-only rendering (field/inference.py): the packed path gives the padded path's images, with less work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_render_support import AnalyticSceneField

from immersivedepth import sphere
from immersivedepth.field.renderer import DEFAULT_RENDER_OPTIONS, render_rays
from immersivedepth.field.sampler import OccupancyGrid

POSITION = (0.35, 0.1, -0.25)  # off-centre: rays cross objects and walls at many angles


@pytest.fixture(scope="module")
def field():
    """The analytic living room (a sharp sigmoid of its exact SDF) with an occupancy grid seeded from its
    surfaces, as training leaves it: the grid decides where the renderer samples."""
    f = AnalyticSceneField(sigma_max=400.0, beta=0.01)
    grid = OccupancyGrid(*f.bounds, 64)
    pts, _ = f.scene.sample_surface(60_000, seed=1)
    grid.seed_from_points(torch.as_tensor(pts, dtype=torch.float32), dilation=1)
    f.occupancy = grid
    f.render_options = {"coarse_step": 0.5 * float(grid.cell_size.min())}
    return f


def _rays(h=32, w=64):
    d = torch.from_numpy(sphere.erp_directions(h, w)).reshape(-1, 3)
    o = torch.tensor(POSITION, dtype=torch.float32).expand_as(d).contiguous()
    return o, d


def _render(field, mode, **kw):
    o, d = _rays()
    with torch.no_grad():
        return render_rays(field, o, d, options={"inference": mode}, **kw)


def test_packed_inference_matches_the_padded_path(field):
    old, new = _render(field, "padded"), _render(field, "packed")
    # a ray stops once its transmittance is below min_transmittance: what it leaves unspent bounds the change
    tol = DEFAULT_RENDER_OPTIONS["min_transmittance"]
    assert float(old["opacity"].min()) > 0.99  # the room is closed: every ray hits something
    np.testing.assert_allclose(new["opacity"].numpy(), old["opacity"].numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(new["rgb"].numpy(), old["rgb"].numpy(), rtol=0, atol=2 * tol)
    far = float((field.bounds[1] - field.bounds[0]).norm())
    np.testing.assert_allclose(new["distance"].numpy(), old["distance"].numpy(), rtol=0, atol=tol * far)
    assert new["n_color"] == old["n_color"]  # colour is chosen from the same samples
    assert new["n_density"] < 0.8 * old["n_density"]  # samples behind opaque surfaces are skipped


def test_packed_inference_normals_match(field):
    old = _render(field, "padded", compute_normals=True)
    new = _render(field, "packed", compute_normals=True)
    cos = (old["normal"] * new["normal"]).sum(-1)
    assert float(cos.min()) > 1 - 1e-4
    assert float(old["normal"].norm(dim=-1).min()) > 0.99  # unit normals where every ray hits


@pytest.mark.parametrize("sub", [1, 3, 16])
def test_packed_inference_does_not_depend_on_the_sub_round_size(field, sub):
    o, d = _rays(16, 32)
    with torch.no_grad():
        ref = render_rays(field, o, d, options={"inference": "padded"})
        out = render_rays(field, o, d, options={"inference_segments": sub})
    tol = DEFAULT_RENDER_OPTIONS["min_transmittance"]
    np.testing.assert_allclose(out["rgb"].numpy(), ref["rgb"].numpy(), rtol=0, atol=2 * tol)


@pytest.mark.parametrize("color_samples", [0, 1, 2])
def test_packed_inference_colour_choice_matches(field, color_samples):
    """The running top-C colour choice of the packed path (and, with ``color_samples`` 0, every sample above the
    threshold) picks the padded path's samples."""
    o, d = _rays(16, 32)
    opts = {"color_samples": color_samples}
    with torch.no_grad():
        ref = render_rays(field, o, d, options={**opts, "inference": "padded"})
        out = render_rays(field, o, d, options=opts)
    tol = DEFAULT_RENDER_OPTIONS["min_transmittance"]
    assert out["n_color"] == ref["n_color"]
    np.testing.assert_allclose(out["rgb"].numpy(), ref["rgb"].numpy(), rtol=0, atol=2 * tol)


def test_gradients_and_sample_outputs_use_the_padded_path(field):
    o, d = _rays(8, 16)
    with torch.no_grad():
        ref = render_rays(field, o, d, options={"inference": "padded"})
        kept = render_rays(field, o, d, return_samples=True)
    grad = render_rays(field, o, d)  # autograd on: the packed path does not apply
    assert kept["n_density"] == ref["n_density"] and grad["n_density"] == ref["n_density"]
    assert torch.equal(grad["rgb"].detach(), ref["rgb"])


def test_unknown_inference_path_is_rejected(field):
    o, d = _rays(2, 4)
    with pytest.raises(ValueError, match=r"options\['inference'\] must be 'packed' or 'padded', got 'fused'"):
        with torch.no_grad():
            render_rays(field, o, d, options={"inference": "fused"})
