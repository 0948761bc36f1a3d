"""What the machine can do and how busy it is: fp32 matmul peak, memory read bandwidth, load.

    python benchmarks/train/probe.py jax RESULT_JSON [--repeat N]     # JAX: jitted matmul peak + memory read (alignflow's .venv)
    python benchmarks/train/probe.py torch RESULT_JSON [--repeat N]   # torch matmul peak, for context (the peer venv)

Both harnesses (train and generate) import this module for the load helpers and run it as a
subprocess for the probes, so every report carries the limits measured in the same run.

- Matmul peak: a jitted [n, n] @ [n, n] float32 matmul for n in 1024, 2048, 3072, 4096, best of
  `repeat` runs each (2 n^3 FLOPs a run); the best over sizes is the machine's fp32 matmul peak.
- Memory read bandwidth: a jitted sum over a 1 GiB float32 array (reads every byte once, the result
  is one number), best of `repeat`; numpy's single-threaded sum is reported beside it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

QUIET_LOAD = 0.8  # measure only when the 1-minute load average is below this
POLL_S, WAIT_MAX_S = 30, 40 * 60


# --- load ------------------------------------------------------------------------------------------
def loadavg() -> list[float]:
    """1, 5 and 15-minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def busy_seconds() -> float:
    """CPU seconds spent by the whole machine (all processes, all cores) since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
    busy = sum(ticks[:3]) + sum(ticks[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU of this process (all its threads) and its reaped children, in seconds."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class OtherLoad:
    """Share of the machine's cores used by OTHER processes while the block runs (0 = quiet)."""

    def __enter__(self) -> OtherLoad:
        self.b0, self.c0, self.t0 = busy_seconds(), own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self.t0
        busy, own = busy_seconds() - self.b0, own_cpu_seconds() - self.c0
        cores = os.cpu_count() or 1
        self.seconds = seconds
        self.own_cores = round(own / seconds, 2) if seconds else 0.0
        self.value = round(max(0.0, busy - own) / (seconds * cores), 2) if seconds else 0.0


def wait_for_quiet(max_load: float = QUIET_LOAD, poll_s: int = POLL_S, wait_max_s: int = WAIT_MAX_S,
                   log=print) -> dict:
    """Poll the 1-minute load every poll_s until it is below max_load, for at most wait_max_s.

    Returns {"quiet": bool, "waited_s", "load_at_start"}: quiet False means the wait timed out and
    the measurements run on a busy machine (the report says so).
    """
    t0 = time.monotonic()
    while True:
        load = loadavg()
        waited = round(time.monotonic() - t0)
        if load[0] < max_load:
            log(f"machine quiet: load {load} after {waited} s")
            return {"quiet": True, "waited_s": waited, "load_at_start": load, "max_load": max_load}
        if waited >= wait_max_s:
            log(f"machine still busy after {waited} s (load {load}): measuring anyway")
            return {"quiet": False, "waited_s": waited, "load_at_start": load, "max_load": max_load}
        log(f"waiting for a quiet machine: load {load} (need < {max_load}), waited {waited} s")
        time.sleep(poll_s)


def not_quiet_note(q: dict) -> str:
    """The clause a report prints when it was not measured on a quiet machine ('' when it was)."""
    if q["quiet"]:
        return ""
    if q["waited_s"] == 0:
        return f"measured at once (--quick or --no-wait) with a 1-minute load of {q['load_at_start'][0]}; "
    return f"the machine never got quiet (load >= {q['max_load']} for the whole {q['waited_s']} s wait); "


def closing_lines(q: dict, other_load: dict[str, float], notes: list[str]) -> list[str]:
    """A report's last lines: a warning when the machine was not quiet or another process used it
    during a measurement (`other_load`: measurement -> share of the cores used by others), then notes."""
    busy = [(k, v) for k, v in other_load.items() if v > 0.1]
    lines = []
    if busy or not q["quiet"]:
        lines += ["", "**Warning:** " + not_quiet_note(q)
                  + ("other processes used the machine during " + ", ".join(f"{k} ({v:.0%} of its cores)" for k, v in busy) if busy else "")
                  + ". Those timings understate what each system does on a quiet machine."]
    return lines + (["", *notes] if notes else [])


def machine(packages: tuple[str, ...]) -> dict:
    """CPU model, cores, memory, Python and the versions of `packages` in THIS interpreter."""
    from importlib import metadata

    model = platform.processor()
    if Path("/proc/cpuinfo").exists():
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), model)
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu_model": model, "logical_cores": os.cpu_count(), "memory_gb": round(mem / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform(), "packages": versions}


