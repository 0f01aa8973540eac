"""CPU speed of the radiance field's hot path: hash encoding + 64-wide MLP, forward + backward.

    python benchmarks/bench_field_speed.py [--n 131072] [--repeats 5] [--threads 2] [--compile]

Runs, side by side in one process and interleaved repeat by repeat (so machine load hits every row alike):
  * naive:   ../shared/bench/naive_hashgrid.py (the baseline of the speed target; skipped if absent)
  * naive + torch.compile (only with --compile; the first call compiles for ~20 s or more)
  * ours, torch backends (pure PyTorch reference encoding + plain nn.Linear MLP)
  * ours, C++ encoding + torch MLP
  * ours, C++ encoding + C++ fused MLP (the default CPU path, backend="auto")
Every row uses the same configuration: 16 levels x 2 features, 2^19 entries per level, resolutions 16..2048,
MLP 32 -> 64 -> 64 -> 4 (ReLU), loss = mean(out^2), gradients set to None between steps (as
``optimizer.zero_grad()`` does). Prints a markdown table: samples/s, ratio to the naive baseline, and rays/s
at 64 and 16 samples per ray (rays/s = samples/s / samples per ray).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from immersivedepth.field.encodings import HashGridEncoding, per_level_scale_for  # noqa: E402
from immersivedepth.field.mlp import FusedMLP  # noqa: E402

NAIVE_PATH = REPO.parent / "shared" / "bench" / "naive_hashgrid.py"
CONFIG = dict(n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16, finest_resolution=2048)
MLP_WIDTH, MLP_DEPTH, MLP_OUT = 64, 2, 4
SAMPLES_PER_RAY = (64, 16)


def load_naive(path: Path = NAIVE_PATH):
    """Import the naive baseline module, or None (with the reason) when the file is absent."""
    if not path.is_file():
        return None, f"naive baseline not found at {path} (it lives outside the repository); row skipped"
    spec = importlib.util.spec_from_file_location("naive_hashgrid", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, None


def make_naive_step(naive, x, compile_it=False):
    res, tables, mlp, table_size = naive.make(
        L=CONFIG["n_levels"], F=CONFIG["n_features_per_level"], T=2 ** CONFIG["log2_hashmap_size"],
        base=CONFIG["base_resolution"], finest=CONFIG["finest_resolution"],
    )
    params = [tables, *mlp.parameters()]

    def fwd(xx):
        return mlp(naive.encode(xx, res, tables, table_size))

    if compile_it:
        fwd = torch.compile(fwd)

    def step():
        out = fwd(x)
        out.square().mean().backward()

    return step, params


def make_our_step(x, enc_backend, mlp_backend):
    c = CONFIG
    per_level_scale = per_level_scale_for(c["base_resolution"], c["finest_resolution"], c["n_levels"])
    enc = HashGridEncoding(
        3, c["n_levels"], c["n_features_per_level"], c["log2_hashmap_size"], c["base_resolution"], per_level_scale,
        backend=enc_backend,
    )
    mlp = FusedMLP(enc.n_output_dims, MLP_OUT, MLP_WIDTH, MLP_DEPTH, backend=mlp_backend)
    used = (enc.resolve_backend(x), mlp.resolve_backend(x))
    params = [*enc.parameters(), *mlp.parameters()]

    def step():
        out = mlp(enc(x))
        out.square().mean().backward()

    return step, params, used


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=131072, help="samples per step (default 131072)")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per row (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per row before timing")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the naive code")
    ap.add_argument("--skip-torch", action="store_true", help="skip our pure-PyTorch reference row")
    ap.add_argument("--consecutive", action="store_true",
                    help="time each row's repeats back to back (as in a training loop) instead of interleaving "
                         "the rows repeat by repeat (which shares load spikes but lets one row's memory churn "
                         "slow the next)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeats < 1 or args.threads < 1:
        ap.error("--n, --repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.n, 3)

    rows = []  # (name, step, params)
    naive, why = load_naive()
    if naive is None:
        print(f"note: {why}")
    else:
        step, params = make_naive_step(naive, x)
        rows.append(("naive torch (shared/bench/naive_hashgrid.py)", step, params))
        if args.compile:
            step, params = make_naive_step(naive, x, compile_it=True)
            rows.append(("naive + torch.compile", step, params))
    variants = [("torch", "torch", "ours: torch encoding + torch MLP")] if not args.skip_torch else []
    variants += [("cpu", "torch", "ours: C++ encoding + torch MLP"), ("auto", "auto", "ours: default (auto)")]
    for enc_b, mlp_b, label in variants:
        step, params, used = make_our_step(x, enc_b, mlp_b)
        rows.append((f"{label} [{used[0]} enc, {used[1]} mlp]", step, params))

    def run(step, params):
        t = time.perf_counter()
        step()
        dt = time.perf_counter() - t
        for p in params:
            p.grad = None
        return dt

    for name, step, params in rows:
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            run(step, params)
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    times = {name: [] for name, _, _ in rows}
    if args.consecutive:
        for name, step, params in rows:
            times[name] = [run(step, params) for _ in range(args.repeats)]
    else:
        for _ in range(args.repeats):
            for name, step, params in rows:  # interleaved: load spikes hit all rows alike
                times[name].append(run(step, params))

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"\nN={args.n}, threads={torch.get_num_threads()}, repeats={args.repeats} (median, "
        f"{'consecutive' if args.consecutive else 'interleaved'}), torch {torch.__version__}, "
        f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}\n"
    )
    base = statistics.median(times[rows[0][0]]) if naive is not None else None
    head = ["backend", "ms/step", "samples/s fwd+bwd", "vs naive"] + [f"rays/s @{s} spr" for s in SAMPLES_PER_RAY]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * len(head)) + "|")
    for name, _, _ in rows:
        med = statistics.median(times[name])
        sps = args.n / med
        ratio = f"{base / med:.1f}x" if base is not None else "n/a"
        rays = [f"{sps / s:,.0f}" for s in SAMPLES_PER_RAY]
        print(f"| {name} | {med * 1e3:.1f} | {sps:,.0f} | {ratio} | " + " | ".join(rays) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
