"""io against bad files: EXIF orientation, absurd headers, odd distance layouts, folders, warnings, disk errors,
stale temp files of killed writers."""

from __future__ import annotations

import errno
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from bad_input_cases import float_tiff_claiming, tiff_entries
from PIL import Image, ImageOps

from immersivedepth import io
from immersivedepth.errors import ImmersiveDepthError, InputError, OutputError

REPO = Path(__file__).resolve().parents[1]
# JPEG round trips of smooth content stay within a few 8-bit levels; a wrong orientation is off by far more.
JPEG_TOL = 12 / 255


@pytest.fixture(scope="module")
def small_pano(shared_data) -> np.ndarray:
    """A real 128x64 panorama (uint8 RGB, (64,128,3)): asymmetric in both axes, so every flip shows."""
    with Image.open(shared_data / "da2_demo_a3.png") as im:
        return np.asarray(im.convert("RGB").resize((128, 64), Image.Resampling.LANCZOS))


def _save_jpeg(path, rgb_u8: np.ndarray, orientation: int | None) -> None:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(rgb_u8).save(path, quality=98, subsampling=0, exif=exif.tobytes())


# The stored pixels that a viewer turns into the panorama P under each EXIF orientation (inverse operations).
STORED_FOR = {
    1: lambda p: p,
    2: lambda p: p[:, ::-1],
    3: lambda p: p[::-1, ::-1],
    4: lambda p: p[::-1],
    5: lambda p: np.swapaxes(p, 0, 1),
    6: lambda p: np.rot90(p, k=1),  # displayed = stored turned 90 degrees clockwise
    7: lambda p: np.swapaxes(p, 0, 1)[::-1, ::-1],
    8: lambda p: np.rot90(p, k=-1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, small_pano, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    _save_jpeg(path, np.ascontiguousarray(STORED_FOR[orientation](small_pano)), orientation)
    img = io.read_panorama(path)
    assert img.shape == (64, 128, 3)
    np.testing.assert_allclose(img, small_pano / 255.0, atol=JPEG_TOL)
    # reference implementation: Pillow's exif_transpose of the same file (decoders differ by a level at most)
    with Image.open(path) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(img, ref, atol=3 / 255)


def test_exif_orientation_3_is_not_upside_down(tmp_path, small_pano):
    """The issue's case: orientation 3 used to train upside down; top rows must match the panorama's top rows."""
    path = tmp_path / "upside.jpg"
    _save_jpeg(path, np.ascontiguousarray(small_pano[::-1, ::-1]), 3)
    img = io.read_panorama(path)
    top_err = np.abs(img[:8] - small_pano[:8] / 255.0).mean()
    flipped_err = np.abs(img[:8] - small_pano[::-1, ::-1][:8] / 255.0).mean()
    assert top_err < 0.02 < flipped_err


def test_exif_orientation_named_when_not_2to1(tmp_path, small_pano):
    # a 2:1 picture stored with orientation 6 displays 1:2: the error must say EXIF turned it
    path = tmp_path / "turned.jpg"
    _save_jpeg(path, small_pano, 6)
    with pytest.raises(InputError, match=r"turned\.jpg is 64x128 .*after applying its EXIF orientation 6 "
                                         r"\(rotated 90 degrees clockwise\) \(stored as 128x64\).*2:1"):
        io.read_panorama(path)
    assert io.panorama_size(path) == (128, 64)


# ----------------------------------------------------------------------------------------------------------------------
# headers that claim absurd sizes


def _png_claiming(path, width: int, height: int) -> None:
    """A valid 4x2 PNG whose IHDR is rewritten to claim ``width`` x ``height`` (CRC recomputed)."""
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr: ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def _jpeg_claiming(path, width: int, height: int) -> None:
    """A valid 16x8 JPEG whose SOF0 frame header is rewritten to claim ``width`` x ``height``."""
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(path, quality=90)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("maker,suffix,w,h", [(_png_claiming, ".png", 100000, 50000),
                                              (_jpeg_claiming, ".jpg", 60000, 30000)])  # JPEG sizes are 16-bit
def test_absurd_header_refused_before_decoding(tmp_path, maker, suffix, w, h):
    path = tmp_path / f"huge{suffix}"
    maker(path, w, h)
    with pytest.raises(io.ImageReadError) as info:
        io.read_panorama(path)
    msg = str(info.value)
    assert "\n" not in msg
    # above twice Pillow's own limit only the pixel count is known (Pillow stops before telling the size)
    assert f"huge{suffix} claims {w * h} pixels" in msg and "268435456" in msg and "dataset.max_pixels" in msg


def test_pixel_cap_is_a_parameter(tmp_path):
    path = tmp_path / "p.png"
    io.write_image(path, np.zeros((32, 64, 3), np.float32))
    with pytest.raises(io.ImageReadError, match=r"p\.png claims 64x32 pixels .*cap of 1000 pixels"):
        io.read_panorama(path, max_pixels=1000)
    assert io.read_panorama(path, max_pixels=None).shape == (32, 64, 3)
    assert io.read_panorama(path, max_pixels=64 * 32).shape == (32, 64, 3)


def test_absurd_distance_png_refused(tmp_path):
    path = tmp_path / "d.png"
    _png_claiming(path, 100000, 50000)
    with pytest.raises(io.ImageReadError, match=r"d\.png claims 5000000000 pixels"):
        io.read_distance(path, "matterport3d")


def test_npy_shape_over_cap_refused_before_reading(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.ones((40, 80), np.float32))
    with pytest.raises(io.ImageReadError, match=r"big\.npy has shape \(40, 80\), more than the cap of 100 values"):
        io.read_distance(path, max_pixels=100)


def _exr_claiming(path, width: int, height: int, channels: int = 3) -> None:
    """A valid 4x2 EXR whose data and display windows are rewritten to claim ``width`` x ``height``."""
    io.write_exr(path, np.ones((2, 4, channels), np.float32) if channels > 1 else np.ones((2, 4), np.float32))
    data = bytearray(path.read_bytes())
    for name in (b"dataWindow\0box2i\0", b"displayWindow\0box2i\0"):
        at = data.index(name) + len(name) + 4  # after the attribute's name, type and 4-byte size
        data[at: at + 16] = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    path.write_bytes(bytes(data))


def test_absurd_exr_header_refused_before_decoding(tmp_path):
    """An EXR data window claiming 100000x50000 (18.6 GB as float32 RGB) is refused from the header, with the same
    cap and message as a PNG's, for a panorama, a distance map and a size query alike."""
    path = tmp_path / "huge.exr"
    _exr_claiming(path, 100000, 50000)
    for read in (io.read_panorama, lambda p: io.read_distance(p), io.panorama_size, io.read_exr):
        with pytest.raises(io.ImageReadError) as info:
            read(path)
        msg = str(info.value)
        assert "\n" not in msg and msg.count("huge.exr") == 1
        assert "huge.exr claims 100000x50000 pixels" in msg and "cap of 268435456 pixels (dataset.max_pixels)" in msg
        assert "raise dataset.max_pixels" in msg


def test_exr_pixel_cap_is_the_images_cap(tmp_path):
    """The cap is the one of io/header.py (a parameter, ``dataset.max_pixels``), applied to EXR data windows."""
    path = tmp_path / "p.exr"
    io.write_exr(path, np.zeros((32, 64, 3), np.float32))
    with pytest.raises(io.ImageReadError, match=r"p\.exr claims 64x32 pixels .*cap of 1000 pixels"):
        io.read_panorama(path, max_pixels=1000)
    assert io.read_panorama(path, max_pixels=64 * 32).shape == (32, 64, 3)
    assert io.panorama_size(path) == (32, 64)
    d = tmp_path / "d.exr"
    io.write_exr(d, np.ones((32, 64), np.float32))
    with pytest.raises(io.ImageReadError, match=r"d\.exr claims 64x32 pixels .*cap of 100 pixels"):
        io.read_distance(d, max_pixels=100)
    assert io.read_distance(d, max_pixels=None).shape == (32, 64)


def test_absurd_float_tiff_header_refused_before_decoding(tmp_path):
    """Pillow cannot parse a float32 RGB TIFF (OpenCV decodes it): its size is read from the TIFF directory."""
    path = tmp_path / "f.tif"
    float_tiff_claiming(path, 8, 4)
    assert io.read_panorama(path).shape == (4, 8, 3)  # the rewrite itself keeps a readable file
    with pytest.raises(io.ImageReadError, match=r"f\.tif claims 8x4 pixels .*cap of 16 pixels"):
        io.read_panorama(path, max_pixels=16)
    huge = tmp_path / "huge.tif"
    float_tiff_claiming(huge, 30000, 20000)  # 600 Mpx: under OpenCV's own limit (2^30), 7.2 GB as float32 RGB
    with pytest.raises(io.ImageReadError) as info:
        io.read_panorama(huge)
    msg = str(info.value)
    assert "\n" not in msg and "huge.tif claims 30000x20000 pixels" in msg and "dataset.max_pixels" in msg
    assert io.panorama_size(path) == (4, 8)


def _with_tiff_orientation(path, orientation: int) -> None:
    """Give an OpenCV-written TIFF an Orientation tag (its PlanarConfiguration entry, 1 = the default, is reused)."""
    data = bytearray(path.read_bytes())
    order, entries = tiff_entries(data)
    for at in entries:
        if struct.unpack(order + "H", data[at: at + 2])[0] == 284:
            data[at: at + 12] = struct.pack(order + "HHIHH", 274, 3, 1, orientation, 0)
            path.write_bytes(bytes(data))
            return
    raise AssertionError("no PlanarConfiguration entry to reuse")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_applied_once(tmp_path, orientation):
    """OpenCV turns a TIFF by its own Orientation tag while decoding (Pillow reports the turned size): the reader must
    not turn it a second time. 8-bit (Pillow parses the header) and float RGB (the TIFF directory reader) alike."""
    import cv2

    from immersivedepth.io.header import _tiff_header, apply_orientation
    from immersivedepth.io.images import decode_raster

    rng = np.random.default_rng(orientation)
    stored = rng.uniform(0, 255, (6, 12, 3)).astype(np.uint8)
    want = apply_orientation(stored, orientation)
    path = tmp_path / "o.tif"
    Image.fromarray(stored).save(path, tiffinfo={274: orientation})
    assert _tiff_header(path) == (12, 6, orientation)
    header = io.read_header(path)
    assert (header.width, header.height, header.orientation) == (12, 6, orientation)
    got = np.round(io.read_panorama(path, allow_resample=True) * 255) if orientation < 5 else None
    if got is not None:
        np.testing.assert_array_equal(got, want)
    else:  # turned by 90 degrees: 6x12 displayed, not 2:1, and the error says why
        with pytest.raises(InputError, match=rf"o\.tif is 6x12 .*orientation {orientation}"):
            io.read_panorama(path)
    raw, _ = decode_raster(path)
    np.testing.assert_array_equal(raw[..., ::-1], want)
    fpath = tmp_path / "f.tif"  # float RGB: Pillow cannot parse it, the TIFF directory reader does
    assert cv2.imwrite(str(fpath), stored[..., ::-1].astype(np.float32) / 255)
    _with_tiff_orientation(fpath, orientation)
    assert _tiff_header(fpath) == (12, 6, orientation)
    fraw, fheader = decode_raster(fpath)
    assert fheader is not None and fheader.orientation == orientation
    np.testing.assert_allclose(fraw[..., ::-1] * 255, want, atol=1e-3)


@pytest.mark.parametrize("big", [False, True])
def test_tiff_directory_reader(tmp_path, big):
    """Classic TIFF and BigTIFF; anything else (or a directory past the end of the file) is not a TIFF header."""
    from immersivedepth.io.header import _tiff_header

    path = tmp_path / "o.tif"
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(path, tiffinfo={274: 8}, big_tiff=big)
    assert path.read_bytes()[2] == (43 if big else 42)
    assert _tiff_header(path) == (7, 5, 8)
    (tmp_path / "bad.tif").write_bytes(b"II*\0" + b"\xff" * 12)
    assert _tiff_header(tmp_path / "bad.tif") is None
    io.write_image(tmp_path / "p.png", np.zeros((4, 8, 3), np.float32))
    assert _tiff_header(tmp_path / "p.png") is None


# ----------------------------------------------------------------------------------------------------------------------
# distance layouts


def test_channel_first_distance_read(tmp_path):
    d = np.random.default_rng(1).uniform(0.5, 9.0, (16, 32)).astype(np.float32)
    for name, arr in {"c1.npy": d[None], "c1_last.npy": d[..., None], "c3.npy": np.stack([d, d, d])}.items():
        np.save(tmp_path / name, arr)
        np.testing.assert_array_equal(io.read_distance(tmp_path / name), d)


def test_channel_first_distance_different_channels_named(tmp_path):
    d = np.ones((16, 32), np.float32)
    np.save(tmp_path / "c3.npy", np.stack([d, 2 * d, d]))
    with pytest.raises(io.ImageReadError, match=r"c3\.npy has shape \(3, 16, 32\): 3 different channels in "
                                                r"\(C,H,W\) layout"):
        io.read_distance(tmp_path / "c3.npy")


@pytest.mark.parametrize("shape", [(16, 32, 7), (1, 1, 16, 32), (0, 32)])
def test_distance_bad_shape_named(tmp_path, shape):
    np.save(tmp_path / "bad.npy", np.ones(shape, np.float32))
    with pytest.raises(io.ImageReadError) as info:
        io.read_distance(tmp_path / "bad.npy")
    msg = str(info.value)
    assert f"bad.npy has shape {shape}" in msg and "(1,H,W)" in msg and "channels" not in msg.split(";")[0]


def test_distance_scale_not_a_number_names_key(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((4, 8), np.float32))
    with pytest.raises(ImmersiveDepthError, match=r"dataset\.distance_format\.scale='abc' is not a number"):
        io.read_distance(tmp_path / "d.npy", {"scale": "abc", "invalid": 0})
    with pytest.raises(ImmersiveDepthError, match=r"dataset\.distance_format\.scale=-1 must be a finite number > 0"):
        io.read_distance(tmp_path / "d.npy", {"scale": -1, "invalid": 0})


# ----------------------------------------------------------------------------------------------------------------------
# paths


def test_directory_is_a_directory(tmp_path):
    folder = tmp_path / "pano.png"
    folder.mkdir()
    for read, what in ((io.read_panorama, "panorama"), (io.read_distance, "distance file")):
        with pytest.raises(InputError, match=rf"{what} .*pano\.png is a directory, not a file") as info:
            read(folder)
        assert not isinstance(info.value, FileNotFoundError)


def test_missing_file_and_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"panorama not found: .*nope\.png \(check the path\)"):
        io.read_panorama(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match=r"nope\.png \(its folder .*nodir does not exist either"):
        io.read_panorama(tmp_path / "nodir" / "nope.png")


# ----------------------------------------------------------------------------------------------------------------------
# resampling with the panorama, statistics


def test_match_panorama_names_original_size(tmp_path):
    d = np.ones((30, 70), np.float32)
    with pytest.raises(InputError) as info:
        io.match_panorama(d, tmp_path / "d.npy", panorama=tmp_path / "p.png", original_hw=(32, 70),
                          target_hw=(32, 64))
    assert str(info.value).startswith(f"reference distance {tmp_path / 'd.npy'} is 70x30 but the panorama "
                                      f"{tmp_path / 'p.png'} is 70x32 (resampled to 64x32 by dataset.allow_resample)")


def test_match_panorama_resamples_with_the_panorama(tmp_path):
    d = np.arange(2 * 6, dtype=np.float32).reshape(2, 6) + 1
    d[0, 0] = 0.0  # invalid stays invalid, never averaged into its neighbours
    with pytest.warns(io.InputWarning, match=r"d\.npy resampled from 6x2 to 4x2"):
        out = io.match_panorama(d, tmp_path / "d.npy", panorama="p.png", original_hw=(2, 6), target_hw=(2, 4))
    # nearest source centre: target column j samples floor((j + 0.5) * 6 / 4) = 0, 2, 3, 5
    np.testing.assert_array_equal(out, d[:, [0, 2, 3, 5]])
    assert out[0, 0] == 0.0
    same = io.match_panorama(d, "d.npy", panorama="p.png", original_hw=(2, 6), target_hw=(2, 6))
    assert same is d


def test_resample_distance_upsamples_by_replication():
    d = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    np.testing.assert_array_equal(io.resample_distance(d, (4, 4)), np.kron(d, np.ones((2, 2), np.float32)))


def test_distance_stats_analytic():
    d = np.array([[0.0, 1.0, 2.0, np.nan], [3.0, 4.0, -1.0, np.inf]], np.float32)
    s = io.distance_stats(d)
    assert (s.height, s.width) == (2, 4)
    assert s.valid_fraction == pytest.approx(4 / 8)
    assert (s.min, s.max, s.median) == (1.0, 4.0, 2.5)
    assert s.describe() == "4x2, 50.0 % valid, range 1-4, median 2.5"
    assert io.distance_stats(np.zeros((2, 3))).describe() == "3x2, no valid pixel"


def test_distance_stats_reveal_wrong_preset(shared_data):
    """The issue's case: the Replica office distance read as structured3d (mm) instead of matterport3d (1/4000 m)
    is 4x off; the log line's median shows it at a glance."""
    path = shared_data / "replica_office_distance.png"
    right = io.distance_stats(io.read_distance(path, "matterport3d"))
    wrong = io.distance_stats(io.read_distance(path, "structured3d"))
    assert wrong.median == pytest.approx(4 * right.median, rel=1e-6)
    assert 0.5 < right.median < 10  # an office, metres
    assert f"median {right.median:.4g}" in right.describe()


# ----------------------------------------------------------------------------------------------------------------------
# warnings carry the file name


def test_io_warnings_name_the_file(tmp_path):
    rgba = np.zeros((4, 8, 4), np.float32)
    io.write_image(tmp_path / "alpha.png", rgba)
    io.write_image(tmp_path / "wide.png", np.zeros((4, 10, 3), np.float32))
    hdr = np.full((4, 8, 3), 2.0, np.float32)
    hdr[0, 0, 0] = np.nan
    io.write_exr(tmp_path / "hdr.exr", hdr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        io.read_panorama(tmp_path / "alpha.png")
        io.read_panorama(tmp_path / "wide.png", allow_resample=True)
        io.read_panorama(tmp_path / "hdr.exr")
    texts = [str(w.message) for w in caught if issubclass(w.category, io.InputWarning)]
    assert any("alpha.png has an alpha channel" in t for t in texts)
    assert any("wide.png is 10x4" in t and "resampled to 8x4" in t for t in texts)
    assert any("hdr.exr: 1 non-finite pixel values (NaN/inf) were set to 0" in t for t in texts)
    assert any("hdr.exr holds linear float values in [0, 2]" in t for t in texts)


# ----------------------------------------------------------------------------------------------------------------------
# disk errors and killed writers


def test_output_path_under_a_file_is_output_error(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(OutputError) as info:
        io.write_image(tmp_path / "blocker" / "x.png", np.zeros((2, 4, 3), np.float32))
    msg = str(info.value)
    assert "\n" not in msg and "blocker/x.png" in msg and "is a file, not a folder" in msg


@pytest.mark.parametrize("exc,words", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                  "file write failed"), "device.base_exp_dir"),
])
def test_write_failure_is_output_error_and_keeps_target(tmp_path, exc, words):
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous checkpoint")
    with pytest.raises(OutputError, match=rf"cannot write .*last\.pt: .*{words}.*earlier outputs are intact"):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise exc
    assert target.read_bytes() == b"previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_other_errors_keep_their_type(tmp_path):
    with pytest.raises(ZeroDivisionError), io.atomic_path(tmp_path / "x.txt"):
        raise ZeroDivisionError  # a bug, not disk trouble: its traceback must survive


def test_remove_stale_temps_after_sigkill(tmp_path):
    run = tmp_path / "run dir"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"good")
    code = (
        "import os, signal, sys\n"
        "from immersivedepth import io\n"
        "with io.atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'x' * 4096)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(run / "checkpoints" / "last.pt")], cwd=REPO,
                          capture_output=True)
    assert proc.returncode == -9
    left = [p.name for p in (run / "checkpoints").iterdir() if p.name != "last.pt"]
    assert len(left) == 1 and io.is_temp_name(left[0]) and left[0].endswith(".last.pt")
    # neighbours that only look similar must survive
    keep = ["notes.tmp", ".tmp-abc.txt", ".tmp-0123456789ab", "video.mp4", "partial.mp4"]
    for name in keep:
        (run / name).write_text("keep")
    (run / "render").mkdir()
    (run / "render" / "video.partial.mp4").write_bytes(b"half a video")
    removed = io.remove_stale_temps(run)
    assert sorted(p.name for p in removed) == sorted([left[0], "video.partial.mp4"])
    assert sorted(p.name for p in run.iterdir() if p.is_file()) == sorted(keep)
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"good"
    assert io.remove_stale_temps(tmp_path / "missing") == []
