"""One measurement in a fresh process: the curate stage, or a reference deduplicator, on one corpus.

    python benchmarks/curate/measure.py {stage,datasketch,rensa} CORPUS_DIR WORK_DIR RESULT_JSON

A fresh process per measurement makes peak RSS that measurement's own. The result JSON holds timings,
memory, CPU use and the ids each system dropped (run.py scores them against the corpus truth).

Memory is reported three ways (MiB): `rss_peak_mb` the process's own high-water mark (ru_maxrss),
`tree_rss_peak_mb` the largest sampled sum over the process and its worker processes (every 20 ms;
an upper bound, as forked workers share copy-on-write pages with their parent), and `rss_baseline_mb`
after imports, before any work, so that (peak - baseline) / rows is the memory cost per row.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
THRESHOLD, NUM_PERM = 0.8, 128  # the references' settings (the issue's datasketch/rensa configuration)
_WORD = re.compile(r"\w+")


class Sampler:
    """Peak summed RSS of this process and its children, sampled by a background thread.

    Every 20 ms; the list of children (a /proc scan) is refreshed every 200 ms only, so that the
    sampler itself costs well under 1% of a core and barely competes with the measured work.
    """

    def __init__(self, interval_s: float = 0.02, rescan_every: int = 10):
        self.interval_s, self.rescan_every, self.peak = interval_s, rescan_every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me, children, tick = psutil.Process(), [], 0
        while not self._stop.is_set():
            if tick % self.rescan_every == 0:
                children = me.children(recursive=True)
            tick += 1
            total = me.memory_info().rss
            for child in children:
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # a worker that just exited
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (datasets' worker pool), in seconds."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _mb(kib_or_bytes: float, kib: bool = False) -> float:
    return round(kib_or_bytes / 1024 if kib else kib_or_bytes / 2**20, 1)


def _busy_seconds() -> float:
    """CPU seconds spent by the whole machine (all processes, all cores) since boot."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


def measure(work) -> dict:
    """Run `work()` -> (rows, extra) and time it; rows/s counts raw input rows.

    `other_load` is the share of the machine's cores that other processes used meanwhile (0 = quiet;
    0.5 on 2 cores = one core busy elsewhere): timings taken with a high value are not comparable.
    """
    baseline = psutil.Process().memory_info().rss
    busy0, cpu0, t0 = _busy_seconds(), _cpu_seconds(), time.perf_counter()
    with Sampler() as sampler:
        rows, extra = work()
    seconds = time.perf_counter() - t0
    cpu, busy = _cpu_seconds() - cpu0, _busy_seconds() - busy0
    cores = psutil.cpu_count() or 1
    return {
        "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
        "cpu_seconds": round(cpu, 3), "cores_used": round(cpu / seconds, 2),
        "other_load": round(max(0.0, busy - cpu) / (seconds * cores), 2),
        "rss_baseline_mb": _mb(baseline),
        "rss_peak_mb": _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, kib=True),
        "child_rss_peak_mb": _mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, kib=True),
        "tree_rss_peak_mb": _mb(max(sampler.peak, baseline)),
        **extra,
    }


# --- the curate stage ----------------------------------------------------------------------------
def stage_config(corpus: Path, work: Path):
    """The repo's params.yaml (curate section unchanged, num_proc included), paths moved to the corpus.

    The one override: max_quarantine_share 0.5, because the corpus injects ~21% bad rows (the default
    bound 0.2 would stop the stage after all the work, which is what the bound is for).
    """
    import dataclasses

    from alignflow import config

    cfg = config.load(REPO / "params.yaml")
    paths = dataclasses.replace(
        cfg.paths, policies=str(REPO / cfg.paths.policies), raw_sft=str(corpus / "raw"), eval_dir=str(corpus / "eval"),
        curated=str(work / "curated"), curate_report=str(work / "reports/curate.json"),
        coverage_plot=str(work / "reports/coverage.json"))
    return dataclasses.replace(cfg, paths=paths, curate=dataclasses.replace(cfg.curate, max_quarantine_share=0.5))


