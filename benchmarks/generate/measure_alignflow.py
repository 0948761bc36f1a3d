"""One alignflow generation measurement in a fresh process: batched greedy answers with ChatModel.ask.

    .venv/bin/python benchmarks/generate/measure_alignflow.py PROMPTS_JSON BATCH RESULT_JSON [--repeat 2]

The bundled SmolLM2 loaded with `alignflow.model.base.load_model(ModelParams())`, then
`model.ask(questions, gen)` exactly as the evaluate stage calls it, with params.yaml's
evaluate.generation settings (max_prompt_tokens, max_new_tokens, bucket) and `batch_size` = BATCH.
`ask` formats the chat, tokenizes, sorts prompts by length, pads each batch to a bucket and decodes
greedily (alignflow.model.base.generate_ids). The first pass compiles one XLA program per bucket shape
and is reported apart; then `--repeat` timed passes, the fastest kept. New tokens are those before the
stop token (`Generated.new_tokens`), so rows that stop early count only what they said.

With --profile, where a batch's time goes inside alignflow's GreedyDecoder: one batch of BATCH prompts
of 2 x bucket tokens is decoded with no stop token twice, once for 1 new token (the prefill and the
first token) and once for max_new_tokens; the difference over max_new_tokens - 1 is one decode step.
Best of 3 each, after a compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "train"))
sys.path.insert(0, str(REPO / "src"))

import probe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("prompts", type=Path)
    ap.add_argument("batch", type=int)
    ap.add_argument("result", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    spec = json.loads(args.prompts.read_text())

    t0 = time.perf_counter()
    from alignflow.config import GenerateParams, ModelParams
    from alignflow.model.base import load_model

    model = load_model(ModelParams())
    load_s = time.perf_counter() - t0
    gen = GenerateParams(**{**spec["generation"], "batch_size": args.batch})
    questions = spec["questions"]

    t1 = time.perf_counter()
    first = model.ask(questions, gen)  # compiles each bucket shape once
    first_s = time.perf_counter() - t1
    passes = []
    with probe.OtherLoad() as other:
        for _ in range(args.repeat):
            passes.append(model.ask(questions, gen))
    best = max(passes, key=lambda g: g.tokens_per_second)
    res = {
        "system": "alignflow", "batch": args.batch, "generation": dataclasses.asdict(gen), "prompts": len(questions),
        "new_tokens": sum(best.new_tokens), "seconds": round(best.seconds, 3),
        "tokens_per_s": round(best.tokens_per_second, 1),
        "passes_tokens_per_s": [round(g.tokens_per_second, 1) for g in passes],
        "first_pass_seconds_with_compile": round(first_s, 2), "first_pass_tokens_per_s": round(first.tokens_per_second, 1),
        "new_tokens_per_row": best.new_tokens, "texts": best.texts,
        "stopped_rows": sum(n < gen.max_new_tokens for n in best.new_tokens),
        "load_seconds": round(load_s, 2), "other_load": other.value, "own_cores": other.own_cores,
        "loadavg_after": probe.loadavg(), "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "parameters": model.info.get("parameters"),
    }
    if args.profile:
        res["profile"] = profile(model, spec["prompt_ids"], gen)
    args.result.write_text(json.dumps(res))


def profile(model, prompt_ids: list[list[int]], gen) -> dict:
    """Prefill and per-step decode seconds of alignflow's GreedyDecoder at [batch, 2 x bucket] prompts."""
    import numpy as np

    from alignflow.model.decode import GreedyDecoder

    length = min(gen.bucket * 2, gen.max_prompt_tokens)  # the common shape: 33-64 token prompts
    flat = [t for ids in prompt_ids for t in ids]
    rows = [flat[i * length:(i + 1) * length] for i in range(gen.batch_size)]

    def run(new_tokens: int) -> float:
        decoder = GreedyDecoder(model.causal_lm.backbone, new_tokens)
        times = []
        for _ in range(4):  # the first call compiles
            t0 = time.perf_counter()
            np.asarray(decoder(rows, length, [], model.tokenizer.pad_id))  # no stop token: every step runs
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    one, full = run(1), run(gen.max_new_tokens)
    step = (full - one) / (gen.max_new_tokens - 1)
    return {"shape": [gen.batch_size, length], "generate_1_step_s": round(one, 4),
            f"generate_{gen.max_new_tokens}_steps_s": round(full, 4), "decode_step_s": round(step, 5),
            "prefill_s": round(one, 4), "decode_steps": gen.max_new_tokens}


if __name__ == "__main__":
    main()
