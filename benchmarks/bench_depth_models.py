#!/usr/bin/env python
"""CPU speed of our depth networks vs the reference implementations, same weights, same run.

    python benchmarks/bench_depth_models.py [--threads 2] [--repeats 3] [--rounds 3] [--batches 1 4] [--tiles 20]

Prints a markdown table: ms per tile for Depth Anything V2 vits at 518x518 and MiDaS dpt_swin2_tiny_256 at
256x256 (network forward on normalised tiles, batch sizes as given), ours vs the reference code
(jkp-depth-anything-v2 / atoolkitdpt + timm 0.6.13, run in their virtualenvs on the same deterministic
weights and inputs; the max output difference is reported so "identical output" is checked), and the
whole 20-tile pass of the 360 pipeline's depth-model call (``model(tiles)`` incl. pre/post-processing).
The reference runs in a persistent worker process; ours and the reference are timed in alternating rounds
(``--rounds`` x best of ``--repeats`` each), so load from other processes hits both alike; each reported time
is the best over all rounds. Reference rows are skipped with a message when a virtualenv is missing.
Weights: the deterministic stand-ins of :mod:`immersivedepth.depth.models.synthetic` (speed does not depend
on the values).
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
    """Build the reference model, then serve ``time <batch>`` / ``save`` / ``quit`` commands on stdin."""
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
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "time":
            b = int(cmd[1])
            x = torch.from_numpy(_inputs(args.side, b))
            with torch.no_grad():
                dt = _time(partial(model, x), args.repeats)
            print(json.dumps({"ms_per_tile": dt / b * 1000}), flush=True)
        elif cmd[0] == "save":
            outs = {}
            with torch.no_grad():
                for b in args.batches:
                    outs[f"out_{b}"] = model(torch.from_numpy(_inputs(args.side, b))).numpy()
            np.savez(args.out, **outs)
            print(json.dumps({"saved": args.out}), flush=True)


class _RefWorker:
    """The reference worker process (its stdout carries only the protocol replies)."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self._expect("ready")

    def _expect(self, prefix: str) -> str:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"reference worker exited (code {self.proc.wait()}) before answering")
            if line.startswith(prefix):
                return line

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self._expect("{"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


# ---------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per round (best is kept)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating ours/reference timing rounds")
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
            inputs = {b: torch.from_numpy(_inputs(side, b)) for b in args.batches}
            ours = {b: float("inf") for b in args.batches}
            ref, ref_note = {}, ""
            py = python[family]
            worker_proc = None
            if Path(py).is_file():
                out = Path(tmp) / f"{name}_ref.npz"
                worker_proc = _RefWorker([
                    py, str(Path(__file__).resolve()), "--worker", "--family", family, "--variant", variant,
                    "--checkpoint", str(ckpt), "--side", str(side), "--out", str(out), "--threads",
                    str(args.threads), "--repeats", str(args.repeats), "--batches", *map(str, args.batches)])
                ref_ms = {b: float("inf") for b in args.batches}
            else:
                ref_note = f"reference virtualenv {py} missing - see scripts/make_parity_fixtures.py"
                print(f"skipping the reference rows of {name}: {ref_note}", file=sys.stderr)
            try:
                for _ in range(args.rounds):  # alternate ours / reference so both see the same load
                    for b in args.batches:
                        with torch.inference_mode():
                            ours[b] = min(ours[b], _time(partial(model.net, inputs[b]), args.repeats) / b * 1000)
                        if worker_proc is not None:
                            ref_ms[b] = min(ref_ms[b], worker_proc.ask(f"time {b}")["ms_per_tile"])
                with torch.inference_mode():
                    ours_out = {b: model.net(inputs[b]).numpy() for b in args.batches}
                if worker_proc is not None:
                    r = np.load(worker_proc.ask("save")["saved"])
                    for b in args.batches:
                        o = r[f"out_{b}"]
                        span = float(o.max() - o.min()) or 1.0
                        ref[b] = (ref_ms[b], float(np.abs(o - ours_out[b]).max()) / span)
            finally:
                if worker_proc is not None:
                    worker_proc.close()
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
    print(f"\nCPU, torch {torch.__version__}, {args.threads} threads, best of {args.rounds} alternating rounds x "
          f"{args.repeats}; network forward on normalised tiles\n")
    print("| model | input | batch | ours ms/tile | reference ms/tile | ours/ref | max diff (of range) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| model | 360 pass | batch | seconds |")
    print("|---|---|---|---|")
    print("\n".join(passes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
