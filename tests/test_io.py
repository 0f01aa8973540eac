"""Tests for immersivedepth.io: real files, synthetic round trips, error messages and atomic writes."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from immersivedepth import io


def _write_raw_png(path, arr):
    """Write an array with OpenCV as-is (BGR order, any uint8/uint16 layout) -> path."""
    assert cv2.imwrite(str(path), arr)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# real panoramas in ../shared/data


def test_real_mp3d_rgb(shared_data):
    path = shared_data / "mp3d_living_rgb.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = io.read_panorama(path)
    assert img.shape == (512, 1024, 3) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(img, raw[..., ::-1].astype(np.float32) / 255.0)  # RGB order, /255


def test_real_rgba_warns_and_drops_alpha(shared_data):
    from PIL import Image

    path = shared_data / "py360convert_example.png"
    with pytest.warns(UserWarning, match=r"py360convert_example\.png has an alpha channel"):
        img = io.read_panorama(path)
    assert img.shape == (400, 800, 3)
    rgb = np.asarray(Image.open(path).convert("RGBA"))[..., :3].astype(np.float32) / 255.0
    np.testing.assert_array_equal(img, rgb)


def test_real_da2_demo_is_2to1(shared_data):
    img = io.read_panorama(shared_data / "da2_demo_a0.png")
    assert img.shape == (546, 1092, 3)


def test_real_mp3d_distance_exr(shared_data):
    path = shared_data / "mp3d_living_distance.exr"
    channels = io.read_exr(path)
    assert sorted(channels) == ["B", "G", "R"]
    np.testing.assert_array_equal(channels["R"], channels["G"])
    np.testing.assert_array_equal(channels["R"], channels["B"])
    dist = io.read_distance(path)
    assert dist.shape == (512, 1024) and dist.dtype == np.float32
    valid = dist > 0
    assert valid.mean() > 0.999 and np.isfinite(dist).all()
    assert 0.5 < dist[valid].min() and dist[valid].max() < 15.0
    assert 1.0 < np.median(dist[valid]) < 5.0  # an indoor room, metres
    # the renderer's "no hit" sentinel (1e10) is the only invalid pixel
    raw = channels["R"]
    np.testing.assert_array_equal(~valid, raw > 1e6)
    np.testing.assert_array_equal(dist[valid], raw[valid])


# ----------------------------------------------------------------------------------------------------------------------
# panorama formats (synthetic)


def test_gray_8bit_png_to_rgb(tmp_path):
    gray = np.arange(4 * 8, dtype=np.uint8).reshape(4, 8) * 7
    img = io.read_panorama(_write_raw_png(tmp_path / "g.png", gray))
    assert img.shape == (4, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray / np.float32(255))


def test_rgb_16bit_png_exact(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 65536, size=(6, 12, 3), dtype=np.uint16)
    io.write_image(tmp_path / "c16.png", rgb)
    img = io.read_panorama(tmp_path / "c16.png")
    np.testing.assert_array_equal(np.round(img * 65535).astype(np.uint16), rgb)


def test_palette_png(tmp_path):
    from PIL import Image

    palette = [(255, 0, 0), (0, 128, 0), (10, 20, 250)]
    idx = np.array([[0, 1, 2, 0, 1, 2, 0, 1]] * 4, dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([c for rgb in palette for c in rgb])
    im.save(tmp_path / "p.png")
    img = io.read_panorama(tmp_path / "p.png")
    expected = np.array(palette, dtype=np.float32)[idx] / 255.0
    np.testing.assert_allclose(img, expected, atol=1e-7)


def test_jpeg_and_tiff(tmp_path):
    rgb = np.zeros((16, 32, 3), np.float32)
    rgb[:, :16] = (1.0, 0.0, 0.0)
    rgb[:, 16:] = (0.0, 0.0, 1.0)
    io.write_image(tmp_path / "a.jpg", rgb)
    img = io.read_panorama(tmp_path / "a.jpg")
    np.testing.assert_allclose(img[4:12, 2:12], rgb[4:12, 2:12], atol=0.06)  # lossy, but red stays red
    tif16 = np.round(rgb * 65535).astype(np.uint16)
    io.write_image(tmp_path / "a.tif", tif16)
    np.testing.assert_array_equal(io.read_panorama(tmp_path / "a.tif"), rgb)


def test_exr_panorama_rgb_gray_and_linear_range(tmp_path):
    rgb = np.random.default_rng(2).random((8, 16, 3), dtype=np.float32)
    io.write_exr(tmp_path / "c.exr", rgb)
    np.testing.assert_array_equal(io.read_panorama(tmp_path / "c.exr"), rgb)

    io.write_exr(tmp_path / "y.exr", rgb[..., 0])
    np.testing.assert_array_equal(io.read_panorama(tmp_path / "y.exr"), np.repeat(rgb[..., :1], 3, axis=2))

    hdr = rgb * 4.0
    io.write_exr(tmp_path / "hdr.exr", hdr)
    with pytest.warns(UserWarning, match=r"hdr\.exr holds linear float values .* kept"):
        img = io.read_panorama(tmp_path / "hdr.exr")
    np.testing.assert_array_equal(img, hdr)  # linear values are not clipped

    rgba = np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=2)
    io.write_exr(tmp_path / "rgba.exr", rgba)
    with pytest.warns(UserWarning, match=r"rgba\.exr has an alpha channel"):
        np.testing.assert_array_equal(io.read_panorama(tmp_path / "rgba.exr"), rgb)


def test_exr_half_round_trip(tmp_path):
    data = np.linspace(0, 1, 8 * 16, dtype=np.float32).reshape(8, 16).astype(np.float16)
    io.write_exr(tmp_path / "h.exr", data)
    np.testing.assert_array_equal(io.read_exr(tmp_path / "h.exr")["Y"], data.astype(np.float32))


def test_not_2to1_raises_with_size_and_advice(tmp_path):
    path = tmp_path / "wide.png"
    io.write_image(path, np.zeros((40, 100, 3), np.float32))
    with pytest.raises(ValueError, match=r"wide\.png is 100x40 .* 2:1 .*allow_resample=True .*dataset\.allow_resample"):
        io.read_panorama(path)


@pytest.mark.parametrize("width", [100, 60])  # shrink (INTER_AREA) and grow (cubic)
def test_allow_resample_to_2to1(tmp_path, width):
    h = 40
    ramp = np.tile(((np.arange(width) + 0.5) / width)[None, :, None], (h, 1, 3)).astype(np.float32)
    io.write_image(tmp_path / "r.png", np.round(ramp * 65535).astype(np.uint16))
    with pytest.warns(UserWarning, match=rf"r\.png is {width}x{h}, not 2:1; resampled to 80x40"):
        img = io.read_panorama(tmp_path / "r.png", allow_resample=True)
    assert img.shape == (h, 2 * h, 3)
    expected = np.tile(((np.arange(2 * h) + 0.5) / (2 * h))[None, :, None], (h, 1, 3))
    # a linear ramp stays linear under resampling (away from the clamped border columns)
    np.testing.assert_allclose(img[:, 2:-2], expected[:, 2:-2], atol=2e-3)
    assert 0.0 <= img.min() and img.max() <= 1.0


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"panorama not found: .*nothere\.png"):
        io.read_panorama(tmp_path / "nothere.png")
    with pytest.raises(FileNotFoundError, match=r"distance file not found: .*nothere\.exr"):
        io.read_distance(tmp_path / "nothere.exr")


def test_corrupt_files(tmp_path):
    io.write_image(tmp_path / "ok.png", np.random.default_rng(0).random((32, 64, 3)))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("this is not an image\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.exr").write_text("not an exr either\n")
    with pytest.raises(io.ImageReadError, match=r"trunc\.png: OpenCV could not decode it"):
        io.read_panorama(tmp_path / "trunc.png")
    with pytest.raises(io.ImageReadError, match=r"text\.png.*corrupt"):
        io.read_panorama(tmp_path / "text.png")
    with pytest.raises(io.ImageReadError, match=r"empty\.jpg: the file is empty"):
        io.read_panorama(tmp_path / "empty.jpg")
    with pytest.raises(io.ImageReadError, match=r"cannot read EXR file .*text\.exr"):
        io.read_panorama(tmp_path / "text.exr")
    with pytest.raises(io.ImageReadError, match=r"text\.exr"):
        io.read_distance(tmp_path / "text.exr")
    assert issubclass(io.ImageReadError, ValueError)


# ----------------------------------------------------------------------------------------------------------------------
# distance maps


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("matterport3d", [0, 1, 4000, 10000, 65535], [0.0, 1 / 4000, 1.0, 2.5, 65535 / 4000]),
        ("stanford2d3d", [65535, 512, 1024, 1, 0], [0.0, 1.0, 2.0, 1 / 512, 0.0]),
        ("structured3d", [0, 1000, 2500, 65534, 7], [0.0, 1.0, 2.5, 65.534, 0.007]),
        ("png", [0, 1000, 2500, 65534, 7], [0.0, 1.0, 2.5, 65.534, 0.007]),
    ],
)
def test_uint16_presets_decode_exactly(tmp_path, fmt, raw, expected):
    arr = np.tile(np.array(raw, dtype=np.uint16), (3, 2))  # (3, 10)
    path = _write_raw_png(tmp_path / f"{fmt}.png", arr)
    dist = io.read_distance(path, fmt)
    assert dist.dtype == np.float32 and dist.shape == arr.shape
    np.testing.assert_array_equal(dist, np.tile(np.array(expected, dtype=np.float64), (3, 2)).astype(np.float32))


def test_pano3d_float_exr_inf_nan_negative_invalid(tmp_path):
    d = np.array([[1.5, np.inf, 3.25, -1.0], [np.nan, 0.0, 7.0, 1e10]], dtype=np.float32)
    io.write_exr(tmp_path / "d.exr", d)
    expected = np.array([[1.5, 0, 3.25, 0], [0, 0, 7.0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(io.read_distance(tmp_path / "d.exr", "pano3d"), expected)
    np.testing.assert_array_equal(io.read_distance(tmp_path / "d.exr"), expected)  # auto: same for float metres
    np.testing.assert_array_equal(io.read_distance(tmp_path / "d.exr", max_valid=1e11)[1, 3], np.float32(1e10))


def test_mapping_formats_incl_omegaconf(tmp_path):
    from omegaconf import OmegaConf

    arr = np.array([[7, 100, 2000]], dtype=np.uint16)
    path = _write_raw_png(tmp_path / "m.png", arr)
    expected = np.array([[0.0, 0.1, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(io.read_distance(path, {"scale": 0.001, "invalid": 7}), expected, rtol=1e-7)
    cfg = OmegaConf.create({"scale": 0.001, "invalid": 7})
    np.testing.assert_allclose(io.read_distance(path, cfg), expected, rtol=1e-7)
    np.testing.assert_allclose(io.read_distance(path, {"scale": 0.001, "invalid": None})[0, 0], 0.007, rtol=1e-6)
    with pytest.raises(ValueError, match=r"m\.png must have exactly the keys 'scale' and 'invalid'"):
        io.read_distance(path, {"scale": 0.001})


def test_multichannel_distance(tmp_path):
    d = np.random.default_rng(3).uniform(0.5, 9.0, (5, 10)).astype(np.float32)
    np.save(tmp_path / "eq.npy", np.stack([d, d, d], axis=-1))
    np.testing.assert_array_equal(io.read_distance(tmp_path / "eq.npy"), d)
    io.write_exr(tmp_path / "eq.exr", np.stack([d, d, d], axis=-1))
    np.testing.assert_array_equal(io.read_distance(tmp_path / "eq.exr"), d)
    np.save(tmp_path / "neq.npy", np.stack([d, d + 1, d], axis=-1))
    with pytest.raises(io.ImageReadError, match=r"neq\.npy has shape \(5, 10, 3\): 3 different channels"):
        io.read_distance(tmp_path / "neq.npy")


def test_distance_format_errors(tmp_path):
    u16 = _write_raw_png(tmp_path / "d16.png", np.full((4, 8), 1000, np.uint16))
    with pytest.raises(ValueError, match=r"scale of the integer distance image .*d16\.png.*dataset\.distance_format"):
        io.read_distance(u16)
    with pytest.raises(ValueError, match=r"distance_format='mp3d' is not a distance format.*valid names: auto, npy"):
        io.read_distance(u16, "mp3d")
    # wrong dtype for the chosen format
    np.save(tmp_path / "f.npy", np.ones((4, 8), np.float32))
    with pytest.raises(ValueError, match=r"'matterport3d' expects a 16-bit integer image but .*f\.npy holds float32"):
        io.read_distance(tmp_path / "f.npy", "matterport3d")
    u8 = _write_raw_png(tmp_path / "d8.png", np.full((4, 8), 10, np.uint8))
    with pytest.raises(ValueError, match=r"'stanford2d3d' expects a 16-bit integer image but .*d8\.png holds uint8"):
        io.read_distance(u8, "stanford2d3d")
    np.save(tmp_path / "i.npy", np.ones((4, 8), np.uint16))
    with pytest.raises(ValueError, match=r"'npy' expects float metres but .*i\.npy holds uint16"):
        io.read_distance(tmp_path / "i.npy", "npy")
    with pytest.raises(ValueError, match=r"i\.npy holds integers \(uint16\) whose scale is unknown"):
        io.read_distance(tmp_path / "i.npy")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"cannot tell the format of distance file .*d\.txt"):
        io.read_distance(tmp_path / "d.txt")


def test_find_distance_beside(tmp_path):
    img = tmp_path / "room.png"
    img.touch()
    assert io.find_distance_beside(img) is None
    np.save(tmp_path / "room_distance.npy", np.ones((2, 4), np.float32))
    assert io.find_distance_beside(img) == tmp_path / "room_distance.npy"
    io.write_exr(tmp_path / "room_distance.exr", np.ones((2, 4), np.float32))
    assert io.find_distance_beside(img) == tmp_path / "room_distance.exr"  # exr first
    assert io.find_distance_beside(tmp_path / "other.png") is None


def test_write_distance_round_trips(tmp_path):
    d = np.random.default_rng(4).uniform(0.5, 9.0, (6, 12)).astype(np.float32)
    d[0, :3] = 0.0
    io.write_distance(tmp_path / "d.npy", d)
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), d)
    np.testing.assert_array_equal(io.read_distance(tmp_path / "d.npy"), d)
    io.write_distance(tmp_path / "d.exr", d)
    assert sorted(io.read_exr(tmp_path / "d.exr")) == ["Y"]
    np.testing.assert_array_equal(io.read_distance(tmp_path / "d.exr"), d)
    io.write_distance(tmp_path / "d.png", d)
    preview = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert preview.shape == (6, 12, 3) and preview.dtype == np.uint8
    assert (preview[0, :3] == 0).all() and (preview[1:].max(axis=2) > 0).all()  # invalid black, valid coloured
    with pytest.raises(ValueError, match=r"d\.tiff: unknown suffix '\.tiff'; use \.npy, \.exr or \.png"):
        io.write_distance(tmp_path / "d.tiff", d)
    with pytest.raises(ValueError, match=r"expected \(H,W\)"):
        io.write_distance(tmp_path / "d.npy", d[None])


# ----------------------------------------------------------------------------------------------------------------------
# images and colour maps


def test_write_image_round_trips(tmp_path):
    rgb = np.random.default_rng(5).random((8, 16, 3)).astype(np.float32)
    io.write_image(tmp_path / "a.png", rgb)
    np.testing.assert_allclose(io.read_panorama(tmp_path / "a.png"), rgb, atol=0.5 / 255 + 1e-7)
    u8 = (rgb * 255).astype(np.uint8)
    io.write_image(tmp_path / "u8.png", u8)
    np.testing.assert_array_equal(io.read_panorama(tmp_path / "u8.png"), u8 / np.float32(255))
    rgba = np.concatenate([u8, np.full((8, 16, 1), 77, np.uint8)], axis=2)
    io.write_image(tmp_path / "rgba.png", rgba)
    back = cv2.imread(str(tmp_path / "rgba.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA), rgba)
    io.write_image(tmp_path / "g.png", rgb[..., 0])
    assert cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED).shape == (8, 16)


def test_write_image_errors(tmp_path):
    with pytest.raises(ValueError, match=r"16-bit image .*x\.jpg: use a \.png or \.tif"):
        io.write_image(tmp_path / "x.jpg", np.zeros((4, 8, 3), np.uint16))
    with pytest.raises(ValueError, match=r"x\.png: dtype int32; use float in \[0, 1\], uint8 or uint16"):
        io.write_image(tmp_path / "x.png", np.zeros((4, 8, 3), np.int32))
    with pytest.raises(ValueError, match=r"x\.png: shape \(4, 8, 2\)"):
        io.write_image(tmp_path / "x.png", np.zeros((4, 8, 2), np.float32))
    with pytest.raises(ValueError, match=r"RGBA image .*x\.jpg: JPEG has no alpha"):
        io.write_image(tmp_path / "x.jpg", np.zeros((4, 8, 4), np.float32))
    with pytest.raises(ValueError, match=r"x\.qqq: OpenCV cannot encode '\.qqq'"):
        io.write_image(tmp_path / "x.qqq", np.zeros((4, 8, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def _turbo_rgb(level: int) -> np.ndarray:
    return cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_TURBO)[0, 0, ::-1]


def test_colorize_range_order_and_invalid():
    values = np.linspace(1.0, 2.0, 101)[None, :].repeat(2, axis=0)
    out = io.colorize(values, vmin=1.0, vmax=2.0)
    assert out.shape == (2, 101, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], _turbo_rgb(0))
    np.testing.assert_array_equal(out[0, 50], _turbo_rgb(128))  # round(0.5*255)
    np.testing.assert_array_equal(out[0, -1], _turbo_rgb(255))
    assert out[0, -1, 0] > out[0, -1, 2] and out[0, 0, 2] > out[0, 0, 0]  # RGB order: far red, near blue
    # invalid pixels (mask, NaN) are black; a few huge outliers do not stretch the robust default range
    v = values.copy()
    v[0, 0] = np.nan
    v[1, :2] = 1e6
    valid = np.ones_like(v, bool)
    valid[1, 5] = False
    out = io.colorize(v, valid=valid)
    assert (out[0, 0] == 0).all() and (out[1, 5] == 0).all()
    lo, hi = np.percentile(v[np.isfinite(v) & valid], [2, 98])
    assert hi < 2.0 + 1e-9
    t = np.clip((v[0, 30] - lo) / (hi - lo), 0, 1)
    np.testing.assert_array_equal(out[0, 30], _turbo_rgb(int(np.round(t * 255))))
    assert (io.colorize(np.full((2, 2), np.nan)) == 0).all()


def test_colorize_log_and_errors():
    out = io.colorize(np.array([[1.0, 10.0, 100.0, 0.0]]), log=True, vmin=1.0, vmax=100.0)
    for j, level in enumerate([0, 128, 255]):
        np.testing.assert_array_equal(out[0, j], _turbo_rgb(level))
    assert (out[0, 3] == 0).all()  # log of 0 is invalid -> black
    with pytest.raises(ValueError, match=r"unknown colormap 'nope'; valid names: .*turbo"):
        io.colorize(np.ones((2, 2)), cmap="nope")
    with pytest.raises(ValueError, match=r"log=True\) needs vmin, vmax > 0"):
        io.colorize(np.ones((2, 2)), log=True, vmin=0.0)
    with pytest.raises(ValueError, match=r"expects a \(H,W\) map"):
        io.colorize(np.ones((2, 2, 3)))


# ----------------------------------------------------------------------------------------------------------------------
# point clouds and meshes


def _tetra():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    c = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)
    n = v - v.mean(axis=0)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return v, f, c, n


def test_ply_round_trip_read_ply_and_trimesh(tmp_path):
    import trimesh

    v, f, c, n = _tetra()
    io.write_ply(tmp_path / "t.ply", v, colors=c, normals=n, faces=f)
    raw = (tmp_path / "t.ply").read_bytes()
    assert raw.startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert b"property float nx" in raw and b"property uchar red" in raw
    assert b"property list uchar int vertex_indices" in raw
    back = io.read_ply(tmp_path / "t.ply")
    np.testing.assert_array_equal(back["points"], v)
    np.testing.assert_array_equal(back["normals"], n)
    np.testing.assert_array_equal(back["colors"], (c * 255).astype(np.uint8))
    np.testing.assert_array_equal(back["faces"], f)
    mesh = trimesh.load(tmp_path / "t.ply", process=False)
    np.testing.assert_allclose(mesh.vertices, v)
    np.testing.assert_array_equal(mesh.faces, f)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], (c * 255).astype(np.uint8))


def test_ply_points_only_and_uint8_colors(tmp_path):
    import trimesh

    pts = np.random.default_rng(6).normal(size=(50, 3)).astype(np.float32)
    cols = np.random.default_rng(7).integers(0, 256, (50, 3), dtype=np.uint8)
    io.write_ply(tmp_path / "p.ply", pts, colors=cols)
    back = io.read_ply(tmp_path / "p.ply")
    np.testing.assert_array_equal(back["points"], pts)
    np.testing.assert_array_equal(back["colors"], cols)
    assert back["normals"] is None and back["faces"] is None
    cloud = trimesh.load(tmp_path / "p.ply", process=False)
    np.testing.assert_allclose(cloud.vertices, pts)
    np.testing.assert_array_equal(cloud.colors[:, :3], cols)
    # read_ply also reads trimesh's own binary PLY
    v, f, _, _ = _tetra()
    (tmp_path / "tm.ply").write_bytes(trimesh.Trimesh(v, f, process=False).export(file_type="ply"))
    other = io.read_ply(tmp_path / "tm.ply")
    np.testing.assert_allclose(other["points"], v)
    np.testing.assert_array_equal(other["faces"], f)


def test_ply_errors(tmp_path):
    v, f, c, _ = _tetra()
    with pytest.raises(ValueError, match=r"bad\.ply: points have shape \(4, 2\)"):
        io.write_ply(tmp_path / "bad.ply", v[:, :2])
    with pytest.raises(ValueError, match=r"bad\.ply: faces must be \(M, 3\) indices in \[0, 4\)"):
        io.write_ply(tmp_path / "bad.ply", v, faces=f + 1)
    with pytest.raises(ValueError, match=r"bad\.ply: colors have shape \(3, 3\)"):
        io.write_ply(tmp_path / "bad.ply", v, colors=c[:3])
    (tmp_path / "x.ply").write_text("not a ply")
    with pytest.raises(io.ImageReadError, match=r"x\.ply is not a PLY file"):
        io.read_ply(tmp_path / "x.ply")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ply"]


@pytest.mark.parametrize("suffix", [".glb", ".ply", ".obj"])
def test_write_mesh_round_trip_with_vertex_colors(tmp_path, suffix):
    import trimesh

    v, f, c, n = _tetra()
    path = tmp_path / f"mesh{suffix}"
    io.write_mesh(path, v, f, vertex_colors=c, vertex_normals=n)
    mesh = trimesh.load(path, force="mesh", process=False)
    assert len(mesh.vertices) == 4 and len(mesh.faces) == 4
    np.testing.assert_allclose(mesh.vertices, v, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, f)
    assert mesh.visual.kind == "vertex"
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], (c * 255).astype(np.uint8))
    if suffix == ".obj":  # plain-text "v x y z r g b" lines, as MeshLab and Blender read them
        first_v = next(line for line in path.read_text().splitlines() if line.startswith("v "))
        assert len(first_v.split()) == 7


def test_write_mesh_unknown_suffix(tmp_path):
    v, f, _, _ = _tetra()
    with pytest.raises(ValueError, match=r"mesh\.stl: unknown suffix '\.stl'; use \.glb, \.ply or \.obj"):
        io.write_mesh(tmp_path / "mesh.stl", v, f)


# ----------------------------------------------------------------------------------------------------------------------
# video


def _frames(n, h, w):
    frames = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.float32)
        f[..., i % 3] = 1.0  # red, green, blue, ...
        frames.append(f)
    return frames


def test_video_odd_size_padded(tmp_path):
    import imageio.v2 as imageio

    path = tmp_path / "out" / "v.mp4"
    with io.VideoWriter(path, fps=10) as vw:
        for f in _frames(5, 17, 33):
            vw.write(f)
    assert sorted(p.name for p in path.parent.iterdir()) == ["v.mp4"]
    assert io.read_video_info(path) == (5, 18, 34, 10.0)
    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        first = reader.get_data(0).astype(np.float32) / 255
    assert first.shape == (18, 34, 3)
    np.testing.assert_allclose(first[4:14, 4:30].mean(axis=(0, 1)), [1, 0, 0], atol=0.1)  # red stays red (RGB)


def test_video_exception_leaves_nothing_and_keeps_old(tmp_path):
    path = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError, match="boom"), io.VideoWriter(path, fps=5) as vw:
        assert vw.partial_path == tmp_path / "v.partial.mp4"
        for f in _frames(2, 16, 16):
            vw.write(f)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"old video")
    with pytest.raises(ValueError, match=r"frame 1 is 10x8 but the first frame was 16x16"), io.VideoWriter(path) as vw:
        vw.write(_frames(1, 16, 16)[0])
        vw.write(np.zeros((8, 10, 3), np.uint8))
    assert path.read_bytes() == b"old video" and sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_video_without_frames_or_context(tmp_path):
    with pytest.raises(ValueError, match=r"no frames were written to video .*e\.mp4"):
        with io.VideoWriter(tmp_path / "e.mp4"):
            pass
    with pytest.raises(RuntimeError, match=r"must be used as a context manager"):
        io.VideoWriter(tmp_path / "e.mp4").write(np.zeros((4, 4, 3)))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_path_success_keeps_suffix_and_creates_dirs(tmp_path):
    target = tmp_path / "a" / "b" / "x.npy"
    with io.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".npy" and tmp.name.startswith(".tmp-")
        np.save(tmp, np.arange(3))  # np.save would append .npy to a name without that suffix
        assert not target.exists()
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert [p.name for p in target.parent.iterdir()] == ["x.npy"]


def test_atomic_path_failure_cleans_up_and_keeps_existing(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(KeyError), io.atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise KeyError("fail")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(KeyError), io.atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise KeyError("fail")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    with pytest.raises(RuntimeError, match=r"writer for .*x\.txt produced no file"), io.atomic_path(target):
        pass
    assert target.read_text() == "old"


def test_writer_failing_midway_leaves_no_files(tmp_path, monkeypatch):
    def broken_save(f, arr, *args, **kwargs):
        f.write(b"\x93NUMPY half written")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    d = np.ones((4, 8), np.float32)
    with pytest.raises(OSError, match="disk full"):
        io.write_distance(tmp_path / "d.npy", d)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d.npy").write_bytes(b"previous")
    with pytest.raises(OSError, match="disk full"):
        io.write_distance(tmp_path / "d.npy", d)
    assert (tmp_path / "d.npy").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["d.npy"]


def test_no_stray_temp_files_after_writers(tmp_path):
    v, f, c, n = _tetra()
    io.write_image(tmp_path / "i.png", np.zeros((4, 8, 3)))
    io.write_exr(tmp_path / "e.exr", np.zeros((4, 8), np.float32))
    io.write_distance(tmp_path / "d.npy", np.ones((4, 8)))
    io.write_ply(tmp_path / "p.ply", v, faces=f)
    io.write_mesh(tmp_path / "m.glb", v, f, vertex_colors=c)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "e.exr", "i.png", "m.glb", "p.ply"]
    assert math.isclose(io.read_distance(tmp_path / "d.npy").mean(), 1.0)
