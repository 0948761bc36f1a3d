"""Curate benchmark: the whole curate stage against datasketch and rensa dedup on synthetic corpora.

    .venv/bin/python benchmarks/curate/run.py                    # 50k and 200k rows (a few minutes)
    .venv/bin/python benchmarks/curate/run.py --quick            # 5k rows, a smoke run (~30 s)
    .venv/bin/python benchmarks/curate/run.py --rows 20000 --repeat 3

Per corpus size: generate a corpus with injected duplicates (corpus.py) in a temporary folder, run
each system in a fresh process (measure.py), score its drops against the injected truth, and write
results.json and RESULTS.md next to this file. See README.md for how to read them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import corpus
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SYSTEMS = ("stage", "rensa", "datasketch")
TARGETS = {"stage_vs_rensa_rows_per_s": 1.0, "near_recall": 0.95, "near_precision": 0.99}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    versions = {}
    for pkg in ("datasets", "pyarrow", "numpy", "rensa", "datasketch", "xxhash", "msgspec"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu_model": model, "logical_cores": psutil.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions}


def score(result: dict, truth: list[dict], threshold: float) -> dict:
    """Precision/recall of duplicate removal against the injected truth.

    Positives: injected exact copies, and near copies whose true Jaccard with their source is at or
    above the threshold. A dropped row is a true positive when it is a positive and its source was kept.
    Near-duplicate precision leaves out the drops of exact copies (any system finds those).
    """
    contaminated = [t["id"] for t in truth if t["kind"] == "contaminated"]
    # Copies of held-out prompts are decontamination's business; when two of them carry the same prompt,
    # dedup may drop one first, which is right too: they count neither way here.
    dropped = set(result["dropped"].get("exact_duplicate", []) + result["dropped"].get("near_duplicate", [])
                  + result["dropped"].get("duplicate", [])) - set(contaminated)
    kept = set(result["kept"])
    exact = {t["id"]: t for t in truth if t["kind"] == "exact"}
    near = {t["id"]: t for t in truth if t["kind"] == "near" and t["jaccard"] >= threshold}
    hard_negatives = {t["id"] for t in truth if t["kind"] == "near" and t["jaccard"] < threshold}
    tp_exact = {i for i in dropped if i in exact and exact[i]["src"] in kept}
    tp_near = {i for i in dropped if i in near and near[i]["src"] in kept}
    near_drops = dropped - set(exact)
    bands = {}
    for lo, hi in ((threshold, 0.85), (0.85, 0.9), (0.9, 1.01)):
        members = [i for i, t in near.items() if lo <= t["jaccard"] < hi]
        bands[f"{lo:.2f}-{min(hi, 1.0):.2f}"] = {"positives": len(members),
                                                   "recall": _ratio(sum(i in tp_near for i in members), len(members))}
    out = {
        "dropped_as_duplicate": len(dropped),
        "precision": _ratio(len(tp_exact) + len(tp_near), len(dropped)),
        "recall": _ratio(len(tp_exact) + len(tp_near), len(exact) + len(near)),
        "exact_recall": _ratio(len(tp_exact), len(exact)),
        "near_precision": _ratio(len(tp_near), len(near_drops)),
        "near_recall": _ratio(len(tp_near), len(near)),
        "near_recall_by_jaccard": bands,
        "false_positives": len(dropped) - len(tp_exact) - len(tp_near),
        "hard_negatives_kept": _ratio(len(hard_negatives & kept), len(hard_negatives)),
    }
    if "contaminated" in result["dropped"]:
        out["contaminated_recall"] = _ratio(sum(i not in kept for i in contaminated), len(contaminated))
    return out


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def run_one(system: str, folder: Path, work: Path) -> dict:
    out = work / f"{system}.json"
    cmd = [sys.executable, str(HERE / "measure.py"), system, str(folder), str(work / system), str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{system} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def best_of(system: str, folder: Path, work: Path, repeat: int) -> dict:
    """The fastest of `repeat` fresh-process runs (the least disturbed by other load on the machine)."""
    runs = [run_one(system, folder, work) for _ in range(repeat)]
    best = max(runs, key=lambda r: r["rows_per_s"])
    best["runs_rows_per_s"] = [r["rows_per_s"] for r in runs]
    return best


def bench_size(rows: int, seed: int, repeat: int, keep: bool, systems: tuple[str, ...] = SYSTEMS) -> dict:
    from alignflow.config import load
    from alignflow.data.policies import load_policies

    cfg = load(REPO / "params.yaml")
    policies = load_policies(REPO / cfg.paths.policies)
    threshold = cfg.curate.near_dup_threshold
    tmp = Path(tempfile.mkdtemp(prefix=f"alignflow-bench-{rows}-"))
    try:
        t0 = time.perf_counter()
        summary = corpus.generate(tmp / "corpus", rows, seed=seed, threshold=threshold,
                                  policies=policies.labels, use_cases=tuple(policies.use_cases))
        print(f"[{rows}] corpus in {time.perf_counter() - t0:.1f} s: {summary['injected']}", flush=True)
        truth = json.loads((tmp / "corpus" / "truth.json").read_text())["injected"]
        results = {}
        for system in systems:
            res = best_of(system, tmp / "corpus", tmp / "work", repeat)
            res["quality"] = score(res, truth, threshold)
            for key in ("dropped", "kept"):
                res[key] = {k: len(v) for k, v in res[key].items()} if isinstance(res[key], dict) else len(res[key])
            results[system] = res
            print(f"[{rows}] {system:<10} {res['rows_per_s']:>9,.0f} rows/s  {res['tree_rss_peak_mb']:>7,.0f} MB  "
                  f"near P {res['quality']['near_precision']}  R {res['quality']['near_recall']}  "
                  f"(other load {res['other_load']})", flush=True)
        return {"corpus": summary, "results": results, "corpus_dir": str(tmp) if keep else None}
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def ratios(sizes: dict) -> dict:
    """stage rows/s over each reference's, and memory per row across sizes (linearity)."""
    out = {}
    for rows, size in sizes.items():
        r = size["results"]
        if "stage" not in r:
            continue
        out[rows] = {f"stage_vs_{ref}_rows_per_s": round(r["stage"]["rows_per_s"] / r[ref]["rows_per_s"], 2)
                     for ref in ("rensa", "datasketch") if ref in r}
        out[rows]["stage_mb_per_1k_rows"] = _per_k(r["stage"])
    keys = sorted((k for k in sizes if "stage" in sizes[k]["results"]), key=int)
    if len(keys) >= 2:
        small, large = sizes[keys[0]]["results"]["stage"], sizes[keys[-1]]["results"]["stage"]
        extra_rows = large["rows"] - small["rows"]
        out["memory_linearity"] = {
            "rows": [int(keys[0]), int(keys[-1])],
            "mb_per_1k_rows": [_per_k(small), _per_k(large)],
            "per_row_ratio_large_vs_small": round(_per_k(large) / _per_k(small), 2) if _per_k(small) else None,
            # The slope between the sizes leaves out fixed costs (worker processes, imports).
            "marginal_mb_per_1k_rows": round((large["tree_rss_peak_mb"] - small["tree_rss_peak_mb"]) / extra_rows * 1000, 2),
        }
    return out


