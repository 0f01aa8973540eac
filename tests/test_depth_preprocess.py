"""Preprocessing: exact, known effects on synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from immersivedepth.depth.preprocess import (
    ClaheConfig,
    DehazeConfig,
    GaussianConfig,
    PreprocessConfig,
    clahe_luminance,
    dark_channel,
    dehaze,
    gaussian_filter,
    preprocess_image,
)


def test_gaussian_impulse_response_has_the_right_moments():
    img = np.zeros((41, 41, 3), np.float32)
    img[20, 20] = 1.0
    out = gaussian_filter(img, 2.0)
    k = out[..., 0].astype(np.float64)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    yy, xx = np.mgrid[0:41, 0:41] - 20
    assert (k * xx**2).sum() == pytest.approx(4.0, rel=1e-2)  # variance sigma^2
    assert (k * yy**2).sum() == pytest.approx(4.0, rel=1e-2)
    assert (k * xx).sum() == pytest.approx(0.0, abs=1e-6)
    const = np.full((16, 32, 3), 0.3, np.float32)
    np.testing.assert_allclose(gaussian_filter(const, 1.5, wrap=True), 0.3, atol=1e-6)


def test_gaussian_wraps_around_the_seam():
    img = np.zeros((16, 64, 3), np.float32)
    img[8, 0] = 1.0
    wrapped = gaussian_filter(img, 1.0, wrap=True)
    plain = gaussian_filter(img, 1.0, wrap=False)
    assert wrapped[8, -1, 0] == pytest.approx(wrapped[8, 1, 0], rel=1e-5)
    assert plain[8, -1, 0] == 0.0
    assert wrapped[..., 0].sum() == pytest.approx(1.0, abs=1e-5)


def test_clahe_keeps_grey_grey_and_raises_contrast():
    ramp = np.tile(np.linspace(0.4, 0.6, 128, dtype=np.float32)[None, :, None], (64, 1, 3))
    out = clahe_luminance(ramp, clip_limit=40.0, grid=1)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=2e-3)  # grey stays grey (chroma untouched)
    np.testing.assert_allclose(out[..., 1], out[..., 2], atol=2e-3)
    row = out[0, :, 0]
    assert np.all(np.diff(row) >= -1e-3)  # one contextual region: a monotone mapping (up to Lab round-off)
    assert row.max() - row.min() > 3 * (0.6 - 0.4)  # contrast stretched
    # colour: hue direction preserved (a/b unchanged) -> channel order preserved
    col = np.zeros((32, 32, 3), np.float32)
    col[..., 0] = np.linspace(0.3, 0.5, 32)[None, :]
    col[..., 1] = 0.2
    col[..., 2] = 0.1
    c = clahe_luminance(col, 2.0, 2)
    assert np.all(c[..., 0] >= c[..., 1]) and np.all(c[..., 1] >= c[..., 2] - 1e-3)
    with pytest.raises(ValueError, match="clip_limit"):
        clahe_luminance(col, 0.0, 2)


def test_dehaze_inverts_the_haze_model_exactly():
    """I = J t + A (1 - t) with a zero channel in J (dark channel 0) and a fully hazy patch (t = 0) for A."""
    rng = np.random.default_rng(0)
    h, w = 48, 64
    j = rng.uniform(0.1, 0.9, (h, w, 3)).astype(np.float32)
    j[..., 2] = 0.0  # dark channel prior holds exactly
    a = np.array([0.9, 0.85, 0.8], np.float32)
    t = np.full((h, w, 1), 0.6, np.float32)
    t[:16, :16] = 0.0  # opaque haze: I = A, the brightest dark channel
    hazy = j * t + a * (1 - t)
    out = dehaze(hazy, patch=5, omega=1.0, t_min=0.05, top_fraction=0.01)
    region = (slice(24, h), slice(24, w))  # away from the opaque patch (the min filter spreads 2 px)
    np.testing.assert_allclose(out[region], j[region], atol=1e-4)
    # with a known atmosphere the same holds
    out2 = dehaze(hazy, patch=5, omega=1.0, t_min=0.05, atmosphere=a.tolist())
    np.testing.assert_allclose(out2[region], j[region], atol=1e-4)
    assert dark_channel(j, 3).max() == 0.0
    with pytest.raises(ValueError, match="odd"):
        dark_channel(j, 4)
    with pytest.raises(ValueError, match="omega"):
        dehaze(hazy, omega=0.0)


def test_preprocess_pipeline_order_and_noop():
    img = np.random.default_rng(1).uniform(0, 1, (32, 64, 3)).astype(np.float32)
    cfg = PreprocessConfig()
    assert not cfg.any_enabled
    np.testing.assert_array_equal(preprocess_image(img, cfg), img)
    cfg = PreprocessConfig(gaussian=GaussianConfig(enabled=True, sigma=1.0), clahe=ClaheConfig(enabled=True),
                           dehaze=DehazeConfig(enabled=True, patch=3))
    expect = clahe_luminance(dehaze(gaussian_filter(img, 1.0, wrap=True), patch=3), 2.0, 8)
    np.testing.assert_allclose(preprocess_image(img, cfg), expect, atol=1e-6)
    with pytest.raises(ValueError, match="apply_to"):
        PreprocessConfig(apply_to="both")
    with pytest.raises(ValueError, match=r"RGB image \(H, W, 3\)"):
        preprocess_image(img[..., 0], cfg)