# --- probes ----------------------------------------------------------------------------------------
def run_measurement(name: str, cmd: list[str], work: Path, log, repo: Path, **env: str) -> dict:
    """Run one measurement in a fresh process (it writes work/NAME.json); its result, or its error."""
    out = work / f"{name}.json"
    load = loadavg()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo / "src"), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, str(out)], env=env, capture_output=True, text=True, cwd=repo)
    if proc.returncode:
        log(f"{name} FAILED after {time.perf_counter() - t0:.0f} s:\n{proc.stderr[-3000:]}")
        return {"error": proc.stderr[-3000:], "loadavg_before": load}
    res = json.loads(out.read_text())
    res.update(loadavg_before=load, process_seconds=round(time.perf_counter() - t0, 1))
    return res


def write_results(out: Path, report: dict, markdown) -> None:
    """results.json and RESULTS.md in `out`; the markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "RESULTS.md").write_text(text)
    print(text)


def environment_lines(report: dict) -> list[str]:
    """The RESULTS.md lines naming the machine, both sides' packages and the load when measuring began."""
    m, pm, q = report["machine"], report["peer_machine"], report["quiet"]
    return [
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores, {m['memory_gb']} GB RAM, Python {m['python']}.  ",
        "alignflow side: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v) + ".  ",
        "Peer side: " + ", ".join(f"{k} {v}" for k, v in pm["packages"].items() if v) + ".", "",
        f"Load: 1-minute load average {q['load_at_start'][0]} when measuring started "
        f"({'quiet' if q['quiet'] else 'NOT quiet'}: threshold {q['max_load']}, waited {q['waited_s']} s).", "",
    ]


def jax_probe(repeat: int = 10, sizes: tuple[int, ...] = (1024, 2048, 3072, 4096)) -> dict:
    """fp32 matmul GFLOP/s per size (best of `repeat`) and memory read GB/s, under jax.jit."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    matmul = jax.jit(lambda a, b: a @ b)
    per_size = {}
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
        matmul(a, b).block_until_ready()  # compile
        best = min(_timed(lambda a=a, b=b: matmul(a, b).block_until_ready()) for _ in range(repeat))
        per_size[str(n)] = round(2 * n**3 / best / 1e9, 1)
    x = jnp.ones((2**28,), jnp.float32)  # 1 GiB
    total = jax.jit(jnp.sum)
    total(x).block_until_ready()
    best = min(_timed(lambda: total(x).block_until_ready()) for _ in range(repeat))
    y = np.ones(2**28, np.float32)
    best_np = min(_timed(lambda: y.sum()) for _ in range(max(3, repeat // 2)))
    return {"backend": f"jax {jax.__version__} ({jax.default_backend()})",
            "matmul_gflops_by_size": per_size, "matmul_peak_gflops": max(per_size.values()),
            "memory_read_gb_s": round(x.nbytes / best / 1e9, 1), "memory_read_gb_s_numpy_1_thread":
            round(y.nbytes / best_np / 1e9, 1), "repeat": repeat}


def torch_probe(repeat: int = 10, sizes: tuple[int, ...] = (1024, 2048, 3072, 4096)) -> dict:
    """fp32 matmul GFLOP/s under torch (best of `repeat` per size), and bf16 at one size for context.

    bf16 is probed at n=1024 only: on a CPU without native bf16 instructions (AVX-512 BF16 / AMX) a
    bf16 matmul is an emulated slow path (~1 GFLOP/s here), and larger sizes would take minutes.
    """
    import torch

    out = {"backend": f"torch {torch.__version__}", "threads": torch.get_num_threads()}
    for dtype, dsizes, reps in ((torch.float32, sizes, repeat), (torch.bfloat16, (1024,), min(repeat, 3))):
        per_size = {}
        for n in dsizes:
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            a @ b
            best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(reps))
            per_size[str(n)] = round(2 * n**3 / best / 1e9, 1)
        name = str(dtype).removeprefix("torch.")
        out[f"matmul_gflops_by_size_{name}"] = per_size
        out[f"matmul_peak_gflops_{name}"] = max(per_size.values())
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("jax", "torch"))
    ap.add_argument("result", type=Path)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    kind, result = args.kind, args.result
    with OtherLoad() as other:
        res = jax_probe(args.repeat) if kind == "jax" else torch_probe(args.repeat)
    res.update(kind=kind, seconds=round(other.seconds, 2), other_load=other.value, loadavg_after=loadavg())
    result.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