def _per_k(res: dict) -> float:
    """Peak memory above the post-import baseline, per 1,000 input rows (MB), process tree included."""
    return round((res["tree_rss_peak_mb"] - res["rss_baseline_mb"]) / res["rows"] * 1000, 2)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Curate benchmark results", "",
        f"Generated by `benchmarks/curate/run.py` on {report['date']} "
        f"({'quick' if report['quick'] else 'full'} run, best of {report['repeat']}).", "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores ({m['physical_cores']} physical), "
        f"{m['memory_gb']} GB RAM, Python {m['python']}.  ",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v) + ".", "",
        "| rows | system | rows/s | seconds | cores used | CPU us/row | peak RSS MB (main / tree) | MB per 1k rows "
        "| near-dup precision | near-dup recall | exact recall | other load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, size in report["sizes"].items():
        for system, r in size["results"].items():
            q = r["quality"]
            lines.append(f"| {int(rows):,} | {system} | {r['rows_per_s']:,.0f} | {r['seconds']:.2f} | {r['cores_used']:.2f} "
                         f"| {r['cpu_seconds'] / r['rows'] * 1e6:.0f} "
                         f"| {r['rss_peak_mb']:,.0f} / {r['tree_rss_peak_mb']:,.0f} | {_per_k(r):.2f} "
                         f"| {q['near_precision']} | {q['near_recall']} | {q['exact_recall']} | {r['other_load']:.2f} |")
    lines += ["", "CPU us/row: CPU time of the process and its workers per input row, the cost that does not "
              "depend on how busy the machine was (the stage spends it on 2 cores, the references on 1).",
              "", "Ratios:", ""]
    for rows, rt in report["ratios"].items():
        if rows == "memory_linearity":
            lines.append(f"- stage memory per row, {rt['rows'][1]:,} vs {rt['rows'][0]:,} rows: {rt['mb_per_1k_rows'][1]} vs "
                         f"{rt['mb_per_1k_rows'][0]} MB per 1k rows (ratio {rt['per_row_ratio_large_vs_small']}); "
                         f"marginal cost between the two sizes {rt['marginal_mb_per_1k_rows']} MB per 1k rows")
        else:
            lines.append(f"- {int(rows):,} rows: " + ", ".join(
                f"stage / {k.split('_')[2]} rows/s = {v}" for k, v in rt.items() if k.startswith("stage_vs_")))
    lines += ["", "Near-duplicate recall by true Jaccard of the injected pair:", ""]
    for rows, size in report["sizes"].items():
        res = size["results"]
        first = next(iter(res.values()))["quality"]["near_recall_by_jaccard"]
        parts = [f"{band}: " + " / ".join(str(r["quality"]["near_recall_by_jaccard"][band]["recall"]) for r in res.values())
                 + f" ({first[band]['positives']} pairs)" for band in first]
        lines.append(f"- {int(rows):,} rows ({' / '.join(res)}): " + "; ".join(parts))
    lines += ["", "Corpora (seeded, regenerated on each run):", ""]
    for rows, size in report["sizes"].items():
        c = size["corpus"]
        lines.append(f"- {int(rows):,} rows: injected {c['injected']}; near copies at or above the threshold "
                     f"{c['near_at_or_above_threshold']} (true Jaccard percentiles {c['near_jaccard_percentiles']})")
    busy = [(rows, s, r["other_load"]) for rows, size in report["sizes"].items() for s, r in size["results"].items()
            if r["other_load"] > 0.1]
    if busy:
        lines += ["", "**Warning:** other processes used the machine during " + ", ".join(
            f"{s} at {int(rows):,} rows ({load:.0%} of its cores)" for rows, s, load in busy)
            + "; those timings understate what the system does on a quiet machine."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000], help="corpus sizes (rows)")
    ap.add_argument("--quick", action="store_true", help="one 5,000-row corpus: a smoke run")
    ap.add_argument("--repeat", type=int, default=1, help="fresh-process runs per measurement; the fastest is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.json and RESULTS.md")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpora (their folder is printed)")
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                    help="what to measure (ratios need all three)")
    ap.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from the results.json in --out")
    args = ap.parse_args()
    if args.render:
        (args.out / "RESULTS.md").write_text(markdown(json.loads((args.out / "results.json").read_text())))
        return
    sizes = [5_000] if args.quick else args.rows
    sys.path.insert(0, str(REPO / "src"))
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "repeat": args.repeat,
              "machine": machine(), "targets": TARGETS, "sizes": {}}
    for rows in sizes:
        report["sizes"][str(rows)] = bench_size(rows, args.seed, args.repeat, args.keep, tuple(args.systems))
    report["ratios"] = ratios(report["sizes"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "RESULTS.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