def run_stage(corpus: Path, work: Path) -> dict:
    """`alignflow.stages.curate.run` minus MLflow: curate_files (read, curate, report) + write_outputs."""
    import datasets  # noqa: F401  (imported before the clock starts, as `run` would have it imported)

    from alignflow.stages import curate

    cfg = stage_config(corpus, work)
    out: dict = {}

    def work_fn():
        result = curate.curate_files(cfg)
        curate.write_outputs(cfg, result)
        out["result"] = result
        return result.report["rows_in"], {"params": {k: getattr(cfg.curate, k) for k in
                                                     ("num_proc", "lsh_bands", "num_perm", "near_dup_threshold")}}

    res = measure(work_fn)
    result = out["result"]
    dropped: dict[str, list] = {}
    for d in result.dropped:
        dropped.setdefault(d.reason, []).append(d.id)
    res.update(dropped=dropped, kept=result.kept.column("id").to_pylist(), report=result.report)
    return res


# --- reference deduplicators -----------------------------------------------------------------------
def load_texts(corpus: Path) -> tuple[list[str], list[str]]:
    """(ids, prompt + "\\n" + response) of every parseable row, raw text (the stage's dedup text)."""
    ids, texts = [], []
    for path in sorted((corpus / "raw").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                msgs = row["messages"]
                prompt = next(m["content"] for m in reversed(msgs) if m["role"] == "user")
                ids.append(row["id"])
                texts.append(prompt + "\n" + msgs[-1]["content"])
    return ids, texts


def shingles(text: str) -> list[str]:
    """Word 3-grams as the stage makes them (case-folded \\w+ words joined by one space)."""
    toks = _WORD.findall(text.casefold())
    if len(toks) < 3:
        return [" ".join(toks)] if toks else []
    return [" ".join(toks[i : i + 3]) for i in range(len(toks) - 2)]


def dedup_datasketch(texts: list[str]) -> list[int]:
    """datasketch MinHash + MinHashLSH(threshold=0.8, num_perm=128), one row at a time: a row is a
    duplicate if the LSH returns any earlier kept row; otherwise it is indexed."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    drops = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([s.encode() for s in shingles(text)])
        if lsh.query(m):
            drops.append(i)
        else:
            lsh.insert(i, m)
    return drops


def dedup_rensa(texts: list[str]) -> list[int]:
    """rensa RMinHash + RMinHashLSH(threshold=0.8, num_perm=128, 16 bands), one row at a time, as in
    rensa's README: LSH candidates among earlier kept rows, confirmed by the MinHash Jaccard estimate."""
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=16)
    kept: dict[int, RMinHash] = {}
    drops = []
    for i, text in enumerate(texts):
        m = RMinHash(num_perm=NUM_PERM, seed=42)
        m.update(shingles(text))
        if any(kept[c].jaccard(m) >= THRESHOLD for c in lsh.query(m)):
            drops.append(i)
        else:
            kept[i] = m
            lsh.insert(i, m)
    return drops


def run_reference(name: str, corpus: Path) -> dict:
    fn = {"datasketch": dedup_datasketch, "rensa": dedup_rensa}[name]
    if name == "datasketch":
        import datasketch  # noqa: F401  (import time is not dedup time)
    else:
        import rensa  # noqa: F401
    t0 = time.perf_counter()
    ids, texts = load_texts(corpus)
    load_s = time.perf_counter() - t0
    out: dict = {}

    def work_fn():
        out["drops"] = fn(texts)
        return len(texts), {}

    res = measure(work_fn)
    drops = set(out["drops"])
    res.update(load_seconds=round(load_s, 3),
               rows_per_s_with_load=round(len(texts) / (load_s + res["seconds"]), 1),
               dropped={"duplicate": [ids[i] for i in sorted(drops)]},
               kept=[ids[i] for i in range(len(ids)) if i not in drops])
    return res


def main() -> None:
    kind, corpus, work, result = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    t0 = time.perf_counter()
    res = run_stage(corpus, work) if kind == "stage" else run_reference(kind, corpus)
    res.update(kind=kind, pid=os.getpid(), total_process_seconds=round(time.perf_counter() - t0, 3))
    result.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
