"""Where a decode step's time goes: SmolLM2-135M's projections alone, as JAX (XLA:CPU) and torch run them.

A decode step multiplies `batch` rows by every weight matrix once (30 layers of q, k, v, o, gate, up,
down, then the tied LM head). This probe times exactly those matmuls with random weights of SmolLM2's
shapes, nothing else (no attention, norms, RoPE or cache), for a few batch sizes, and the LM head alone
against a plain read of the same bytes. It bounds what any decoder built on the framework's matmul can do.

    .venv/bin/python benchmarks/generate/matmul_probe.py                    # JAX, batches 1 8 16 32 64
    benchmarks/.venv-peer/bin/python benchmarks/generate/matmul_probe.py --torch
    .venv/bin/python benchmarks/generate/matmul_probe.py --batches 8 64 --json /tmp/probe.json

Prints one line per batch: milliseconds per step of projections, the tokens/s that bounds, the
effective weight-read bandwidth (538 MB / step time) and GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import time

HIDDEN, INTER, KV, LAYERS, VOCAB = 576, 1536, 192, 30, 49152
SHAPES = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN), (HIDDEN, INTER), (HIDDEN, INTER), (INTER, HIDDEN)]
PARAMS = LAYERS * sum(a * b for a, b in SHAPES) + VOCAB * HIDDEN


def timed(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def jax_side(batches, repeat):
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    weights = [[jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.02) for s in SHAPES] for _ in range(LAYERS)]
    emb = jnp.asarray(rng.standard_normal((VOCAB, HIDDEN), dtype=np.float32) * 0.02)

    @jax.jit
    def step(x, weights, emb):
        for q, k, v, o, g, u, d in weights:
            att = x @ q + jnp.pad(x @ k + x @ v, ((0, 0), (0, HIDDEN - KV)))
            x = x + att @ o
            x = x + ((x @ g) * jax.nn.silu(x @ u)) @ d
        return x @ emb.T

    head = jax.jit(lambda x, e: x @ e.T)
    read = jax.jit(lambda e: e.sum())
    read_s = timed(lambda: read(emb).block_until_ready(), repeat)
    rows = []
    for b in batches:
        x = jnp.asarray(rng.standard_normal((b, HIDDEN), dtype=np.float32))
        rows.append((b, timed(lambda x=x: step(x, weights, emb).block_until_ready(), repeat),
                     timed(lambda x=x: head(x, emb).block_until_ready(), repeat)))
    return f"jax {jax.__version__} (XLA:CPU)", read_s, rows


def torch_side(batches, repeat):
    import torch

    torch.set_num_threads(2)
    lin = torch.nn.functional.linear
    weights = [[torch.randn(b, a) * 0.02 for a, b in SHAPES] for _ in range(LAYERS)]
    emb = torch.randn(VOCAB, HIDDEN) * 0.02

    def step(x):
        for q, k, v, o, g, u, d in weights:
            att = lin(x, q) + torch.nn.functional.pad(lin(x, k) + lin(x, v), (0, HIDDEN - KV))
            x = x + lin(att, o)
            x = x + lin(lin(x, g) * torch.nn.functional.silu(lin(x, u)), d)
        return lin(x, emb)

    rows = []
    with torch.inference_mode():
        read_s = timed(lambda: emb.sum(), repeat)
        for b in batches:
            x = torch.randn(b, HIDDEN)
            rows.append((b, timed(lambda x=x: step(x), repeat), timed(lambda x=x: lin(x, emb), repeat)))
    return f"torch {torch.__version__} ({torch.get_num_threads()} threads)", read_s, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch", action="store_true", help="torch instead of JAX (run it in the peer venv)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    ap.add_argument("--repeat", type=int, default=10, help="timed repeats; the fastest is kept")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    name, read_s, rows = (torch_side if args.torch else jax_side)(args.batches, args.repeat)
    head_mb = VOCAB * HIDDEN * 4 / 1e6
    print(f"{name}: plain read of the {head_mb:.0f} MB LM head {read_s * 1e3:.2f} ms ({head_mb / read_s / 1e3:.1f} GB/s)")
    out = {"framework": name, "read_head_s": read_s, "params": PARAMS, "rows": []}
    for b, step_s, head_s in rows:
        rec = {"batch": b, "step_s": step_s, "tokens_per_s": b / step_s, "weights_gb_s": PARAMS * 4 / step_s / 1e9,
               "gflops": 2 * PARAMS * b / step_s / 1e9, "head_s": head_s, "head_gb_s": head_mb / head_s / 1e3}
        out["rows"].append(rec)
        print(f"batch {b:3d}: projections {step_s * 1e3:7.1f} ms/step -> at most {rec['tokens_per_s']:6.0f} tokens/s; "
              f"weights read at {rec['weights_gb_s']:4.1f} GB/s, {rec['gflops']:5.1f} GFLOP/s; "
              f"LM head alone {head_s * 1e3:5.1f} ms ({rec['head_gb_s']:4.1f} GB/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
