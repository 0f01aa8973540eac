#!/usr/bin/env python
"""CPU speed of our depth networks vs the reference implementations, same weights, same run.

    python benchmarks/bench_depth_models.py [--threads 2] [--repeats 3] [--batches 1 4] [--tiles 20]

Prints a markdown table: ms per tile for Depth Anything V2 vits at 518x518 and MiDaS dpt_swin2_tiny_256 at
256x256 (network forward on normalised tiles, batch sizes as given), ours vs the reference code
(jkp-depth-anything-v2 / atoolkitdpt + timm 0.6.13, run in their virtualenvs on the same deterministic
weights and inputs; the max output difference is reported so "identical output" is checked), and the
whole 20-tile pass of the 360 pipeline's depth-model call (``model(tiles)`` incl. pre/post-processing).
Reference rows are skipped with a message when a virtualenv is missing. Weights: the deterministic
stand-ins of :mod:`immersivedepth.depth.models.synthetic` (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PY = {"dav2": "/work/venvs/dav2ref/bin/python", "midas": "/work/venvs/midasref/bin/python"}
CASES = {  # name -> (family, variant, network input side)
    "dav2_vits": ("dav2", "vits", 518),
    "midas_swin2_t256": ("midas", "dpt_swin2_tiny_256", 256),
}


def _inputs(side: int, batch: int) -> np.ndarray:
    rng = np.random.default_rng(batch)
    return rng.standard_normal((batch, 3, side, side)).astype(np.float32)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ---------------------------------------------------------------------------------------------------------
# reference worker (inside the virtualenv; imports only the reference code)
# ---------------------------------------------------------------------------------------------------------
def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.family == "dav2":
        from depth_anything_v2.dpt import DepthAnythingV2

        cfg = {"vits": dict(encoder="vits", features=64, out_channels=[48, 96, 192, 384])}[args.variant]
        model = DepthAnythingV2(**cfg)
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
    else:
        from atoolkitdpt.midas.model_loader import load_model

        model, *_ = load_model(torch.device("cpu"), args.checkpoint, args.variant, optimize=False)
    model.eval()
    res = {}
    outs = {}
    for b in args.batches:
        x = torch.from_numpy(_inputs(args.side, b))
        with torch.no_grad():
            dt = _time(partial(model, x), args.repeats)
            outs[f"out_{b}"] = model(x).numpy()
        res[str(b)] = dt / b * 1000
    np.savez(args.out, timings=json.dumps(res), **outs)


# ---------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--tiles", type=int, default=20, help="tiles of the 360 pass (icosahedron: 20)")
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--dav2-python", default=DEFAULT_PY["dav2"])
    ap.add_argument("--midas-python", default=DEFAULT_PY["midas"])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--family")
    ap.add_argument("--variant")
    ap.add_argument("--checkpoint")
    ap.add_argument("--side", type=int)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    sys.path.insert(0, str(REPO))
    import torch

    from immersivedepth.depth.models import load_depth_model
    from immersivedepth.depth.models.presets import preset_for_variant
    from immersivedepth.depth.models.synthetic import deterministic_state_dict

    torch.set_num_threads(args.threads)
    python = {"dav2": args.dav2_python, "midas": args.midas_python}
    rows = []
    passes = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in args.cases:
            family, variant, side = CASES[name]
            ckpt = Path(tmp) / preset_for_variant(family, variant).filename
            torch.save(deterministic_state_dict(family, variant), ckpt)
            model = load_depth_model(ckpt, max_batch=max(args.batches))
            ours, ours_out = {}, {}
            for b in args.batches:
                x = torch.from_numpy(_inputs(side, b))
                with torch.inference_mode():
                    ours[b] = _time(partial(model.net, x), args.repeats) / b * 1000
                    ours_out[b] = model.net(x).numpy()
            ref, ref_note = {}, ""
            py = python[family]
            if Path(py).is_file():
                out = Path(tmp) / f"{name}_ref.npz"
                cmd = [py, str(Path(__file__).resolve()), "--worker", "--family", family, "--variant", variant,
                       "--checkpoint", str(ckpt), "--side", str(side), "--out", str(out), "--threads",
                       str(args.threads), "--repeats", str(args.repeats), "--batches", *map(str, args.batches)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                r = np.load(out)
                t = json.loads(str(r["timings"]))
                for b in args.batches:
                    o = r[f"out_{b}"]
                    span = float(o.max() - o.min()) or 1.0
                    ref[b] = (t[str(b)], float(np.abs(o - ours_out[b]).max()) / span)
            else:
                ref_note = f"reference virtualenv {py} missing - see scripts/make_parity_fixtures.py"
                print(f"skipping the reference rows of {name}: {ref_note}", file=sys.stderr)
            for b in args.batches:
                if b in ref:
                    rt, err = ref[b]
                    rows.append(f"| {name} | {side}x{side} | {b} | {ours[b]:.0f} | {rt:.0f} | {ours[b] / rt:.2f} "
                                f"| {err:.1e} |")
                else:
                    rows.append(f"| {name} | {side}x{side} | {b} | {ours[b]:.0f} | n/a | n/a | n/a |")
            # the 360 pass: model(tiles) on `tiles` tiles incl. resize/normalise/resize-back
            tiles = torch.rand(args.tiles, 3, side, side)
            dt = _time(partial(model, tiles), max(1, args.repeats - 2))
            passes.append(f"| {name} | {args.tiles} x {side}x{side} | {model.max_batch} | {dt:.1f} |")
    print(f"\nCPU, torch {torch.__version__}, {args.threads} threads, best of {args.repeats}; "
          "network forward on normalised tiles\n")
    print("| model | input | batch | ours ms/tile | reference ms/tile | ours/ref | max diff (of range) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| model | 360 pass | batch | seconds |")
    print("|---|---|---|---|")
    print("\n".join(passes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
