"""One alignflow training measurement in a fresh process: steady-state LoRA steps on the real SmolLM2.

    .venv/bin/python benchmarks/train/measure_alignflow.py BATCHES_NPZ RESULT_JSON \\
        [--top-layers K] [--rank 4] [--warmup 3] [--profile]

Exactly what alignflow's tune loop does per step (alignflow.model.training.train): the bundled
SmolLM2 loaded with `alignflow.model.base.load_model(ModelParams())`, `sft.enable_lora(rank, top_layers)`,
`model = training.compile_for_sft(backbone, ...)`, then `model.train_on_batch(x, y, sample_weight=w)` and
`float(loss)` per step on batches made by `sft.make_batch` (run.py encodes them once for all systems;
packed batches carry `segment_ids`, unpacked ones one conversation per row).

The first `--warmup` steps (XLA compile, first-touch allocations) are not timed; every later batch of
the file is one timed step. Tokens are the non-padding inputs of a batch (`segment_ids > 0`,
as training.py counts them); positions are batch x sequence length (padding included).

With --profile the same math is also timed outside Keras' train_on_batch, to see where a step's
time goes: a forward pass alone (loss, jitted), forward + backward (jax.value_and_grad, jitted), and
the whole step (value_and_grad + AdamW update) in one jax.jit that takes the frozen weights as
plain, non-donated arguments. XLA's own FLOP count of that step is reported beside the formula.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))

import probe  # noqa: E402


def trainable_layers(backbone) -> list[int]:
    """Indices of the transformer layers that hold trainable (LoRA) weights."""
    return [i for i in range(backbone.num_layers) if backbone.get_layer(f"transformer_layer_{i}").trainable_weights]


def timed_steps(step, batches, warmup: int) -> dict:
    """Run step(i) for every batch; time the ones after warm-up. step returns the loss (synchronised)."""
    times, losses = [], []
    for i in range(batches):
        t0 = time.perf_counter()
        losses.append(step(i))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"step_seconds": [round(t, 4) for t in times], "losses": [round(float(x), 4) for x in losses]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("batches", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--top-layers", type=int, default=0, help="LoRA on the top k layers only (0: all layers)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from alignflow.config import ModelParams, TuneParams
    from alignflow.model import sft, training
    from alignflow.model.base import load_model

    data = np.load(args.batches)
    ids, mask, labels, weights = data["token_ids"], data["padding_mask"], data["y"], data["w"]
    segments = data["segment_ids"] if "segment_ids" in data.files else mask.astype("int32")
    n_batches, batch_size, seq_len = ids.shape
    model = load_model(ModelParams())
    load_s = time.perf_counter() - t0
    lm, backbone = model.causal_lm, model.causal_lm.backbone
    sft.enable_lora(backbone, args.rank, args.top_layers)
    p = TuneParams(seq_len=seq_len, batch_size=batch_size, lora_rank=args.rank, lora_top_layers=args.top_layers,
                   max_steps=n_batches, warmup_steps=min(10, n_batches // 2))
    lm = training.compile_for_sft(backbone, p, n_batches)
    baseline_mb = probe_rss_mb()

    def x_of(i):
        return {"token_ids": ids[i], "segment_ids": segments[i]}

    def keras_step(i):  # alignflow.model.training.train, one step
        return float(lm.train_on_batch(x_of(i), labels[i], sample_weight=weights[i]))

    with probe.OtherLoad() as other:
        res = timed_steps(keras_step, n_batches, args.warmup)
    timed = range(args.warmup, n_batches)
    tokens = [int(mask[i].sum()) for i in timed]
    seconds = sum(res["step_seconds"])
    out = {
        "system": "alignflow", "rank": args.rank, "top_layers": args.top_layers,
        "trainable_layers": trainable_layers(backbone), "batch": batch_size, "seq_len": seq_len,
        "warmup_steps": args.warmup, "timed_steps": len(tokens), **res,
        "tokens": tokens, "tokens_per_s": round(sum(tokens) / seconds, 1),
        "positions_per_s": round(len(tokens) * batch_size * seq_len / seconds, 1),
        "median_step_s": round(float(np.median(res["step_seconds"])), 4),
        "trainable_params": int(sum(np.prod(v.shape) for v in lm.trainable_variables)),
        "model_params": int(backbone.count_params()), "load_seconds": round(load_s, 2),
        "other_load": other.value, "own_cores": other.own_cores, "loadavg_after": probe.loadavg(),
        "rss_baseline_mb": baseline_mb, "rss_peak_mb": probe_rss_mb(peak=True),
    }
    if args.profile:
        out["profile"] = profile(lm, ids, segments, labels, weights, args.warmup)
    args.result.write_text(json.dumps(out))


def probe_rss_mb(peak: bool = False) -> float:
    if peak:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    with open(f"/proc/{os.getpid()}/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def stateless_loss(lm):
    """(loss_fn(tv, ntv, x, y, w), tv, ntv, optimizer variables): the SFT model's training loss as a pure
    function of its trainable and non-trainable variables, for jax.jit / jax.value_and_grad."""
    tv = [v.value for v in lm.trainable_variables]
    ntv = [v.value for v in lm.non_trainable_variables]
    ov = [v.value for v in lm.optimizer.variables]
    mv = [v.value for v in lm.metrics_variables]

    def loss_fn(tv, ntv, x, y, w):
        loss, _ = lm.compute_loss_and_updates(tv, ntv, mv, x, y, w, training=True, optimizer_variables=ov)
        return loss

    return loss_fn, tv, ntv, ov


def profile(lm, ids, segments, labels, weights, warmup: int) -> dict:
    """Seconds a step spends in forward, backward and update, each jitted outside train_on_batch."""
    import jax

    loss_fn, tv, ntv, ov = stateless_loss(lm)

    def full_step(tv, ov, ntv, x, y, w):
        loss, grads = jax.value_and_grad(loss_fn)(tv, ntv, x, y, w)
        tv, ov = lm.optimizer.stateless_apply(ov, grads, tv)
        return loss, tv, ov

    forward = jax.jit(loss_fn)
    fwd_bwd = jax.jit(jax.value_and_grad(loss_fn))
    step = jax.jit(full_step, donate_argnums=(0, 1))
    n = ids.shape[0]

    def xs(i):
        return {"token_ids": ids[i], "segment_ids": segments[i]}, labels[i], weights[i]

    results = {}
    results["forward"] = timed_steps(lambda i: float(forward(tv, ntv, *xs(i))), n, warmup)
    results["forward_backward"] = timed_steps(lambda i: float(fwd_bwd(tv, ntv, *xs(i))[0]), n, warmup)
    state = {"tv": tv, "ov": ov}

    def run_step(i):
        loss, state["tv"], state["ov"] = step(state["tv"], state["ov"], ntv, *xs(i))
        return float(loss)

    results["jitted_step"] = timed_steps(run_step, n, warmup)
    out = {k: {"median_s": round(float(np.median(v["step_seconds"])), 4), "step_seconds": v["step_seconds"]}
           for k, v in results.items()}
    try:  # XLA's FLOP count of the whole step (cost analysis of the compiled HLO)
        compiled = jax.jit(full_step).lower(tv, ov, ntv, *xs(0)).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out["xla_step_flops"] = float(cost.get("flops", 0.0))
        fwd_cost = jax.jit(loss_fn).lower(tv, ntv, *xs(0)).compile().cost_analysis()
        fwd_cost = fwd_cost[0] if isinstance(fwd_cost, (list, tuple)) else fwd_cost
        out["xla_forward_flops"] = float(fwd_cost.get("flops", 0.0))
    except Exception as e:  # cost analysis is best effort (its API moves between jax versions)
        out["xla_cost_error"] = repr(e)[:300]
    return out


if __name__ == "__main__":
    main()
