"""Prefect flow `alignflow-pipeline`: the stale stages of dvc.yaml, in DVC's DAG order, one task each.

DVC decides everything about the pipeline: its Python API gives the stage graph and the status (what
changed), and each stage runs as `dvc repro --single-item <stage>` in a subprocess. So a scheduled run
and a local `dvc repro` execute the same commands and update the same dvc.lock. Prefect adds retries
of transient failures, the stages' output in the run log, a summary artifact and, through
flows/deploy.py, schedules. Tasks use NO_CACHE: DVC is the only cache.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

RETRIES = 2
RETRY_DELAY_SECONDS = 60.0  # time for an OOM-killed neighbour to free memory or a lock holder to finish
HEAD_LINES, TAIL_LINES = 20, 40  # output lines kept for the outcome, the error message and the retry check
ARTIFACT_KEY = "alignflow-pipeline"

# Signs that the same command may succeed when run again. Any other failure (a critical expectation,
# a non-finite loss, a bad param, a traceback) fails the same way every time, so it is not retried.
TRANSIENT_EXIT_CODES = frozenset({-9, -15, 137, 143})  # SIGKILL/SIGTERM (OOM killer, preemption); 128+N via a shell
TRANSIENT_MARKERS = (
    "Unable to acquire lock",  # dvc: another dvc process holds the repository lock
    "is busy, it is being blocked by",  # dvc: another process reads or writes the same outputs
    "database is locked",  # sqlite (the default MLflow store) written by two processes at once
)
EXITED_WITH = re.compile(r"exited with (-?\d+)")  # dvc: "failed to run: <cmd>, exited with -9"

log = logging.getLogger(__name__)


class CommandFailed(RuntimeError):
    """A stage or command exited non-zero; `transient` says whether running it again may help."""

    def __init__(self, name: str, returncode: int, tail: list[str], transient: bool):
        super().__init__(name, returncode, tail, transient)
        self.name, self.returncode, self.tail, self.transient = name, returncode, tail, transient

    def __str__(self) -> str:
        last = next((line for line in reversed(self.tail) if line.strip()), "no output")
        kind = "transient" if self.transient else "deterministic"
        return f"{self.name} exited with {self.returncode} ({kind} failure): {last}"


class PipelineFailed(RuntimeError):
    """A stage failed and the DAG stopped; `summary` holds what the flow returns on success."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message, summary)
        self.summary = summary

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Output:
    returncode: int
    head: list[str]
    tail: list[str]


# -- running commands ---------------------------------------------------------------------------------

def command_env() -> dict[str, str]:
    """This interpreter's folder first on PATH, so dvc.yaml's `python -m alignflow...` runs in this venv."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # not resolved: keep the venv
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")  # stage output reaches the run log as it happens
    return env


def _level(line: str) -> int:
    for name in ("CRITICAL", "ERROR", "WARNING"):
        if line.startswith(name):
            return getattr(logging, name)
    return logging.INFO


def stream_command(cmd: list[str], cwd: Path, logger: Any) -> Output:
    """Run cmd in cwd, logging each output line (stdout and stderr) as it arrives."""
    head: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    logger.info("$ %s", " ".join(cmd))
    # Own process group: on cancellation the stage that dvc started is stopped along with dvc.
    proc = subprocess.Popen(cmd, cwd=cwd, env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        # newline="\n": a progress bar's carriage returns stay in one line, of which the last state is kept.
        for raw in io.TextIOWrapper(proc.stdout, encoding="utf-8", errors="replace", newline="\n"):
            line = raw.rstrip("\r\n").rsplit("\r", 1)[-1].rstrip()
            if line:
                if len(head) < HEAD_LINES:
                    head.append(line)
                tail.append(line)
                logger.log(_level(line), "%s", line)
        proc.wait()
    except BaseException:  # cancelled (Prefect turns SIGTERM into an exception) or interrupted
        stop_group(proc)
        raise
    return Output(proc.returncode, head, list(tail))


def stop_group(proc: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """SIGTERM the command's process group; SIGKILL whatever still runs after the grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            proc.poll()  # reap dvc itself, so that only live processes keep the group alive
            os.killpg(proc.pid, 0)  # raises ProcessLookupError once the whole group is gone
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def is_transient(returncode: int, lines: Iterable[str]) -> bool:
    """Killed by SIGKILL/SIGTERM (the command or, as dvc reports it, the stage), or lock contention."""
    text = "\n".join(lines)
    codes = {returncode} | {int(c) for c in EXITED_WITH.findall(text)}
    return bool(codes & TRANSIENT_EXIT_CODES) or any(marker in text for marker in TRANSIENT_MARKERS)


