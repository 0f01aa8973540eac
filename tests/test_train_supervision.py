"""Training on a list of posed panoramas: rays from several positions, per-pixel weights, warm start, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from immersivedepth import sphere
from immersivedepth.scenes.synthetic import make_scene
from immersivedepth.train.losses import LossWeights, color_loss, distance_loss, losses
from immersivedepth.train.sampler import TrainBatch
from immersivedepth.train.supervision import PosedPanorama, SupervisionRays, supervision_digest
from immersivedepth.train.trainer import train_field


def _cfg(steps: int) -> dict:
    return {"model": {"density_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
                      "color_grid": {"n_levels": 4, "log2_hashmap_size": 12, "finest_resolution": 64},
                      "density_mlp": {"width": 16}, "color_mlp": {"width": 16}},
            "grid": {"resolution": 32, "update_every": 3, "update_start": 3},
            "optim": {"steps": steps, "batch_rays": 256, "warmup_steps": 1},
            "log": {"checkpoint_every": 2, "preview_every": 0, "tensorboard": False, "eval_stride": 2}}


@pytest.fixture(scope="module")
def two_views():
    sc = make_scene("living_room")
    a = sc.render_panorama(32, 64)
    b = sc.render_panorama(32, 64, position=(0.2, 0.0, -0.1))
    filled = np.zeros((32, 64), bool)
    filled[:, :16] = True
    return [PosedPanorama(a["rgb"].astype(np.float32), a["distance"].astype(np.float32)),
            PosedPanorama(b["rgb"].astype(np.float32), b["distance"].astype(np.float32), position=(0.2, 0.0, -0.1),
                          name="anchor0", filled=filled, filled_color_weight=0.5, filled_distance_weight=0.25)]


def test_rays_of_posed_panoramas_share_one_world(two_views):
    rays = SupervisionRays(two_views)
    second = rays.panorama == 1
    assert torch.allclose(rays.origins[second], torch.tensor([0.2, 0.0, -0.1]).expand(int(second.sum()), 3))
    assert torch.equal(rays.origins[~second], torch.zeros(int((~second).sum()), 3))
    # both panoramas see the same room: the second's back-projected points land on the surfaces the centre sees
    # (99 % of them within 2 %; with the origin ignored only 75 % would)
    pts = rays.points[second].numpy().astype(np.float64)
    r = np.linalg.norm(pts, axis=1)
    d0 = make_scene("living_room").render_panorama(128, 256)["distance"]
    seen = sphere.erp_sample_dirs(d0.astype(np.float64), pts)
    assert np.mean(np.abs(seen - r) / r < 0.02) > 0.95
    # fill weights reach only the filled pixels of the second panorama
    w = rays.color_weight
    assert set(torch.unique(w).tolist()) == {0.5, 1.0}
    assert torch.all(w[~second] == 1.0) and set(torch.unique(rays.distance_weight).tolist()) == {0.25, 1.0}
    # one panorama without fill masks keeps the plain-mean losses (and the digest earlier versions stored)
    single = SupervisionRays(two_views[:1])
    assert single.color_weight is None and single.distance_weight is None
    assert supervision_digest(two_views[:1]) != supervision_digest(two_views)


def test_observed_weight_and_exclude_leave_rays_out(two_views):
    """An anchor panorama with ``observed_weight=0`` contributes only its filled pixels; ``exclude`` drops pixels
    altogether (also from the far rays); the digest tells the variants apart."""
    a, b = two_views
    full = SupervisionRays([a, b])
    n_input = int((full.panorama == 0).sum())
    b0 = PosedPanorama(b.rgb, b.distance, position=b.position, name="anchor0", filled=b.filled,
                       filled_color_weight=0.5, filled_distance_weight=0.25, observed_weight=0.0)
    only = SupervisionRays([a, b0])
    second = only.panorama == 1
    assert int((only.panorama == 0).sum()) == n_input  # the input is untouched
    dirs_b = torch.from_numpy(sphere.erp_directions(32, 64).reshape(-1, 3)[b.filled.reshape(-1)])
    # exactly the filled pixels of the anchor that have a distance (all of them in this closed room)
    assert int(second.sum()) == int(b.filled.sum()) == dirs_b.shape[0]
    assert torch.allclose(torch.sort(only.dirs[second][:, 0]).values, torch.sort(dirs_b[:, 0].float()).values)
    assert set(torch.unique(only.color_weight[second]).tolist()) == {0.5}
    ex = np.zeros((32, 64), bool)
    ex[:, :4] = True  # inside the filled block: 4 of its 16 columns
    b1 = PosedPanorama(b.rgb, b.distance, position=b.position, name="anchor0", filled=b.filled,
                       filled_color_weight=0.5, filled_distance_weight=0.25, observed_weight=0.0, exclude=ex)
    fewer = SupervisionRays([a, b1])
    assert int((fewer.panorama == 1).sum()) == int((b.filled & ~ex).sum())
    assert len({supervision_digest([a, b]), supervision_digest([a, b0]), supervision_digest([a, b1])}) == 3
    with pytest.raises(Exception, match="exclude mask"):
        SupervisionRays([a, PosedPanorama(b.rgb, b.distance, exclude=np.zeros((4, 4), bool))])


def test_weighted_losses_reduce_to_plain_means_and_scale_by_weight():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(50, 3, generator=g), torch.rand(50, 3, generator=g)
    ones = torch.ones(50)
    assert torch.allclose(color_loss(pred, target, weight=ones), color_loss(pred, target), rtol=1e-6)
    w = torch.where(torch.arange(50) < 25, 0.0, 1.0)
    assert torch.allclose(color_loss(pred, target, weight=w),
                          ((pred[25:] - target[25:]) ** 2).sum() / (50 * 3), rtol=1e-6)
    d_pred, d_true = 1 + torch.rand(50, generator=g), 1 + torch.rand(50, generator=g)
    mask = torch.arange(50) % 2 == 0
    assert torch.allclose(distance_loss(d_pred, d_true, mask, weight=ones), distance_loss(d_pred, d_true, mask))
    # losses(): the total is the weighted sum of the terms
    b = 8
    batch = TrainBatch(idx=torch.arange(b), origins=torch.zeros(b, 3), dirs=torch.zeros(b, 3), distance=d_true[:b],
                       far=d_true[:b] + 0.1, samples=None, rgb=target[:b], color_mask=torch.ones(b, dtype=torch.bool),
                       depth_mask=torch.ones(b, dtype=torch.bool), normals=torch.zeros(b, 3), color_weight=None,
                       distance_weight=None, scale=2.0, far_origins=torch.zeros(0, 3), far_dirs=torch.zeros(0, 3),
                       far_rgb=torch.zeros(0, 3))
    k = 5
    out = {"rgb": pred[:b], "distance": d_pred[:b], "opacity": torch.full((b,), 0.75),
           "weights": torch.rand(b, k, generator=g), "t": torch.sort(torch.rand(b, k, generator=g), 1).values,
           "delta": torch.full((b, k), 0.1)}
    wts = LossWeights(color=2.0, distance=3.0, distortion=0.5, opacity=4.0, normal=0.0)
    t = losses(out, batch, wts)
    assert torch.isclose(t["opacity"], torch.tensor(0.25))
    expect = 2.0 * t["color"] + 3.0 * t["distance"] + 0.5 * t["distortion"] + 4.0 * t["opacity"]
    assert torch.isclose(t["total"], expect) and t["normal"] == 0


def test_warm_start_with_added_panorama_resumes_bit_identically(tmp_path, two_views):
    base = tmp_path / "base"
    train_field(two_views[0].rgb, two_views[0].distance, base, _cfg(4), seed=2, progress=False)
    start = torch.load(base / "checkpoints" / "last.pt", weights_only=True)["model"]
    seen = {}

    def first_step(step, metrics):
        seen.setdefault("step", step)

    # continuing with a second panorama: starts from the base field, writes its own checkpoints
    a = tmp_path / "a"
    sa = train_field(None, None, a, _cfg(6), seed=2, progress=False, supervision=two_views,
                     warm_start=base / "checkpoints" / "last.pt", callbacks=[first_step])
    assert seen["step"] == 1 and sa["steps"] == 6 and (a / "checkpoints" / "last.pt").is_file()
    assert sa["n_rays"] == 32 * 64
    end = torch.load(a / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.equal(end["bmin"], start["bmin"]) and torch.equal(end["bmax"], start["bmax"])
    assert not torch.equal(end["density_encoding.params"], start["density_encoding.params"])
    # the same continuation interrupted at step 3 and resumed gives the same field to the bit
    b = tmp_path / "b"
    train_field(None, None, b, _cfg(6), seed=2, progress=False, supervision=two_views,
                warm_start=base / "checkpoints" / "last.pt", stop_at=3)
    train_field(None, None, b, _cfg(6), seed=2, progress=False, supervision=two_views, resume=True)
    end_b = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(end[k], end_b[k]) for k in end)
