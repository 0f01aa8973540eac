"""The inpainting stage's pure pieces: holes, harmonic fill, inpainters, distance completion, visibility,
conflicts, output checks and anchors (analytic cases and the synthetic scenes)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from immersivedepth import sphere
from immersivedepth.inpaint.anchors import (
    Candidate,
    best_candidate,
    keep_in_free_space,
    path_candidates,
    ring_candidates,
)
from immersivedepth.inpaint.completion import DepthModelCompletion, LaplaceDistanceCompletion
from immersivedepth.inpaint.holes import hole_sides, label_holes
from immersivedepth.inpaint.inpainters import HarmonicInpainter, MirrorInpainter, TeleaInpainter
from immersivedepth.inpaint.laplace import harmonic_fill
from immersivedepth.inpaint.validate import InpainterOutputError, check_distance_output, check_rgb_output
from immersivedepth.inpaint.visibility import View, conflict_mask, unseen_mask
from immersivedepth.render.paths import FreeSpace
from immersivedepth.scenes.synthetic import make_scene

H, W = 64, 128
BG, FG = np.array([0.2, 0.5, 0.8]), np.array([0.9, 0.1, 0.1])
INPAINTERS = [HarmonicInpainter(), TeleaInpainter(), TeleaInpainter(method="ns"), MirrorInpainter()]


def occluder_scene(occ_cols, hole_cols, rows=slice(20, 40)):
    """Background (colour BG, 3 m) with an occluder (FG, 1 m) on ``occ_cols`` and a hole on ``hole_cols``
    right beside it: the situation of a disocclusion seen from a moved camera."""
    rgb = np.broadcast_to(BG, (H, W, 3)).copy()
    dist = np.full((H, W), 3.0)
    rgb[rows, occ_cols] = FG
    dist[rows, occ_cols] = 1.0
    mask = np.zeros((H, W), bool)
    mask[rows, hole_cols] = True
    rgb[mask] = 0.0  # whatever was rendered there is not trusted
    dist[mask] = 2.0  # a "rubber sheet" between occluder and background
    return rgb, mask, dist


# --------------------------------------------------------------------------- holes on the sphere
def test_holes_connect_across_the_seam_and_the_pole():
    m = np.zeros((H, W), bool)
    m[10:12, :3] = True
    m[10:12, -3:] = True
    assert label_holes(m)[1] == 1
    m = np.zeros((H, W), bool)
    m[0, 5] = True
    m[0, 5 + W // 2] = True  # the same ring around the zenith, half a turn away
    assert label_holes(m)[1] == 1
    m[30, 30] = True
    assert label_holes(m)[1] == 2


def test_hole_sides_pick_the_far_side():
    rgb, mask, dist = occluder_scene(slice(40, 60), slice(60, 70))
    s = hole_sides(mask, dist, depth_ratio=1.15)
    assert s.count == 1 and 1.0 < s.threshold[1] <= 3.0
    assert s.ring[25, 59] and not s.source[25, 59]  # occluder pixel next to the hole
    assert s.source[25, 70]  # background pixel on the other side


# --------------------------------------------------------------------------- harmonic fill
def test_harmonic_fill_is_linear_in_longitude_across_the_seam():
    """A latitude band with Dirichlet values 0 (left) and 1 (right) and zero-flux rows above/below: each row is a
    1-D Laplace problem, so the exact solution is linear in longitude, here across the 0/360 seam."""
    vals = np.full((H, W), 5.0)  # known but not a source: must not leak in
    mask = np.zeros((H, W), bool)
    cols = np.r_[W - 5:W, 0:5]
    mask[20:30][:, cols] = True
    src = np.zeros((H, W), bool)
    src[20:30, W - 6] = True
    src[20:30, 5] = True
    vals[20:30, W - 6] = 0.0
    vals[20:30, 5] = 1.0
    out = harmonic_fill(vals, mask, src)
    expected = np.arange(1, 11) / 11.0
    np.testing.assert_allclose(out[20:30][:, cols], np.broadcast_to(expected, (10, 10)), atol=1e-9)
    assert np.array_equal(out[~mask], vals[~mask])


def test_harmonic_fill_couples_the_pole_ring():
    """A cap around the zenith filled from a ring with values cos(lon): near the pole the fill tends to the ring's
    mean (the pole is one point), not to the value of the column above (what an image-space fill gives)."""
    lon, _ = sphere.erp_lonlat_grid(H, W)
    vals = np.cos(lon)
    mask = np.zeros((H, W), bool)
    mask[:8] = True
    out = harmonic_fill(vals, mask, ~mask)
    assert np.std(out[0]) < 0.2 * np.std(vals[8])
    assert abs(np.mean(out[0])) < 1e-6


def test_harmonic_fill_refuses_a_hole_without_sources():
    mask = np.zeros((H, W), bool)
    mask[10:12, 10:12] = True
    with pytest.raises(ValueError, match="touches no source pixel"):
        harmonic_fill(np.zeros((H, W)), mask, np.zeros((H, W), bool))


def test_holes_without_sources_take_the_orphan_value():
    mask = np.zeros((H, W), bool)
    mask[10:12, 10:12] = True
    out = harmonic_fill(np.zeros((H, W)), mask, np.zeros((H, W), bool), orphan_value=0.25)
    assert np.all(out[mask] == 0.25)
    # a hole bordered only by invalid distances still gets a colour: the mean of what is known
    rgb, _, _ = occluder_scene(slice(40, 60), slice(60, 72))
    dist = np.zeros((H, W))
    full = np.zeros((H, W), bool)
    full[:, :] = True
    full[0, 0] = False
    out = HarmonicInpainter()(rgb, full, dist)
    np.testing.assert_allclose(out[full], np.broadcast_to(rgb[0, 0], (full.sum(), 3)), atol=1e-6)


# --------------------------------------------------------------------------- inpainters
@pytest.mark.parametrize("inpainter", INPAINTERS, ids=lambda x: f"{type(x).__name__}-{getattr(x, 'flag', '')}")
@pytest.mark.parametrize("layout", ["middle", "seam"])
def test_inpainters_fill_with_the_background_not_the_occluder(inpainter, layout):
    if layout == "middle":
        occ, hole = slice(40, 60), slice(60, 72)
    else:  # the hole wraps around the seam, the occluder sits right of it
        occ, hole = slice(8, 28), np.r_[W - 6:W, 0:8]
    rgb, mask, dist = occluder_scene(occ, hole)
    out = inpainter(rgb, mask, dist)
    assert out.shape == (H, W, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[~mask], rgb[~mask].astype(np.float32))
    err = np.abs(out[mask] - BG).max()
    assert err < 0.02, f"filled colours deviate from the background by {err:.3f}"


def test_inpainters_without_an_occluder_use_every_side():
    rgb = np.broadcast_to(BG, (H, W, 3)).copy()
    rgb[:, W // 2:] = FG  # two flat colours at the same distance: no occluder edge
    dist = np.full((H, W), 2.0)
    mask = np.zeros((H, W), bool)
    mask[30:34, W // 2 - 4:W // 2 + 4] = True
    out = HarmonicInpainter()(rgb, mask, dist)
    assert out[31, W // 2 - 4][0] < out[31, W // 2 + 3][0]  # both colours flow in, each from its side


def test_mirror_inpainter_continues_texture():
    """Vertical stripes behind the hole: the reflection across the far side reproduces them (the diffusion fills
    cannot: they only interpolate the ring)."""
    _, lat = sphere.erp_lonlat_grid(H, W)
    rgb, mask, dist = occluder_scene(slice(40, 60), slice(60, 66))
    stripes = 0.5 + 0.3 * np.cos(2 * np.pi * np.arange(W) / 4.0)
    rgb[..., 0] = stripes[None, :]
    truth = rgb.copy()
    rgb[mask] = 0
    out = MirrorInpainter()(rgb, mask, dist)
    harm = HarmonicInpainter()(rgb, mask, dist)
    err_m = np.abs(out[mask][:, 0] - truth[mask][:, 0]).mean()
    err_h = np.abs(harm[mask][:, 0] - truth[mask][:, 0]).mean()
    assert err_m < 0.5 * err_h


# --------------------------------------------------------------------------- distance completion
def test_laplace_completion_continues_the_background_distance():
    rgb, mask, dist = occluder_scene(slice(40, 60), slice(60, 72))
    out = LaplaceDistanceCompletion()(rgb, mask, dist)
    np.testing.assert_allclose(out[mask], 3.0, rtol=1e-6)
    np.testing.assert_array_equal(out[~mask], dist[~mask].astype(np.float32))


def test_laplace_completion_obeys_the_maximum_principle_across_the_seam():
    """A harmonic fill never leaves the range of its boundary values; here for a hole around the 180 deg seam."""
    lon, _ = sphere.erp_lonlat_grid(H, W)
    dist = np.exp(0.3 * np.sin(lon)) * 2.0  # changes fastest at the seam
    mask = np.zeros((H, W), bool)
    mask[20:30, np.r_[W - 3:W, 0:3]] = True
    out = LaplaceDistanceCompletion()(np.zeros((H, W, 3)), mask, dist)
    ring = hole_sides(mask, dist, depth_ratio=1.15).ring
    assert ring[25, W - 4] and ring[25, 3]  # the ring wraps around the seam
    assert dist[ring].min() - 1e-6 <= out[mask].min() and out[mask].max() <= dist[ring].max() + 1e-6
    assert out[mask].max() < dist[ring].max() - 1e-3  # and is not just a copy of one side


def test_depth_model_completion_keeps_the_estimate_shape_and_the_known_scale():
    lon, lat = sphere.erp_lonlat_grid(H, W)
    truth = 3.0 + np.sin(3 * lon) * np.cos(lat)
    mask = np.zeros((H, W), bool)
    mask[20:40, 50:80] = True
    dist = np.where(mask, 1.0, truth)  # the rendered distance inside the hole is wrong
    comp = DepthModelCompletion(estimator=lambda rgb: 0.5 * truth)  # right shape, wrong scale (relative units)
    out = comp(np.zeros((H, W, 3)), mask, dist)
    np.testing.assert_allclose(out[mask], truth[mask], rtol=1e-6)


# --------------------------------------------------------------------------- visibility and conflicts
def sphere_room(radius=3.0, h=H, w=W, centre=(0.0, 0.0, 0.0), at=(0.0, 0.0, 0.0)):
    """Distance panorama at ``at`` of a spherical room of ``radius`` centred at ``centre`` (exact)."""
    d = sphere.erp_directions(h, w, np.float64)
    o = np.asarray(at, float) - np.asarray(centre, float)
    b = d @ o
    return -b + np.sqrt(b * b - (o @ o - radius**2))


def test_unseen_and_conflicts_analytic():
    views = [View(np.zeros(3), sphere_room())]
    pos = np.array([0.5, 0.0, 0.2])
    d = sphere_room(at=pos)
    assert not unseen_mask(pos, d, views, rel_tol=0.02, abs_tol=0.01).any()
    far = d * 1.3  # points outside the room the centre saw: never seen
    assert unseen_mask(pos, far, views, rel_tol=0.02, abs_tol=0.01).all()
    low = np.ones((H, W))
    low[:10] = 0.0
    assert unseen_mask(pos, d, views, rel_tol=0.02, abs_tol=0.01, opacity=low)[:10].all()
    mask = np.zeros((H, W), bool)
    mask[20:40, 30:60] = True
    near = d.copy()
    near[20:30] *= 0.6  # in front of the wall the centre saw: a conflict
    c = conflict_mask(pos, near, mask, views, rel_tol=0.02, abs_tol=0.01)
    assert c[20:30, 30:60].all() and not c[30:40].any() and not c[~mask].any()


def test_occluder_fringe_is_the_hole_side_next_to_a_nearer_surface():
    """A hole between a near occluder (left) and a far wall (right): the fringe is the ``px`` hole columns beside
    the occluder, none beside the wall; it wraps across the seam."""
    from immersivedepth.inpaint.holes import occluder_fringe

    rendered = np.full((H, W), 3.0)
    rendered[:, 10:20] = 1.0  # the occluder
    mask = np.zeros((H, W), bool)
    mask[5:25, 20:30] = True  # the hole right of the occluder
    completed = np.where(mask, 3.0, rendered)
    f = occluder_fringe(mask, rendered, completed, px=2)
    assert f[5:25, 20:22].all() and not f[:, 22:].any() and not f[~mask].any()
    assert not occluder_fringe(mask, rendered, completed, px=0).any()
    # the same layout rolled across the seam
    fr = occluder_fringe(np.roll(mask, -25, 1), np.roll(rendered, -25, 1), np.roll(completed, -25, 1), px=2)
    assert np.array_equal(fr, np.roll(f, -25, 1))


def test_anchor_radius_follows_the_median_distance():
    from immersivedepth.inpaint.config import AnchorConfig
    from immersivedepth.stages.inpaint import anchor_radius

    d = np.full((8, 16), 2.0)
    d[0] = 0.0  # no distance: ignored
    d[1] = np.nan
    assert anchor_radius(d, AnchorConfig()) == pytest.approx(1.0)  # default: half the median distance
    assert anchor_radius(d, AnchorConfig(median_fraction=0.25)) == pytest.approx(0.5)
    assert anchor_radius(d, AnchorConfig(max_radius=0.7)) == 0.7  # an explicit radius wins
    assert anchor_radius(d, AnchorConfig(median_fraction=0.0)) is None


def test_unseen_matches_ray_casting_in_the_cluttered_room():
    """The depth test against the centre panorama agrees with exact ray casting on >= 97 % of the pixels."""
    scene = make_scene("cluttered_room")
    h, w = 64, 128
    centre = scene.render_panorama(h, w)["distance"]
    pos = np.array([0.5, 0.0, 0.0])
    r = scene.render_panorama(h, w, pos)
    unseen = unseen_mask(pos, r["distance"], [View(np.zeros(3), centre)], rel_tol=0.02, abs_tol=0.01)
    pts = sphere.erp_points(pos, r["distance"]).reshape(-1, 3)
    dist = np.linalg.norm(pts, axis=1)
    hit = scene.cast(np.zeros(3), pts / dist[:, None])["distance"]
    truth_unseen = (hit < dist - 1e-3 * dist - 1e-3).reshape(h, w)
    assert (unseen == truth_unseen).mean() >= 0.97
    assert truth_unseen.mean() > 0.03  # the scene is cluttered on purpose


# --------------------------------------------------------------------------- output checks
def test_output_checks_name_inpainter_and_anchor():
    good = np.full((4, 8, 3), 0.5)
    assert check_rgb_output(good, (4, 8), name="X", anchor="a").dtype == np.float32
    with pytest.raises(InpainterOutputError, match=r"inpainter mypkg.Fill at anchor tour_003 returned shape \(4, 8\)"):
        check_rgb_output(np.zeros((4, 8)), (4, 8), name="mypkg.Fill", anchor="tour_003")
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InpainterOutputError, match="inpainter F at anchor a1 returned 1 NaN/inf values"):
        check_rgb_output(bad, (4, 8), name="F", anchor="a1")
    with pytest.raises(InpainterOutputError, match=r"values in \[0, 255\], outside \[0, 1\]"):
        check_rgb_output(good * 0 + np.r_[0, 255, 1], (4, 8), name="F", anchor="a1")
    mask = np.zeros((4, 8), bool)
    mask[1, 1] = True
    with pytest.raises(InpainterOutputError, match="distance completer C at anchor a2 returned 1 non-finite"):
        check_distance_output(np.zeros((4, 8)), (4, 8), mask, name="C", anchor="a2")


# --------------------------------------------------------------------------- anchors
def test_anchors_outside_free_space_are_skipped_by_name(caplog):
    d = np.full((H, W), 3.0)
    d[25:40, 60:68] = 1.0  # an object 1 m away, straight ahead (longitude ~0, -z)
    free = FreeSpace(d, erode_deg=0.0, margin=0.1, max_fraction=0.8)
    cands = [Candidate("ok", np.array([0.5, 0.0, 0.5])), Candidate("in_object", np.array([0.0, 0.0, -1.5])),
             Candidate("outside", np.array([0.0, 0.0, 5.0])), Candidate("too_far", np.array([1.5, 0.0, 0.0]))]
    with caplog.at_level(logging.INFO, logger="immersivedepth.inpaint"):
        kept = keep_in_free_space(cands, free, max_radius=1.0)
    assert [c.name for c in kept] == ["ok"]
    text = caplog.text
    assert "anchor in_object at [0.0, 0.0, -1.5] is inside an object or outside the room" in text
    assert "anchor outside at" in text and "1 candidate anchors farther than 1 from the centre" in text
    assert "max_radius" in text and text.rstrip().endswith("not used: too_far")


def test_path_and_ring_candidates_follow_the_free_space():
    free = FreeSpace(np.full((H, W), 3.0), erode_deg=0.0, margin=0.1, max_fraction=0.8)
    c = path_candidates([{"name": "circle", "kind": "circle", "radius_fraction": 0.5}], free, per_path=6)
    assert len(c) == 6 and c[0].name == "circle_000"
    np.testing.assert_allclose([np.linalg.norm(x.position) for x in c], 0.5 * 0.8 * 3.0, rtol=1e-3)
    rings = ring_candidates(free, [0.2, 0.6], 4)
    assert len(rings) == 8
    np.testing.assert_allclose(sorted({round(float(np.linalg.norm(x.position)), 6) for x in rings}),
                               [0.2 * 2.4, 0.6 * 2.4], rtol=1e-6)


def test_best_candidate_prefers_unseen_area_and_sees_the_views():
    """The candidate revealing most wins; once its panorama is a view, a candidate at the same place reveals
    nothing new and the next best wins; nothing above ``min_gain``: ``None``."""
    scene = make_scene("cluttered_room")
    h, w = 32, 64
    centre = View(np.zeros(3), scene.render_panorama(h, w)["distance"])

    def render(p):
        r = scene.render_panorama(h, w, p)
        return r["distance"], np.ones((h, w))

    cands = [Candidate("small", np.array([0.1, 0.0, 0.0])), Candidate("big", np.array([0.5, 0.0, 0.0])),
             Candidate("other", np.array([0.0, 0.0, 0.5]))]
    kw = {"rel_tol": 0.02, "abs_tol": 0.01, "min_opacity": 0.5}
    first, gain = best_candidate(cands, render, [centre], min_gain=1e-4, **kw)
    assert first.name in ("big", "other") and gain > 0.03
    added = View(first.position, render(first.position)[0])
    again = Candidate("again", first.position.copy())
    second, gain2 = best_candidate([again] + [c for c in cands if c is not first], render, [centre, added],
                                   min_gain=1e-4, **kw)
    assert second.name != "again" and gain2 <= gain
    assert best_candidate([again], render, [centre, added], min_gain=1e-3, **kw) is None
