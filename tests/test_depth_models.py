"""Depth Anything V2 / MiDaS v3.1: parity with the official code, key layouts, loading errors, interface."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from immersivedepth.depth.models import (
    DAV2_CONFIGS,
    ENV_VAR,
    MIDAS_CONFIGS,
    PRESETS,
    CheckpointError,
    CheckpointNotFoundError,
    build_network,
    build_preset,
    load_depth_model,
    load_network,
    official_layout,
)
from immersivedepth.depth.models.checkpoints import checkpoint_dirs, detect_variant
from immersivedepth.depth.models.depth_anything_v2 import DAV2_RESIZE
from immersivedepth.depth.models.midas import gen_relative_position_index, midas_resize_rule
from immersivedepth.depth.models.preprocess import network_size, prepare_tensor, prepare_uint8
from immersivedepth.depth.models.synthetic import deterministic_state_dict, state_dict_digest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "parity"
KEYS_DIR = REPO.parent / "shared" / "reference" / "checkpoints"
# "dav2_vitl_s140" is the real ViT-L (24 blocks, width 1024, taps 4/11/17/23, the official file layout) run
# through the official ``infer_image(raw, input_size=140)``: every vitl-specific code path at a size the default
# suite can afford; the same model at the default 518 is "dav2_vitl" (slow).
FAST_CASES = ("dav2_vits", "dav2_vitl_s140", "midas_beit_b384", "midas_swin2_t256")
TOL = 1e-4  # max |ours - reference| relative to the reference output's range

ALL_VARIANTS = [("dav2", v) for v in DAV2_CONFIGS] + [("midas", v) for v in MIDAS_CONFIGS]


class _NotATensor:
    """A picklable object that ``torch.load(weights_only=True)`` must refuse."""


def _keys_file(family: str, variant: str) -> Path:
    return KEYS_DIR / (f"dav2_{variant}_keys.txt" if family == "dav2" else f"midas_{variant}_keys.txt")


def _read_keys(path: Path) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        k, s = line.split("\t")
        out[k] = tuple(ast.literal_eval(s))
    return out


def _fixture(name: str) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    path = FIXTURES / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"parity fixture {path} missing; run scripts/make_parity_fixtures.py --cases {name}")
    d = np.load(path)
    meta = json.loads(str(d["meta"]))
    n = int(d["count"])
    return meta, [d[f"image_{i}"] for i in range(n)], [d[f"ref_{i}"] for i in range(n)]


@pytest.fixture(scope="module")
def ckpt_files(tmp_path_factory):
    """Deterministic official-format checkpoint files, generated once per module: ``get(family, variant)``."""
    root = tmp_path_factory.mktemp("ckpt")
    cache: dict[tuple, Path] = {}

    def get(family: str, variant: str, seed: int = 0) -> Path:
        key = (family, variant, seed)
        if key not in cache:
            sd = deterministic_state_dict(family, variant, seed)
            name = next(p.filename for p in PRESETS.values() if p.family == family and p.variant == variant)
            d = root / f"{family}_{variant}_{seed}"
            d.mkdir()
            cache[key] = d / name
            torch.save(sd, cache[key])
            get.digests[key] = state_dict_digest(sd)
        return cache[key]

    get.digests = {}
    return get


@pytest.fixture(scope="module")
def models(ckpt_files):
    cache = {}

    def get(name: str, meta: dict):
        if name not in cache:
            cache[name] = load_depth_model(ckpt_files(meta["family"], meta["variant"], meta["seed"]),
                                           input_size=meta["input_size"])
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------------------
# parity with the reference implementations
# ---------------------------------------------------------------------------------------------------------
def _check_parity(name, models, ckpt_files):
    meta, images, refs = _fixture(name)
    model = models(name, meta)
    digest = ckpt_files.digests[(meta["family"], meta["variant"], meta["seed"])]
    assert digest == meta["state_dict_digest"], "deterministic weights changed since the fixture was made"
    for img, ref in zip(images, refs):
        out = model.predict(img)
        assert out.shape == img.shape[:2] and out.dtype == np.float32
        span = float(ref.max() - ref.min())
        assert span > 0.1 and (ref > 0).mean() > 0.5  # a meaningful reference, not all zeros
        err = float(np.abs(out - ref).max()) / span
        assert err <= TOL, f"{name} {img.shape}: max error {err:.2e} of the range"


@pytest.mark.parametrize("name", FAST_CASES)
def test_parity_with_reference(name, models, ckpt_files):
    _check_parity(name, models, ckpt_files)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dav2_vitl", "dav2_vitb", "midas_swin2_b384", "midas_dpt_l384",
                                  "midas_dpt_hybrid384", "midas_beit_l384"])
def test_parity_with_reference_heavy(name, models, ckpt_files):
    _check_parity(name, models, ckpt_files)


def test_fixture_inputs_exercise_non_native_sizes():
    """The fixtures cover the native network size and a non-square one (pos-embed / rel-pos resampling)."""
    meta, images, _ = _fixture("dav2_vits")
    sizes = {network_size(*im.shape[:2], DAV2_RESIZE) for im in images}
    assert sizes == {(518, 518), (518, 728)}
    meta, images, _ = _fixture("midas_beit_b384")
    rule = midas_resize_rule(MIDAS_CONFIGS["dpt_beit_base_384"])
    assert {network_size(*im.shape[:2], rule) for im in images} == {(384, 384), (288, 384)}
    assert sum(f.stat().st_size for f in FIXTURES.glob("*.npz")) < 1_000_000


def test_tiles_interface_matches_predict(models, ckpt_files):
    """``model(tiles)`` (torch resize) agrees with ``predict`` (cv2 resize) up to the resize rounding."""
    small_dav2 = load_depth_model(ckpt_files("dav2", "vits"), input_size=98, max_batch=2)  # 98x140 network input
    assert small_dav2.input_size == 98
    for name in ("dav2_vits", "midas_swin2_t256"):
        meta, images, _ = _fixture(name)
        model = small_dav2 if name == "dav2_vits" else models(name, meta)
        img = images[1]
        ref = model.predict(img)
        tiles = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
        if name == "dav2_vits":  # batching (3 tiles, max_batch 2): each tile equals running it alone
            tiles = torch.cat([tiles, tiles.flip(-1), tiles.flip(-2)])
        b = tiles.shape[0]
        out = model(tiles, K=torch.eye(3).expand(b, 3, 3), R=torch.eye(3).expand(b, 3, 3))
        assert out.shape == (b, *img.shape[:2]) and out.dtype == torch.float32
        span = ref.max() - ref.min()
        assert np.abs(out[0].numpy() - ref).max() / span < 2e-3
        if b > 1:
            alone = model(tiles[2:])
            assert torch.allclose(out[2], alone[0], atol=1e-5 * span)
            assert not torch.allclose(out[1], out[0], atol=1e-2 * span)  # different tiles, different outputs


# ---------------------------------------------------------------------------------------------------------
# key layouts
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family,variant", ALL_VARIANTS)
def test_official_key_layout(family, variant):
    """Our modules, renamed to the official layout, have exactly the keys and shapes of the released files."""
    path = _keys_file(family, variant)
    if not path.is_file():
        pytest.skip(f"reference key list {path} not available")
    expected = _read_keys(path)
    net = build_network(family, variant)
    assert official_layout(net) == expected
    # renaming is a bijection
    for k in net.state_dict(keep_vars=True):
        assert net.from_official_key(net.to_official_key(k)) == k


@pytest.mark.parametrize("family,variant", ALL_VARIANTS)
def test_loader_accepts_full_official_layout(family, variant):
    """A state dict with exactly the official keys/shapes (meta tensors) is detected and loads strictly."""
    path = _keys_file(family, variant)
    if not path.is_file():
        pytest.skip(f"reference key list {path} not available")
    sd = {k: torch.empty(s, device="meta") for k, s in _read_keys(path).items()}
    assert detect_variant(sd) == (family, variant)
    net = load_network(sd, path, variant=variant, compute_buffers=False)
    assert net.cfg.name == variant


@pytest.mark.parametrize("name,message", [("dpt_levit_224", "LeViT"), ("dpt_swin_large_384", "Swin V1")])
def test_unsupported_midas_models_are_named(name, message):
    path = KEYS_DIR / f"midas_{name}_keys.txt"
    if not path.is_file():
        pytest.skip(f"reference key list {path} not available")
    sd = {k: torch.empty(s, device="meta") for k, s in _read_keys(path).items()}
    with pytest.raises(CheckpointError, match=f"{name}.*{message}.*not supported"):
        detect_variant(sd, path)


def test_beit_relative_position_index_matches_timm():
    from timm.models.beit import gen_relative_position_index as timm_index

    for window in [(24, 24), (18, 24), (5, 3)]:
        assert torch.equal(gen_relative_position_index(window), timm_index(window))


# ---------------------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------------------
def test_network_size_rules():
    # DA V2: lower bound 518, multiple of 14
    assert network_size(50, 70, DAV2_RESIZE) == (518, 728)
    assert network_size(512, 1024, DAV2_RESIZE) == (518, 1036)
    assert network_size(1000, 1000, DAV2_RESIZE) == (518, 518)
    # MiDaS BEiT/ViT: "minimal" keep-aspect, multiple of 32; Swin V2: square net size
    beit = midas_resize_rule(MIDAS_CONFIGS["dpt_beit_large_512"])
    # |1 - 512/70| < |1 - 512/50|: fit the width; 50 * 512/70 = 365.7 -> 352
    assert network_size(50, 70, beit) == (352, 512)
    # |1 - 512/500| < |1 - 512/1000|: fit the width (upscale 1.024); 1024 is already a multiple of 32
    assert network_size(1000, 500, beit) == (1024, 512)
    swin = midas_resize_rule(MIDAS_CONFIGS["dpt_swin2_tiny_256"])
    assert network_size(50, 70, swin) == (256, 256)
    # round-half-to-even like np.round: 7.5 * 32 -> 8 * 32, 6.5 * 32 -> 6 * 32
    rule = midas_resize_rule(MIDAS_CONFIGS["dpt_large_384"])
    assert network_size(384, 240, rule) == (384, 256)  # 240/32 = 7.5 -> 8
    assert network_size(384, 208, rule) == (384, 192)  # 208/32 = 6.5 -> 6


def test_tensor_preprocessing_matches_cv2_path():
    rng = np.random.default_rng(3)
    img = (rng.random((61, 47, 3)) * 255).astype(np.uint8)
    for rule in (DAV2_RESIZE, midas_resize_rule(MIDAS_CONFIGS["dpt_beit_base_384"])):
        a = prepare_uint8(img, rule)
        b = prepare_tensor(torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255.0, rule).float()
        assert a.shape == b.shape == (1, 3, *network_size(61, 47, rule))
        assert (a - b).abs().max() < 1e-3  # normalised units (std 0.229 or 0.5)


def test_model_options_are_checked(ckpt_files):
    with pytest.raises(ValueError, match="precision must be auto/fp32/bf16/fp16, got 'fp64'"):
        load_depth_model(ckpt_files("dav2", "vits"), precision="fp64")
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        load_depth_model(ckpt_files("dav2", "vits"), max_batch=0)


def test_bad_inputs_are_rejected(models):
    meta, _, _ = _fixture("dav2_vits")
    model = models("dav2_vits", meta)
    with pytest.raises(ValueError, match=r"RGB uint8 array of shape \(H,W,3\)"):
        model.predict(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"RGB uint8 array"):
        model.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="float RGB"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------------------
# loading and its failure modes
# ---------------------------------------------------------------------------------------------------------
def test_safetensors_and_training_wrapper_load_identically(ckpt_files, tmp_path):
    from safetensors.torch import save_file

    src = ckpt_files("dav2", "vits")
    sd = torch.load(src, weights_only=True)
    st = tmp_path / "depth_anything_v2_vits.safetensors"
    save_file(sd, str(st))
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": sd, "optimizer": {"lr": torch.tensor(1.0)}}, wrapped)
    img = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    outs = [load_depth_model(p, input_size=98).predict(img) for p in (src, st, wrapped)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_missing_checkpoint_names_file_url_and_alternative(tmp_path, monkeypatch):
    with pytest.raises(CheckpointNotFoundError) as info:
        build_preset("dav2_vitl", checkpoint_dir=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in ("depth_anything_v2_vitl.pth", str(tmp_path),
                 "https://huggingface.co/depth-anything/Depth-Anything-V2-Large", "dataset.distance_path",
                 "depth.source=reference", ENV_VAR):
        assert part in msg
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "envdir"))
    assert checkpoint_dirs() == [tmp_path / "envdir"]
    with pytest.raises(CheckpointNotFoundError, match=r"dpt_beit_large_512\.pt.*envdir.*github\.com/isl-org/MiDaS"):
        build_preset("midas_beit_l512")
    with pytest.raises(CheckpointNotFoundError, match=r"dpt_swin2_tiny_256\.pt.*releases/download/v3_1"):
        load_depth_model(tmp_path / "nowhere" / "dpt_swin2_tiny_256.pt")


def test_default_checkpoint_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    dirs = checkpoint_dirs()
    assert dirs[0] == tmp_path / "checkpoints" and dirs[-1] == REPO / "checkpoints"


def test_preset_found_in_checkpoint_dir_and_checked(ckpt_files, tmp_path):
    import shutil

    shutil.copy(ckpt_files("dav2", "vits"), tmp_path / "depth_anything_v2_vits.pth")
    model = build_preset("dav2_vits", checkpoint_dir=tmp_path)
    assert model.name == "dav2_vits" and model.input_size == 518
    # the same file under another preset's name is caught by the variant check
    shutil.copy(ckpt_files("dav2", "vits"), tmp_path / "depth_anything_v2_vitb.pth")
    with pytest.raises(CheckpointError, match=r"requested variant dav2 vitb.*looks like dav2 vits.*pos_embed: "
                                              r"file \(1, 1370, 384\) vs expected \(1, 1370, 768\)"):
        build_preset("dav2_vitb", checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="unknown depth-model preset 'dav2_huge'"):
        build_preset("dav2_huge", checkpoint_dir=tmp_path)


def test_truncated_files(ckpt_files, tmp_path):
    from safetensors.torch import save_file

    src = ckpt_files("dav2", "vits").read_bytes()
    bad = tmp_path / "depth_anything_v2_vits.pth"
    bad.write_bytes(src[: len(src) // 2])
    with pytest.raises(CheckpointError, match=rf"{bad.name}.*\({len(src) // 2} bytes\).*truncated or corrupt"):
        load_depth_model(bad)
    st = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1000)}, str(st))
    st.write_bytes(st.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"x\.safetensors.*not a readable safetensors file.*truncated"):
        load_depth_model(st)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_files(ckpt_files, tmp_path):
    p = tmp_path / "random.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)}, p)
    with pytest.raises(CheckpointError, match=r"random\.pth.*not a supported Depth Anything V2 or MiDaS.*encoder"):
        load_depth_model(p)
    torch.save({"step": 3, "name": "x"}, p)
    with pytest.raises(CheckpointError, match=r"not a flat state dict.*'step'"):
        load_depth_model(p)
    torch.save([torch.zeros(1)], p)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_depth_model(p)
    torch.save({"w": _NotATensor()}, p)  # arbitrary pickled objects are refused, never executed
    with pytest.raises(CheckpointError, match=r"random\.pth.*other than tensors.*not unpickled for safety"):
        load_depth_model(p)
    with open(p, "wb") as f:
        pickle.dump({"w": np.zeros(2)}, f)  # a plain (non-torch) pickle with a numpy array
    with pytest.raises(CheckpointError, match=r"random\.pth.*not unpickled for safety"):
        load_depth_model(p)
    # a MiDaS file passed as Depth Anything V2
    midas = ckpt_files("midas", "dpt_swin2_tiny_256")
    with pytest.raises(CheckpointError, match=r"requested variant dav2 vits \(the file looks like midas "
                                              r"dpt_swin2_tiny_256\).*missing keys.*pretrained\.pos_embed"):
        load_depth_model(midas, variant="vits")
    with pytest.raises(CheckpointError, match="unknown depth-model variant 'vitx'"):
        load_depth_model(midas, variant="vitx")


def test_damaged_layout_lists_keys(ckpt_files, tmp_path):
    sd = torch.load(ckpt_files("dav2", "vits"), weights_only=True)
    del sd["depth_head.scratch.refinenet2.out_conv.weight"]
    sd["depth_head.scratch.layer1_rn.weight"] = torch.zeros(64, 40, 3, 3)
    sd["extra.thing"] = torch.zeros(1)
    p = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as info:
        load_depth_model(p)
    msg = str(info.value)
    assert "official dav2 vits layout" in msg and str(p) in msg
    assert "1 missing keys" in msg and "refinenet2.out_conv.weight" in msg
    assert "1 unexpected keys" in msg and "extra.thing" in msg
    assert "layer1_rn.weight: file (64, 40, 3, 3) vs expected (64, 48, 3, 3)" in msg


# ---------------------------------------------------------------------------------------------------------
# CPU fast paths: Winograd 3x3 convolution, DPT head tail, Swin V2 window attention caches
# ---------------------------------------------------------------------------------------------------------
def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


@pytest.mark.parametrize("shape,out_ch,bias,band_bytes,channels_last", [
    ((1, 128, 16, 16), 128, True, 4 * 2**20, True),
    ((2, 128, 12, 20), 160, False, 1, False),  # one tile row per band, NCHW input, no bias
    ((3, 144, 8, 6), 128, True, 40_000, True),  # several rows per band, last band partial
])
def test_winograd_conv_matches_conv2d(shape, out_ch, bias, band_bytes, channels_last):
    from immersivedepth.depth.models.dpt_head import WinogradConv2d

    torch.manual_seed(0)
    conv = WinogradConv2d(shape[1], out_ch, bias=bias, band_bytes=band_bytes, min_pixels=1)
    with torch.no_grad():
        if bias:
            conv.bias.normal_()  # a visible bias
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert conv.uses_winograd(x)
        out = conv(x)
        ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    assert out.shape == ref.shape and _close(out, ref)


def test_winograd_conv_falls_back_to_direct_convolution():
    from immersivedepth.depth.models.dpt_head import WinogradConv2d

    torch.manual_seed(1)
    conv = WinogradConv2d(128, 128, min_pixels=64)
    odd = torch.randn(1, 128, 9, 10)
    thin = WinogradConv2d(64, 128, min_pixels=64)
    with torch.inference_mode():
        assert not conv.uses_winograd(odd)  # odd height: F(2x2,3x3) tiles need even sizes
        assert torch.equal(conv(odd), F.conv2d(odd, conv.weight, conv.bias, padding=1))
        assert not thin.uses_winograd(torch.randn(1, 64, 8, 8))  # below min_channels
        assert conv.uses_winograd(torch.randn(1, 128, 8, 8)) and not conv.uses_winograd(torch.randn(1, 128, 6, 6))
    x = torch.randn(1, 128, 8, 8, requires_grad=True)
    assert not conv.uses_winograd(x)  # autograd on: the ordinary convolution (and its gradients)
    conv(x).square().sum().backward()
    w = conv.weight.detach().clone().requires_grad_(True)
    F.conv2d(x.detach(), w, conv.bias.detach(), padding=1).square().sum().backward()
    assert conv.weight.grad is not None and _close(conv.weight.grad, w.grad)


def test_winograd_kernel_cache_follows_weight_changes():
    from immersivedepth.depth.models.dpt_head import WinogradConv2d, winograd_weights

    torch.manual_seed(2)
    conv = WinogradConv2d(128, 128, min_pixels=64)
    x = torch.randn(1, 128, 8, 8)
    with torch.inference_mode():
        assert conv.uses_winograd(x)
        first = conv(x)
        kernels = conv.winograd_kernels()
        assert conv.winograd_kernels() is kernels  # cached
        assert torch.equal(kernels, winograd_weights(conv.weight))
    with torch.no_grad():
        conv.weight.mul_(-2.0)  # in-place edit bumps the version counter
    with torch.inference_mode():
        second = conv(x)
    assert _close(second, F.conv2d(x, conv.weight, conv.bias, padding=1))
    assert not _close(second, first, rel=0.5)
    other = WinogradConv2d(128, 128)
    conv.load_state_dict(other.state_dict())
    with torch.inference_mode():
        assert _close(conv(x), F.conv2d(x, other.weight, other.bias, padding=1))
    conv.weight.data.zero_()  # bypasses version tracking: the documented clear_cache() call is needed
    conv.clear_cache()
    with torch.inference_mode():
        assert _close(conv(x), conv.bias.view(1, -1, 1, 1).expand(1, 128, 8, 8))


@pytest.mark.parametrize("min_channels", [16, 32])  # 4 x 2 / 2 x 1 (streamed) channel groups in the tail
def test_dpt_head_fast_paths_match_the_plain_formulation(min_channels):
    """1x1 fusion convolution before the upsampling, chunked tail, Winograd: same result as the textbook order."""
    from immersivedepth.depth.models.dpt_head import DPTHead, WinogradConv2d

    torch.manual_seed(3)
    f = 128
    head = DPTHead([32, 32, 32, 32], [None] * 4, ("up4", "up2", "none", "down2"), f, chunk_bytes=2**14,
                   chunk_min_channels=min_channels).eval()
    with torch.no_grad():  # a mostly positive (ReLU'd) output, so the comparison means something
        head.out_conv2.bias.fill_(0.5)
        head.out_conv3.weight.abs_()
        head.out_conv3.bias.fill_(0.1)
    taps = [torch.randn(3, 36, 32) for _ in range(4)]  # batch 3 forces several batch and channel chunks
    plain = DPTHead([32, 32, 32, 32], [None] * 4, ("up4", "up2", "none", "down2"), f, chunk_bytes=None).eval()
    plain.load_state_dict(head.state_dict())
    for mod in (*head.modules(), *plain.modules()):  # Winograd on these small maps too
        if isinstance(mod, WinogradConv2d):
            mod.min_pixels = 1

    def textbook(h):  # the official DPT order, ordinary convolutions
        feats = [h.layer_rn[i](h.reassemble[i](t, None, (6, 6))) for i, t in enumerate(taps)]

        def fuse(blk, x, skip, size):
            if skip is not None:
                x = x + blk.res1(skip)
            x = F.interpolate(blk.res2(x), size=size, mode="bilinear", align_corners=True)
            return blk.out_conv(x)
        path = fuse(h.fusion[3], feats[3], None, feats[2].shape[-2:])
        path = fuse(h.fusion[2], path, feats[2], feats[1].shape[-2:])
        path = fuse(h.fusion[1], path, feats[1], feats[0].shape[-2:])
        path = fuse(h.fusion[0], path, feats[0], tuple(2 * s for s in feats[0].shape[-2:]))
        out = F.interpolate(h.out_conv1(path), size=(50, 46), mode="bilinear", align_corners=True)
        return F.relu(h.out_conv3(F.relu(h.out_conv2(out))))

    with torch.no_grad():  # grad off but not inference mode: Winograd and the chunks are active
        ref = textbook(plain)
        with torch.enable_grad():  # the ordinary path (autograd on) for comparison
            ref_grad = textbook(plain).detach()
        out = head(taps, None, (6, 6), out_size=(50, 46))
        out_plain = plain(taps, None, (6, 6), out_size=(50, 46))
    assert out.shape == (3, 1, 50, 46) and float((ref_grad > 0).float().mean()) > 0.5
    assert _close(out, ref_grad) and _close(out_plain, ref_grad) and _close(ref, ref_grad)


def test_dpt_head_options_are_checked():
    from immersivedepth.depth.models.dpt_head import DPTHead

    with pytest.raises(ValueError, match="chunk_bytes must be a positive byte count or None, got 0"):
        DPTHead([8] * 4, [None] * 4, ["none"] * 4, 16, chunk_bytes=0)
    with pytest.raises(ValueError, match="chunk_min_channels must be >= 1, got 0"):
        DPTHead([8] * 4, [None] * 4, ["none"] * 4, 16, chunk_min_channels=0)


def _swin_attention(seed: int = 4):
    from timm.models.swin_transformer_v2 import WindowAttention

    from immersivedepth.depth.models.midas import _SdpaWindowAttention

    torch.manual_seed(seed)
    timm_attn = WindowAttention(48, window_size=(4, 4), num_heads=3, pretrained_window_size=(0, 0)).eval()
    with torch.no_grad():
        for p in timm_attn.parameters():
            p.normal_(0.0, 0.3)
    ours = WindowAttention(48, window_size=(4, 4), num_heads=3, pretrained_window_size=(0, 0)).eval()
    ours.load_state_dict(timm_attn.state_dict())
    ours.__class__ = _SdpaWindowAttention
    mask = torch.zeros(2, 16, 16)
    mask[1, :8, 8:] = mask[1, 8:, :8] = -100.0
    return timm_attn, ours, mask


def _timm_bias(attn) -> torch.Tensor:
    table = attn.cpb_mlp(attn.relative_coords_table).view(-1, attn.num_heads)
    bias = table[attn.relative_position_index.view(-1)].view(16, 16, -1).permute(2, 0, 1)
    return 16 * torch.sigmoid(bias)


def test_swin_window_attention_matches_timm_and_caches_its_bias():
    timm_attn, ours, mask = _swin_attention()
    x = torch.randn(4, 16, 48)  # 2 images x 2 windows
    with torch.inference_mode():
        for m in (None, mask):
            assert _close(ours(x, m), timm_attn(x, m))
        bias = ours.attention_bias(mask)
        assert bias.shape == (2, 3, 16, 16)
        assert _close(bias, _timm_bias(ours).unsqueeze(0) + mask.unsqueeze(1), rel=1e-6)
        assert ours.attention_bias(mask) is bias  # served from the cache
        assert ours.attention_bias(None) is not bias
        assert _close(ours(x[:2], mask), timm_attn(x[:2], mask))  # one image: mask broadcast directly


def test_swin_attention_cache_follows_weight_changes():
    timm_attn, ours, mask = _swin_attention()
    x = torch.randn(2, 16, 48)
    with torch.inference_mode():
        before = ours.attention_bias(mask)
    with torch.no_grad():  # in-place edits under no_grad bump the version counters
        for attn in (ours, timm_attn):
            attn.cpb_mlp[0].weight.add_(0.5)
            attn.logit_scale.sub_(0.7)
            attn.q_bias.add_(1.0)
    with torch.inference_mode():
        after = ours.attention_bias(mask)
        assert after is not before and not _close(after, before, rel=1e-3)
        assert _close(ours(x, mask), timm_attn(x, mask))
    _, fresh, _ = _swin_attention(seed=5)
    ours.load_state_dict(fresh.state_dict())
    with torch.inference_mode():
        assert _close(ours(x, mask), fresh(x, mask))
    ours.cpb_mlp[2].weight.data.mul_(3.0)  # bypasses version tracking: clear_cache() is the documented remedy
    ours.clear_cache()
    with torch.inference_mode():
        assert _close(ours.attention_bias(None), _timm_bias(ours).unsqueeze(0), rel=1e-6)


def test_swin_attention_does_not_cache_with_autograd():
    timm_attn, ours, mask = _swin_attention()
    ours.clear_cache()
    x = torch.randn(2, 16, 48)
    out = ours(x, mask)
    assert ours.__dict__["_infer_cache"] == {}  # nothing stored while autograd is on
    out.square().sum().backward()
    timm_attn(x, mask).square().sum().backward()
    for a, b in zip(ours.cpb_mlp.parameters(), timm_attn.cpb_mlp.parameters()):
        assert a.grad is not None and _close(a.grad, b.grad, rel=1e-4)


def test_swin_window_permutation_matches_roll_and_partition():
    from timm.models.swin_transformer_v2 import window_partition, window_reverse

    backbone = build_network("midas", "dpt_swin2_tiny_256", device="meta").backbone
    x = torch.randn(2, 8, 12, 5)
    for shift in [(0, 0), (2, 2), (1, 3)]:
        gather, scatter = backbone.window_permutation(2, 8, 12, (4, 4), shift, "cpu")
        rolled = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        assert torch.equal(x.reshape(-1, 5)[gather], window_partition(rolled, (4, 4)).reshape(-1, 5))
        windows = torch.randn(2 * 6, 4, 4, 5)
        expect = torch.roll(window_reverse(windows, (4, 4), (8, 12)), shifts=shift, dims=(1, 2))
        assert torch.equal(windows.reshape(-1, 5)[scatter], expect.reshape(-1, 5))


def test_swin_backbone_fast_path_matches_timm_blocks():
    from immersivedepth.depth.models.midas import Swin2Backbone

    torch.manual_seed(6)
    cfg = MIDAS_CONFIGS["dpt_swin2_tiny_256"]
    fast, plain = Swin2Backbone(cfg).eval(), Swin2Backbone(cfg, fast_attention=False).eval()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.05 * torch.randn_like(p))  # off the init values (e.g. non-zero biases)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 256, 256)  # batches of several images: test_swin_window_attention_matches_timm...
    with torch.inference_mode():
        taps, _, grid = fast(x)
        ref, _, ref_grid = plain(x)
        again, _, _ = fast(x)  # second call: every cache hit
    assert grid == ref_grid == (64, 64)
    for a, b, c in zip(taps, ref, again):
        assert a.shape == b.shape and _close(a, b, rel=1e-4) and torch.equal(a, c)


def test_tensor_snapshot_tracks_identity_and_versions():
    from immersivedepth.depth.models.dpt_head import TensorSnapshot

    a, b = torch.ones(3), torch.ones(3)
    snap = TensorSnapshot(a, None)
    assert snap.valid and snap.matches(a, None)
    assert not snap.matches(b, None)  # an equal-valued but different tensor
    assert not snap.matches(a, a) and not snap.matches(a)
    with torch.no_grad():
        a.add_(1.0)
    assert not snap.matches(a, None)  # in-place edit
    snap = TensorSnapshot(a)
    a.data.add_(1.0)
    assert snap.matches(a)  # .data edits are invisible: the documented clear_cache() case
    with torch.inference_mode():
        c = torch.ones(2)
    assert not TensorSnapshot(c).valid and not TensorSnapshot(c).matches(c)