def retry_if_transient(task, task_run, state) -> bool:  # the signature Prefect calls retry_condition_fn with
    """Retry a failed task only when its failure is transient: a retried deterministic failure fails again."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if isinstance(exc, CommandFailed):
        return exc.transient
    from dvc.lock import LockError  # the in-process `status` found the repository locked

    return isinstance(exc, LockError)


def run_checked(name: str, cmd: list[str], cwd: Path) -> Output:
    """stream_command, raising CommandFailed (transient or not) on a non-zero exit."""
    logger = get_run_logger()
    out = stream_command(cmd, cwd, logger)
    if out.returncode != 0:
        transient = is_transient(out.returncode, out.tail)
        logger.error("%s exited with %d: %s", name, out.returncode,
                     "transient failure, retried while retries remain" if transient
                     else "deterministic failure, not retried")
        raise CommandFailed(name, out.returncode, out.tail, transient)
    return out


# -- the DAG --------------------------------------------------------------------------------------------

def describe_status(entries: list) -> str:
    """One line from `dvc status` entries: 'changed deps: data/raw (modified), params.yaml (tune.seed modified)'."""
    parts = []
    for entry in entries:
        if not isinstance(entry, dict):
            parts.append(str(entry))
            continue
        for kind, changes in entry.items():
            items = [f"{path} ({', '.join(f'{k} {v}' for k, v in st.items()) if isinstance(st, dict) else st})"
                     for path, st in changes.items()] if isinstance(changes, dict) else [str(changes)]
            more = f" +{len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{kind}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def stage_address(stage: Any, repo: str) -> str:
    """How `dvc repro` names the stage when run in `repo`: `name`, or `sub/dvc.yaml:name` below it."""
    rel = os.path.relpath(stage.path, repo)
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


@task(name="dvc-plan", cache_policy=NO_CACHE, persist_result=False, retries=RETRIES,
      retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def plan_stages(repo: str, targets: list[str] | None, force: bool) -> dict:
    """Stages in DAG order, what DVC reports stale, and which stages to run (stale and their downstream)."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    logger = get_run_logger()
    with Repo(repo) as dvc_repo:
        graph = dvc_repo.index.graph  # edges go from a stage to the stages it depends on
        position = {s: i for i, s in enumerate(dvc_repo.index.stages)}  # dvc.yaml order breaks ties
        ordered = [s for s in nx.lexicographical_topological_sort(graph.reverse(copy=False), key=position.get)
                   if isinstance(s, PipelineStage)]
        address = {s: stage_address(s, repo) for s in ordered}
        by_name = {v: s for s, v in address.items()} | {s.name: s for s in ordered}
        unknown = sorted(set(targets or ()) - set(by_name))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {list(address.values())}")
        # Like `dvc repro <targets>`: the targets and everything upstream of them.
        wanted = {by_name[t] for t in targets} if targets else set(ordered)
        selected = [s for s in ordered if s in wanted or any(nx.has_path(graph, w, s) for w in wanted)]
        status = dvc_repo.status(targets=[s.addressing for s in selected])  # keyed by cwd-relative addressing
        metrics = {address[s]: [os.path.relpath(o.fs_path, repo) for o in s.outs if o.metric] for s in ordered}
        why: dict[str, str] = {}
        for s in selected:  # dependencies come first, so an upstream decision is known here
            upstream = [address[d] for d in graph.successors(s) if address.get(d) in why]
            if s.frozen:
                logger.info("stage %s is frozen: DVC does not run it", address[s])
            elif force:
                why[address[s]] = "forced"
            elif s.addressing in status:
                why[address[s]] = describe_status(status[s.addressing])
            elif upstream:
                why[address[s]] = f"upstream {', '.join(upstream)} runs first; DVC re-checks it then"
    order = [address[s] for s in ordered]
    logger.info("DAG from dvc.yaml: %s", " -> ".join(order))
    for name, reason in why.items():
        logger.info("to run: %s (%s)", name, reason)
    return {"order": order, "selected": [address[s] for s in selected], "run": list(why), "why": why,
            "metrics": metrics}


