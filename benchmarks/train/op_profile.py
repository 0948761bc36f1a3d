"""Where a tune step's time goes, op by op: XLA's own per-thunk trace of the jitted forward + backward.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/train/op_profile.py [--batch 4 --seq-len 128 --rank 4 --qv]

Defaults: the tune stage's shape, rank and LoRA targets from params.yaml; `--qv` puts LoRA on q and v
only, as the train bench does.

Builds the loss of alignflow's SFT model on one real packed batch (the rows `run.py` uses), jits its
value and gradient with respect to the LoRA weights, runs it twice under `jax.profiler` and reads the
perfetto trace: XLA:CPU records one event per executed thunk (a fusion, a dot, a copy). Each thunk is
mapped to its HLO instruction's `op_name` (the Keras layer and JAX primitive it came from) and the
FLOPs of the dots it holds; the table groups the 30 transformer layers together. Run it on a quiet
machine: under load every op slows, and memory-bound ops slow more than dots.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import run as bench  # noqa: E402
from measure_alignflow import stateless_loss  # noqa: E402

_SHAPE = re.compile(r"(?:f32|bf16|s32|pred)\[([\d,]*)\]")


def main() -> None:
    from alignflow.config import load

    tune = load(bench.REPO / "params.yaml").tune
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=tune.batch_size)
    ap.add_argument("--seq-len", type=int, default=tune.seq_len)
    ap.add_argument("--rank", type=int, default=tune.lora_rank)
    ap.add_argument("--qv", action="store_true", help="LoRA on q and v only (default: params.yaml tune.lora_targets)")
    ap.add_argument("--top", type=int, default=30, help="rows of the table")
    args = ap.parse_args()

    import jax
    import keras

    from alignflow.config import ModelParams, TuneParams
    from alignflow.model import sft, training
    from alignflow.model.base import load_model

    work = Path(tempfile.mkdtemp(prefix="op-profile-"))
    bench.prepare_batches(work / "rows.npz", work / "packed.npz", 1, args.batch, args.seq_len, seed=0)
    d = np.load(work / "packed.npz")
    x = {"token_ids": d["token_ids"][0], "segment_ids": d["segment_ids"][0]}
    y, w = d["y"][0], d["w"][0]
    backbone = load_model(ModelParams()).causal_lm.backbone
    keras.utils.set_random_seed(0)
    sft.enable_lora(backbone, args.rank, targets=("query", "value") if args.qv else tune.lora_targets)
    lm = training.compile_for_sft(backbone, TuneParams(seq_len=args.seq_len, batch_size=args.batch,
                                                       lora_rank=args.rank, max_steps=2, warmup_steps=1), 2)
    lm.train_on_batch(x, y, sample_weight=w)  # builds the model and the optimizer's variables
    loss_fn, tv, ntv, _ = stateless_loss(lm)
    step = jax.jit(jax.value_and_grad(loss_fn))
    hlo = step.lower(tv, ntv, x, y, w).compile().as_text()
    for _ in range(2):  # compile and warm up
        jax.block_until_ready(step(tv, ntv, x, y, w))
    trace_dir = work / "trace"
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    runs = 2
    for _ in range(runs):
        jax.block_until_ready(step(tv, ntv, x, y, w))
    jax.profiler.stop_trace()
    events = json.load(gzip.open(next(trace_dir.rglob("perfetto_trace.json.gz"))))["traceEvents"]
    print_table(thunk_ms(events, runs), hlo, args.top)


def thunk_ms(events: list[dict], runs: int) -> dict[str, float]:
    """Milliseconds per step of each executed thunk (leaf events only: not the executor's own spans)."""
    out: dict[str, float] = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and not re.match(r"ThunkExecutor|\$|SlinkyThreadPool|CommonPjRt|Pjit|Handle", name):
            out[name] += e.get("dur", 0) / 1e3 / runs
    return out


def print_table(ms: dict[str, float], hlo: str, top: int) -> None:
    computations = dict(re.findall(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S))
    instructions = dict(re.findall(r"\n\s*(?:ROOT )?%?([\w.\-]+) = ([^\n]*)", hlo))
    groups = collections.defaultdict(lambda: [0.0, 0, 0.0])
    for name, t in ms.items():
        line = instructions.get(name, "")
        op = re.search(r'op_name="([^"]*)"', line)
        called = re.search(r"calls=%?([\w.\-]+)", line)
        flops = dot_flops(computations.get(called.group(1), "")) if called else 0.0
        key = (re.sub(r"\.\d+$", "", name), re.sub(r"\{.*", "", line.split(" ")[0]),
               re.sub(r"transformer_layer_\d+", "layer_*", op.group(1) if op else "?"))
        g = groups[key]
        g[0], g[1], g[2] = g[0] + t, g[1] + 1, g[2] + flops
    total = sum(ms.values())
    print(f"{total:.0f} ms a step in {len(ms)} thunks, {sum(g[2] for g in groups.values()) / 1e9:.1f} GFLOP in dots\n")
    print("| ms | share | thunks | GFLOP | GFLOP/s | kind | shape | op |\n|---:|---:|---:|---:|---:|---|---|---|")
    for (kind, shape, op), (t, n, flops) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]:
        rate = f"{flops / t / 1e6:.1f}" if flops and t else ""
        print(f"| {t:.1f} | {100 * t / total:.1f}% | {n} | {flops / 1e9:.2f} | {rate} | {kind} | {shape} | {op[-90:]} |")


def dot_flops(body: str) -> float:
    """2 x output elements x contracted size, summed over the dot instructions of one computation."""
    shapes = {m.group(1): m.group(2) for m in re.finditer(r"%?([\w.\-]+) = (\S+) ", body)}
    flops = 0.0
    for line in body.splitlines():
        if " dot(" not in line:
            continue
        out = _SHAPE.search(line.split("=", 1)[1])
        lhs = re.search(r"dot\(%?([\w.\-]+)", line)
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
        lhs_shape = _SHAPE.search(shapes.get(lhs.group(1), "")) if lhs else None
        if not (out and lhs_shape and contracting):
            continue
        dims = [int(v) for v in lhs_shape.group(1).split(",") if v]
        k = int(np.prod([dims[int(c)] for c in contracting.group(1).split(",") if c]))
        flops += 2.0 * int(np.prod([int(v) for v in out.group(1).split(",") if v])) * k
    return flops


if __name__ == "__main__":
    main()
