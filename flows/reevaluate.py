"""Prefect flow `alignflow-reevaluate`: does the registered champion still pass its gates?

It runs `alignflow reevaluate` (which loads `models:/<name>@champion` from MLflow, evaluates it on the
current eval sets and writes reports/reevaluate.json), then publishes the report as a markdown
artifact. The command is not a DVC stage: the champion lives in the MLflow registry, outside dvc.lock.
A champion that no longer passes fails the flow run (`fail_on_regression`), so a failed-run
notification reaches whoever owns the model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.pipeline import (
    RETRIES,
    RETRY_DELAY_SECONDS,
    fmt_value,
    md_cell,
    md_table,
    retry_if_transient,
    run_checked,
)

ARTIFACT_KEY = "alignflow-reevaluate"
DEFAULT_REPORT = "reports/reevaluate.json"


class ChampionRegressed(RuntimeError):
    """The champion no longer passes its gates; `summary` is what the flow returns otherwise."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message, summary)
        self.summary = summary

    def __str__(self) -> str:
        return self.args[0]


def default_command() -> list[str]:
    return [sys.executable, "-m", "alignflow.cli", "reevaluate"]


@task(name="reevaluate-champion", cache_policy=NO_CACHE, persist_result=False, retries=RETRIES,
      retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=retry_if_transient)
def run_reevaluation(repo: str, command: list[str], report: str) -> dict:
    """Run the command in repo; return the report it wrote (an old report left in place is an error)."""
    path = Path(repo) / report
    before = path.stat().st_mtime_ns if path.exists() else None
    run_checked("reevaluate", command, Path(repo))
    if not path.exists() or path.stat().st_mtime_ns == before:
        raise FileNotFoundError(f"{' '.join(command)} succeeded but did not write {report}")
    return json.loads(path.read_text(encoding="utf-8"))


def champion_passes(report: dict) -> bool | None:
    """The report's verdict: an explicit flag, else all gates passed; None when it says neither."""
    for key in ("still_passes", "passed", "passes"):
        if isinstance(report.get(key), bool):
            return report[key]
    gates = report.get("gates")
    if isinstance(gates, list) and gates:
        return all(bool(g.get("passed")) for g in gates)
    return None


def reevaluate_markdown(report: dict, passes: bool | None, file: str) -> str:
    """The artifact: verdict, gates (observed vs threshold and why), headline metrics, the report's fields."""
    verdict = {True: "champion still passes its gates", False: "CHAMPION NO LONGER PASSES ITS GATES",
               None: "no verdict"}[passes]
    model = report.get("model_name") or "champion"
    version = f" version {report['version']}" if report.get("version") is not None else ""
    md = [f"# alignflow re-evaluation: {verdict}", "", f"Model `{md_cell(model)}`{version}; report `{file}`.", ""]
    if report.get("reason"):
        md += [md_cell(report["reason"]), ""]
    gates = report.get("gates")
    if isinstance(gates, list) and gates:
        rows = [(g.get("name"), "pass" if g.get("passed") else "FAIL", fmt_value(g.get("observed")),
                 fmt_value(g.get("threshold")), g.get("reason")) for g in gates]
        md += ["## Gates", ""] + md_table(("gate", "result", "observed", "threshold", "reason"), rows) + [""]
    if isinstance(report.get("headline"), dict) and report["headline"]:
        rows = [(k, fmt_value(v)) for k, v in report["headline"].items()]
        md += ["## Headline metrics", ""] + md_table(("metric", "value"), rows) + [""]
    scalars = [(k, fmt_value(v)) for k, v in report.items()
               if k != "reason" and (v is None or isinstance(v, (str, int, float, bool)))]
    if scalars:
        md += ["## Report", ""] + md_table(("field", "value"), scalars) + [""]
    return "\n".join(md)


@flow(name="alignflow-reevaluate", description="Re-evaluate the registered champion on the current eval sets.",
      persist_result=False)
def alignflow_reevaluate(repo: str = ".", command: list[str] | None = None, report: str = DEFAULT_REPORT,
                         fail_on_regression: bool = True, retries: int = RETRIES,
                         retry_delay_seconds: float = RETRY_DELAY_SECONDS) -> dict[str, Any]:
    """Run the re-evaluation command, publish its report; fail the run if the champion regressed.

    Args:
        repo: the project folder the command runs in.
        command: argv to run (default: this interpreter's `-m alignflow.cli reevaluate`).
        report: JSON the command writes, relative to repo.
        fail_on_regression: end the flow run Failed when the champion no longer passes its gates.
        retries, retry_delay_seconds: used only for transient failures (killed process, locked database).
    Returns:
        {still_passes, report_file, report}.
    """
    logger = get_run_logger()
    root = Path(repo).resolve()
    cmd = list(command) if command else default_command()
    state = run_reevaluation.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)(
        str(root), cmd, report, return_state=True)
    if not state.is_completed():
        exc = state.result(raise_on_failure=False)
        create_markdown_artifact(markdown=f"# alignflow re-evaluation: FAILED\n\n`{md_cell(' '.join(cmd))}`: "
                                 f"{md_cell(exc)}\n", key=ARTIFACT_KEY, description="alignflow champion re-evaluation")
        raise exc if isinstance(exc, BaseException) else RuntimeError(str(exc))
    result = state.result()
    passes = champion_passes(result)
    create_markdown_artifact(markdown=reevaluate_markdown(result, passes, report), key=ARTIFACT_KEY,
                             description="alignflow champion re-evaluation")
    summary = {"still_passes": passes, "report_file": report, "report": result}
    if passes is False:
        failed = [str(g.get("reason") or g.get("name")) for g in result.get("gates") or [] if not g.get("passed")]
        message = f"the champion no longer passes its gates: {'; '.join(failed) or 'see report'}"
        logger.error("%s", message)
        if fail_on_regression:
            raise ChampionRegressed(message, summary)
    else:
        logger.info("re-evaluation: %s", "champion still passes" if passes else
                    f"no verdict ({result.get('reason') or 'the report has no passed flag or gates'})")
    return summary


if __name__ == "__main__":
    try:
        alignflow_reevaluate()
    except ChampionRegressed as exc:
        raise SystemExit(f"alignflow reevaluate: {exc}") from None