def dvc_outcome(lines: list[str]) -> str:
    """What `dvc repro --single-item` did, from its own messages."""
    text = "\n".join(lines)
    if "is cached - skipping run" in text:
        return "restored from run cache"
    if "Running stage" in text:
        return "ran"
    if "didn't change, skipping" in text:
        return "unchanged"
    return "done"


@task(name="dvc-repro", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False,
      retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=retry_if_transient)
def run_stage(repo: str, stage: str, force: bool = False) -> dict:
    """`dvc repro --single-item [--force] <stage>`: DVC runs the stage, or skips it when nothing changed."""
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *(["--force"] if force else []), stage]
    start = time.monotonic()
    out = run_checked(f"stage {stage}", cmd, Path(repo))
    return {"stage": stage, "outcome": dvc_outcome(out.head + out.tail), "seconds": round(time.monotonic() - start, 1)}


@flow(name="alignflow-pipeline", description="Run the stale DVC stages of alignflow in DAG order.",
      persist_result=False)
def alignflow_pipeline(stages: list[str] | None = None, force: bool = False, repo: str = ".",
                       retries: int = RETRIES, retry_delay_seconds: float = RETRY_DELAY_SECONDS) -> dict[str, Any]:
    """Run what DVC reports stale (or `stages` and their upstream) in DAG order, then summarise the reports.

    Args:
        stages: targets as in `dvc repro <targets>` (they and their upstream); None: all of dvc.yaml.
        force: run every selected stage even when DVC sees no change (`dvc repro --force`).
        repo: the DVC project folder.
        retries, retry_delay_seconds: per stage, used only for transient failures (see retry_if_transient).
    Returns:
        {status, dag, run, why, stages: [{stage, outcome, seconds}], failed, not_run, metrics}; on a stage
        failure the flow raises PipelineFailed (carrying this summary) after publishing the artifact.
    """
    logger = get_run_logger()
    root = Path(repo).resolve()
    planned = plan_stages(str(root), stages, force, return_state=True)
    if not planned.is_completed():  # dvc.yaml unreadable, an unknown target, the repository locked for long
        error = str(planned.result(raise_on_failure=False))
        create_markdown_artifact(markdown=f"# alignflow pipeline: FAILED before any stage\n\nDVC could not plan "
                                 f"the run: {md_cell(error)}\n", key=ARTIFACT_KEY,
                                 description="alignflow pipeline run: failed")
        raise PipelineFailed(f"DVC could not plan the run: {error}", {"status": "failed", "repo": str(root),
                                                                       "failed": {"stage": None, "error": error}})
    plan = planned.result()
    if not plan["run"]:
        logger.info("DVC: pipeline is up to date (%s); nothing to run", ", ".join(plan["selected"]))
    repro = run_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    results: list[dict] = []
    failed = None
    for name in plan["run"]:
        state = repro(str(root), name, force, return_state=True)
        if not state.is_completed():
            exc = state.result(raise_on_failure=False)
            failed = {"stage": name, "error": str(exc), "returncode": getattr(exc, "returncode", None),
                      "transient": getattr(exc, "transient", False)}
            results.append({"stage": name, "outcome": "failed", "seconds": None})
            logger.error("stage %s failed: the DAG stops here", name)
            break
        results.append(state.result())
    ran = {r["stage"] for r in results}
    summary = {
        "status": "failed" if failed else "succeeded" if plan["run"] else "up to date",
        "repo": str(root), "dag": plan["order"], "run": plan["run"], "why": plan["why"], "stages": results,
        "failed": failed, "not_run": [n for n in plan["run"] if n not in ran],
        "metrics": read_metrics(root, plan["metrics"]),
    }
    publish_summary(summary)
    if failed:
        raise PipelineFailed(f"stage {failed['stage']} failed, {len(summary['not_run'])} later stage(s) not run: "
                             f"{failed['error']}", summary)
    return summary


