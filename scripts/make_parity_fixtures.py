#!/usr/bin/env python
"""Regenerate tests/fixtures/parity/*.npz: reference outputs of the official Depth Anything V2 / MiDaS code.

For each case this script (run with the project's interpreter)

1. builds the deterministic official-layout state dict
   (:func:`immersivedepth.depth.models.synthetic.deterministic_state_dict`) and saves it with ``torch.save``
   under the official file name, like the released files;
2. runs the *reference implementation* on two small uint8 images in a separate virtualenv (itself, with
   ``--worker``): Depth Anything V2 from PyPI ``jkp-depth-anything-v2`` (``DepthAnythingV2.infer_image`` on
   the BGR image, as ``run.py`` reads it with ``cv2.imread``); MiDaS v3.1 from PyPI ``atoolkitdpt`` with
   timm 0.6.13 (``load_model`` + transform + ``run.py``'s ``process``). The reference loads the file with
   ``load_state_dict(strict=True)``, so the exported layout is checked against the reference model too;
3. writes ``<case>.npz`` with the images, the reference outputs (float32 at image size) and metadata
   (variant, seed, state-dict digest, package versions).

Usage::

    python scripts/make_parity_fixtures.py                 # the default (fast) cases
    python scripts/make_parity_fixtures.py --cases all     # also the heavy ones (tests marked slow)
    python scripts/make_parity_fixtures.py --cases dav2_vits midas_swin2_t256

The virtualenvs (outside the repo)::

    python -m venv --system-site-packages /work/venvs/dav2ref
    /work/venvs/dav2ref/bin/pip install --no-deps jkp-depth-anything-v2
    python -m venv --system-site-packages /work/venvs/midasref
    /work/venvs/midasref/bin/pip install --no-deps atoolkitdpt timm==0.6.13

(``--system-site-packages`` reuses the installed torch 2.14.1 / torchvision 0.29.1 / opencv; timm 0.6.13
shadows timm 1.0 inside midasref.) Override their interpreters with ``--dav2-python`` / ``--midas-python``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DIR = REPO / "tests" / "fixtures" / "parity"
DEFAULT_PY = {"dav2": "/work/venvs/dav2ref/bin/python", "midas": "/work/venvs/midasref/bin/python"}
SEED = 0
IMAGE_SIZES = ((64, 64), (50, 70))  # (H, W): square (network at its native size) and non-square

# name -> (family, variant, input_size or None for the official default, heavy?)
CASES: dict[str, tuple[str, str, int | None, bool]] = {
    "dav2_vits": ("dav2", "vits", None, False),
    "dav2_vitl_s140": ("dav2", "vitl", 140, False),
    "dav2_vitl": ("dav2", "vitl", None, True),
    "dav2_vitb": ("dav2", "vitb", None, True),
    "midas_beit_b384": ("midas", "dpt_beit_base_384", None, False),
    "midas_swin2_t256": ("midas", "dpt_swin2_tiny_256", None, False),
    "midas_swin2_b384": ("midas", "dpt_swin2_base_384", None, True),
    "midas_dpt_l384": ("midas", "dpt_large_384", None, True),
    "midas_dpt_hybrid384": ("midas", "dpt_hybrid_384", None, True),
    "midas_beit_l384": ("midas", "dpt_beit_large_384", None, True),
}

DAV2_MODEL_CONFIGS = {  # run.py's model_configs of the official repository
    "vits": {"encoder": "vits", "features": 64, "out_channels": [48, 96, 192, 384]},
    "vitb": {"encoder": "vitb", "features": 128, "out_channels": [96, 192, 384, 768]},
    "vitl": {"encoder": "vitl", "features": 256, "out_channels": [256, 512, 1024, 1024]},
    "vitg": {"encoder": "vitg", "features": 384, "out_channels": [1536, 1536, 1536, 1536]},
}


def make_image(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic RGB uint8 test image (H,W,3): smooth colour blobs plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        for _ in range(4):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            s = rng.uniform(0.15, 0.5) * max(height, width)
            img[..., c] += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    img = img / img.max() * 0.85 + 0.05 + rng.normal(0, 0.03, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# worker side: runs inside the reference virtualenv, imports only the reference packages
# ---------------------------------------------------------------------------------------------------------
def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _worker_dav2(checkpoint: str, variant: str, input_size: int, images: list[np.ndarray]):
    import torch
    from depth_anything_v2.dpt import DepthAnythingV2

    model = DepthAnythingV2(**DAV2_MODEL_CONFIGS[variant])
    model.load_state_dict(torch.load(checkpoint, map_location="cpu"), strict=True)
    model = model.to("cpu").eval()
    outs = [model.infer_image(np.ascontiguousarray(rgb[..., ::-1]), input_size) for rgb in images]  # BGR like imread
    meta = {"reference": "jkp-depth-anything-v2", "reference_version": _version("jkp-depth-anything-v2"),
            "reference_call": f"DepthAnythingV2(**model_configs['{variant}']).infer_image(bgr, {input_size})"}
    return outs, meta


def _worker_midas(checkpoint: str, variant: str, input_size: int | None, images: list[np.ndarray]):
    import timm
    import torch
    from atoolkitdpt.midas.model_loader import load_model

    model, transform, net_w, net_h = load_model(torch.device("cpu"), checkpoint, variant, optimize=False,
                                                height=input_size, square=False)
    outs = []
    for rgb in images:
        original_image_rgb = rgb / 255.0  # utils.read_image: cv2.imread -> BGR2RGB -> / 255.0
        image = transform({"image": original_image_rgb})["image"]
        target_size = original_image_rgb.shape[1::-1]
        with torch.no_grad():  # run.py: process(...)
            sample = torch.from_numpy(image).to(torch.device("cpu")).unsqueeze(0)
            prediction = model.forward(sample)
            prediction = (torch.nn.functional.interpolate(prediction.unsqueeze(1), size=target_size[::-1],
                                                          mode="bicubic", align_corners=False)
                          .squeeze().cpu().numpy())
        outs.append(prediction)
    meta = {"reference": "atoolkitdpt", "reference_version": _version("atoolkitdpt"),
            "reference_timm": timm.__version__,
            "reference_call": f"midas.model_loader.load_model(cpu, path, '{variant}', optimize=False, "
                              f"height={input_size}, square=False) + run.py process()"}
    return outs, meta


def worker(args) -> None:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = np.load(args.images)
    images = [data[f"image_{i}"] for i in range(int(data["count"]))]
    if args.family == "dav2":
        outs, meta = _worker_dav2(args.checkpoint, args.variant, args.input_size, images)
    else:
        outs, meta = _worker_midas(args.checkpoint, args.variant, args.input_size, images)
    meta["reference_torch"] = torch.__version__
    arrays = {f"ref_{i}": np.asarray(o, dtype=np.float32) for i, o in enumerate(outs)}
    np.savez(args.out, meta=json.dumps(meta), **arrays)


# ---------------------------------------------------------------------------------------------------------
# driver side: project interpreter
# ---------------------------------------------------------------------------------------------------------
def make_case(name: str, python: dict[str, str], out_dir: Path, workdir: Path) -> Path:
    sys.path.insert(0, str(REPO))
    import torch

    from immersivedepth.depth.models.presets import preset_for_variant
    from immersivedepth.depth.models.synthetic import deterministic_state_dict, state_dict_digest
    from immersivedepth.io import atomic_path

    family, variant, input_size, _ = CASES[name]
    py = python[family]
    if not Path(py).is_file():
        raise FileNotFoundError(f"reference interpreter {py} for {family} not found; create the virtualenv "
                                f"(see this script's docstring) or pass --{family}-python")
    preset = preset_for_variant(family, variant)
    sd = deterministic_state_dict(family, variant, SEED)
    digest = state_dict_digest(sd)
    ckpt = workdir / preset.filename
    torch.save(sd, ckpt)
    del sd
    images = [make_image(h, w, seed=100 + i) for i, (h, w) in enumerate(IMAGE_SIZES)]
    in_npz, out_npz = workdir / f"{name}_in.npz", workdir / f"{name}_out.npz"
    np.savez(in_npz, count=len(images), **{f"image_{i}": im for i, im in enumerate(images)})
    cmd = [py, str(Path(__file__).resolve()), "--worker", "--family", family, "--variant", variant,
           "--checkpoint", str(ckpt), "--images", str(in_npz), "--out", str(out_npz)]
    if input_size is not None:
        cmd += ["--input-size", str(input_size)]
    elif family == "dav2":
        cmd += ["--input-size", "518"]
    print(f"[{name}] running the reference: {' '.join(cmd[:2])} --worker ...", flush=True)
    subprocess.run(cmd, check=True)
    res = np.load(out_npz)
    meta = json.loads(str(res["meta"]))
    meta.update(case=name, family=family, variant=variant, preset=preset.name, filename=preset.filename,
                input_size=input_size, seed=SEED, state_dict_digest=digest, image_sizes=IMAGE_SIZES,
                generated_with=f"torch {torch.__version__}")
    arrays = {}
    for i, im in enumerate(images):
        arrays[f"image_{i}"] = im
        arrays[f"ref_{i}"] = res[f"ref_{i}"].astype(np.float32)
    out = out_dir / f"{name}.npz"
    with atomic_path(out) as tmp:
        np.savez_compressed(tmp, meta=json.dumps(meta), count=len(images), **arrays)
    ckpt.unlink()
    print(f"[{name}] wrote {out} ({out.stat().st_size} bytes); ranges "
          + ", ".join(f"{arrays[f'ref_{i}'].min():.4g}..{arrays[f'ref_{i}'].max():.4g}" for i in range(len(images))),
          flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=None,
                    help="case names, or 'all' (default: the fast cases the default test suite checks)")
    ap.add_argument("--out-dir", type=Path, default=FIXTURE_DIR)
    ap.add_argument("--dav2-python", default=DEFAULT_PY["dav2"])
    ap.add_argument("--midas-python", default=DEFAULT_PY["midas"])
    # worker mode (inside a reference virtualenv)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--family")
    ap.add_argument("--variant")
    ap.add_argument("--checkpoint")
    ap.add_argument("--images")
    ap.add_argument("--out")
    ap.add_argument("--input-size", type=int, default=None)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.cases is None:
        names = [n for n, c in CASES.items() if not c[3]]
    elif args.cases == ["all"]:
        names = list(CASES)
    else:
        unknown = [n for n in args.cases if n not in CASES]
        if unknown:
            ap.error(f"unknown cases {unknown}; known: {sorted(CASES)}")
        names = args.cases
    python = {"dav2": args.dav2_python, "midas": args.midas_python}
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        for name in names:
            make_case(name, python, args.out_dir, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
