"""The optional Stable-Diffusion tile inpainter: its plumbing with a tiny randomly initialised pipeline built from
configs and saved locally (nothing downloaded), and its one-line errors. Skipped only without diffusers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from immersivedepth.errors import ConfigError
from immersivedepth.inpaint.diffusion import REQUIRED_PARTS, TileDiffusionInpainter, check_model_dir


def test_model_dir_errors_say_what_is_expected(tmp_path):
    with pytest.raises(ConfigError, match=r"inpaint.model_dir=.*nowhere does not exist; expected a local diffusers"):
        check_model_dir(tmp_path / "nowhere")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text("{}")
    (tmp_path / "m" / "unet").mkdir()
    with pytest.raises(ConfigError, match="is incomplete: vae, text_encoder, tokenizer, scheduler missing"):
        check_model_dir(tmp_path / "m")
    with pytest.raises(ConfigError, match="inpaint.model_dir is not set"):
        check_model_dir(None)


def byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE: printable Latin-1 bytes are themselves, the others are shifted
    past 255 in order (GPT-2's published convention, which CLIP's tokenizer uses)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")  # the optional extra itself, not the project's code
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_sd")
    # a byte-level BPE vocabulary without merges: every byte is a token (enough to tokenize any prompt)
    chars = byte_level_alphabet()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tok_dir = root / "tok_src"
    tok_dir.mkdir()
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                                           model_max_length=77)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=len(vocab), max_position_embeddings=77))
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32)
    vae = diffusers.AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32)
    pipe = diffusers.StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=diffusers.DDIMScheduler(steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    out = root / "model"
    pipe.save_pretrained(str(out))
    return out


@pytest.mark.slow  # builds and runs a (tiny) diffusion pipeline: ~1 min on a busy 2-core machine
def test_tile_inpainter_plumbing(tiny_pipeline_dir):
    assert all((tiny_pipeline_dir / n).exists() for n in REQUIRED_PARTS)
    h, w = 24, 48
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.2, 0.8, (h, w, 3)).astype(np.float32)
    mask = np.zeros((h, w), bool)
    mask[8:14, 30:40] = True
    dist = np.full((h, w), 2.0)
    inp = TileDiffusionInpainter(tiny_pipeline_dir, prompt="a room", steps=2, tile_size=32, seed=3)
    out = inp(rgb, mask, dist)
    assert out.shape == (h, w, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out[~mask], rgb[~mask])
    assert np.abs(out[mask] - rgb[mask]).max() > 1e-3  # the hole was actually repainted
    again = TileDiffusionInpainter(tiny_pipeline_dir, prompt="a room", steps=2, tile_size=32, seed=3)(rgb, mask, dist)
    np.testing.assert_allclose(again, out, atol=1e-6)  # seeded per tile: deterministic


def test_tile_size_must_suit_the_latents(tmp_path):
    pytest.importorskip("diffusers")  # the optional extra itself
    for n in REQUIRED_PARTS:
        (tmp_path / n).mkdir()
    with pytest.raises(ConfigError, match="tile_size=30 must be a multiple of 8"):
        TileDiffusionInpainter(tmp_path, tile_size=30)