# -- the summary ----------------------------------------------------------------------------------------

def fmt_value(x: Any) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _rate(r: dict) -> str:
    return f"{r['rate']:.1%} [{r['low']:.1%}, {r['high']:.1%}] ({r['k']}/{r['n']})"


def _delta(d: dict) -> str:
    p = d.get("mcnemar_p", d.get("p_value"))
    return f"{d['diff']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}]" + (f", p = {p:.3g}" if p is not None else "")


def _pairs(d: dict) -> str:
    return ", ".join(f"{k} {fmt_value(v)}" for k, v in d.items()) or "none"


def rows_curate(r: dict) -> Iterator[tuple[str, str]]:
    yield "rows in / out / quarantined", (f"{r['rows_in']} / {r['rows_out']} / {r['rows_quarantined']} "
                                          f"({r['quarantined_share']:.1%})")
    yield "quarantined by reason", _pairs(r["quarantined_by_reason"])
    yield "splits", _pairs(r["splits"])
    yield "adversarial / benign rows", f"{r['adversarial_rows']} / {r['benign_rows']}"
    cov = r["coverage"]
    yield "policy x use case cells", (f"{cov['cells']} cells, min {cov['min_rows_per_cell']} rows, "
                                      f"empty: {', '.join(cov['empty_cells']) or 'none'}")


def rows_validate(r: dict) -> Iterator[tuple[str, str]]:
    yield "passed", "yes" if r["passed"] else "NO"
    yield "failed expectations", ", ".join(r["failed"]) or "none"
    for name, s in r["suites"].items():
        yield f"suite {name}", f"{s['evaluated']} evaluated, {s['failed']} failed ({s['failed_critical']} critical)"


def rows_tune(r: dict) -> Iterator[tuple[str, str]]:
    yield "steps (train / val rows)", f"{r['steps']} ({r['train_rows']} / {r['val_rows']})"
    yield "train loss first -> last (last-10 mean)", (f"{r['train_loss_first']:.4f} -> {r['train_loss_last']:.4f} "
                                                      f"({r['train_loss_last10_mean']:.4f})")
    if r.get("val_loss_before") is not None:
        yield "val loss before -> after", f"{r['val_loss_before']:.4f} -> {r['val_loss_after']:.4f}"
    yield "rows too long / prompt truncated", f"{r['rows_too_long']} / {r['rows_prompt_truncated']}"


def rows_evaluate(r: dict) -> Iterator[tuple[str, str]]:
    judge = r["primary_judge"]
    calibrated = "calibrated" if r["judge_calibrated"] else "NOT calibrated: safety metrics withheld"
    yield "primary judge", f"{judge} (kappa {r['judges'][judge]['kappa']:.2f}, {calibrated})"
    groups = [(r.get("safety"), "safe responses to harmful prompts"),
              (r.get("over_refusal"), "over-refusal of borderline prompts"),
              (r["capability"], "capability accuracy")]
    for group, label in groups:
        if group:
            overall = group.get("overall") or group["accuracy"]
            yield f"{label}: base", _rate(overall["base"])
            yield f"{label}: tuned", _rate(overall["tuned"])
            yield f"{label}: tuned - base", _delta(overall["delta"])
    ll = r["capability"]["loglik"]
    yield "reference log-likelihood base -> tuned", f"{ll['base']:.3f} -> {ll['tuned']:.3f} ({ll['delta']:+.3f})"


def rows_register(r: dict) -> Iterator[tuple[str, str]]:
    yield "decision", str(r["decision"]).upper() if r["decision"] != "registered" else "registered"
    version = r.get("version")
    yield "model", f"{r.get('model_name')} " + (f"version {version}" if version is not None else "(no new version)")
    yield "aliases", ", ".join(r.get("aliases") or []) or "none"
    champion = r.get("champion")
    if isinstance(champion, dict):
        yield "champion", (f"{'promoted' if champion.get('promoted') else 'not promoted'}: {champion.get('reason')} "
                           f"(previous: {champion.get('previous') or 'none'})")
    for g in r.get("gates", []):
        reason = f": {g['reason']}" if g.get("reason") else ""
        yield f"gate {g['name']}", (f"{'pass' if g['passed'] else 'FAIL'} (observed {fmt_value(g.get('observed'))}, "
                                    f"threshold {fmt_value(g.get('threshold'))}){reason}")


def rows_generic(data: Any, limit: int = 12) -> list[tuple[str, str]]:
    """Scalar leaves of a JSON object as dotted keys (lists are skipped), at most `limit` of them."""
    flat: list[tuple[str, str]] = []

    def walk(x: Any, key: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif x is None or isinstance(x, (str, int, float, bool)):
            flat.append((key, fmt_value(x)))

    walk(data, "")
    return flat[:limit] + ([("...", f"{len(flat) - limit} more values")] if len(flat) > limit else [])


RENDERERS = {"curate": rows_curate, "validate": rows_validate, "tune": rows_tune, "evaluate": rows_evaluate,
             "register": rows_register}


def read_metrics(root: Path, metrics: dict[str, list[str]]) -> dict[str, dict]:
    """{stage: {file, rows}} for every metrics file dvc.yaml declares that exists now."""
    out: dict[str, dict] = {}
    for stage, paths in metrics.items():
        for rel in paths:
            path = root / rel
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                out[stage] = {"file": rel, "rows": [("unreadable", str(exc))]}
                continue
            try:
                rows = list(RENDERERS[stage](data)) if stage in RENDERERS else rows_generic(data)
            except (KeyError, TypeError, ValueError, AttributeError):  # a report of another shape
                rows = rows_generic(data)
            out[stage] = {"file": rel, "rows": rows}
    return out


def md_cell(x: Any) -> str:
    return "" if x is None else str(x).replace("|", "\\|").replace("\n", " ")


def md_table(header: tuple[str, ...], rows: Iterable[Iterable[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]


def summary_markdown(s: dict) -> str:
    failed = s["failed"]
    title = f"FAILED at `{failed['stage']}`" if failed else s["status"]
    md = [f"# alignflow pipeline: {title}", "", f"DAG (dvc.yaml): {' -> '.join(s['dag'])}", ""]
    if not s["run"]:
        md += ["DVC reports every selected stage up to date: nothing ran.", ""]
    else:
        done = {r["stage"]: r for r in s["stages"]}
        rows = [(n, done[n]["outcome"] if n in done else "not run (DAG stopped)", (done.get(n) or {}).get("seconds"),
                 s["why"][n]) for n in s["run"]]
        md += ["## Stages", ""] + md_table(("stage", "outcome", "seconds", "why it ran (dvc status)"), rows) + [""]
    if failed:
        kind = "transient, retried" if failed["transient"] else "deterministic, not retried"
        md += [f"**Stage `{failed['stage']}` failed** ({kind}): {md_cell(failed['error'])}", ""]
    if s["metrics"]:
        md += ["## Metrics", ""]
        for stage, m in s["metrics"].items():
            md += [f"### {stage} (`{m['file']}`)", ""] + md_table(("metric", "value"), m["rows"]) + [""]
    return "\n".join(md)


def publish_summary(summary: dict) -> None:
    """The run's markdown summary, and a table of the stages run (Prefect artifacts)."""
    create_markdown_artifact(markdown=summary_markdown(summary), key=ARTIFACT_KEY,
                             description=f"alignflow pipeline run: {summary['status']}")
    if summary["stages"]:
        create_table_artifact(table=summary["stages"], key=f"{ARTIFACT_KEY}-stages",
                              description="DVC stages run by this flow run")


def main(argv: list[str] | None = None) -> None:
    """`python -m flows.pipeline [STAGE ...] [--force] [--repo DIR]`: one flow run, here and now."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m flows.pipeline", description=alignflow_pipeline.description)
    p.add_argument("stages", nargs="*", help="target stages and their upstream (default: all of dvc.yaml)")
    p.add_argument("--force", action="store_true", help="run the selected stages even if unchanged")
    p.add_argument("--repo", default=".", help="the DVC project (default: the current folder)")
    args = p.parse_args(argv)
    try:
        alignflow_pipeline(stages=args.stages or None, force=args.force, repo=args.repo)
    except PipelineFailed as exc:
        raise SystemExit(f"alignflow pipeline: {exc}") from None


if __name__ == "__main__":
    main()
