"""DVC stage `validate`: check the curated splits and the held-out eval sets with Great Expectations.

The suites are the JSON files in `paths.expectations` (alignflow.data.expectations). Dataset-level rules
become ordinary GX expectations on derived frames: a normalised-prompt column (uniqueness), the id of the
eval prompt a curated prompt equals (contamination), and one row per policy x use case cell with its
adversarial row count (coverage, empty cells included). Results JSON, Data Docs and the summary are
written first; then any failed `critical` expectation fails the stage. `warning` failures are reported only.
Summary: per suite `success` = every expectation held; top-level `passed` = no critical failure.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from alignflow import io, tracking
from alignflow.config import Config, ValidateParams
from alignflow.data.expectations import build_frames, build_suites, read_suites
from alignflow.data.policies import Policies, load_policies
from alignflow.stages import stage_main

log = logging.getLogger(__name__)

CURATED_SPLITS = ("train", "val")
EVAL_SETS = ("harmful", "borderline", "capability", "calibration")
# SUMMARY keeps up to 20 offending rows per expectation, each with its id, for messages and Data Docs.
RESULT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["id"]}


class ValidationFailed(RuntimeError):
    """At least one critical expectation failed; the message names each with an offending row."""


@dataclass(frozen=True)
class Validation:
    results: dict[str, dict]  # suite name -> GX validation result (JSON)
    summary: dict  # deterministic counts and flags: the DVC metrics
    failures: list[str]  # one line per failed critical expectation


def gx_context(docs_dir: Path):
    """An in-memory GX context (nothing written but Data Docs, no analytics, no progress bars)."""
    site = {"class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
    project = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                                progress_bars=ProgressBarsConfig(globally=False), data_docs_sites={"local": site})
    return gx.get_context(mode="ephemeral", project_config=project)


def plain(value):
    """A numpy scalar as its Python value (so messages read rows=0, not rows=np.int64(0))."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) else value


def excerpt(value, regex: str | None):
    """A long text cut to where `regex` matches it (or its start), so the message shows the offending part."""
    if not isinstance(value, str) or len(value) <= 120:
        return value
    start = max(0, m.start() - 40) if regex and (m := re.search(regex, value)) else 0
    return ("..." if start else "") + value[start:start + 117] + "..."


def error_of(info: dict) -> str | None:
    """GX's exception message, found at the top of exception_info or nested per metric."""
    if info.get("raised_exception"):
        return info.get("exception_message")
    return next((v["exception_message"] for v in info.values() if isinstance(v, dict) and v.get("exception_message")), None)


def describe(suite: str, r) -> str:
    """One line for a failed expectation: its name, what it checks, and an offending row (id and value)."""
    cfg, res = r.expectation_config, r.result or {}
    column = cfg.kwargs.get("column") or cfg.kwargs.get("column_A") or "table"
    head = f"{suite}.{cfg.meta['name']} ({cfg.type} on {column})"
    error = error_of(r.exception_info or {})
    if error or not res:
        return f"{head}: could not be evaluated: {error}"
    rows = res.get("partial_unexpected_index_list") or []
    if rows:
        value = excerpt(plain(rows[0].get(column)), cfg.kwargs.get("regex"))
        return f"{head}: {res.get('unexpected_count')} row(s), e.g. id={rows[0].get('id')!r} {column}={value!r}"
    missing = ((res.get("details") or {}).get("mismatched") or {}).get("missing")
    return f"{head}: missing columns {missing}" if missing else f"{head}: observed {plain(res.get('observed_value'))}"


def validate(curated: pd.DataFrame, evals: pd.DataFrame, p: ValidateParams, policies: Policies,
             raw_suites: dict[str, dict], docs_dir: Path) -> Validation:
    """Run every suite on its frame; build Data Docs in `docs_dir`; summarise the results."""
    frames = build_frames(curated, evals, policies)
    context = gx_context(docs_dir)
    source = context.data_sources.add_pandas("alignflow")
    results, summary, failures, failed = {}, {"suites": {}}, [], []
    # Each suite has its own frame, and a Checkpoint hands one batch_parameters to all its definitions:
    # so each ValidationDefinition runs on its own (storing its result), and Data Docs are built once after.
    for suite in build_suites(raw_suites, p, policies):
        batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("whole")
        definition = gx.ValidationDefinition(name=suite.name, data=batch, suite=context.suites.add(suite))
        definition = context.validation_definitions.add(definition)
        result = definition.run(batch_parameters={"dataframe": frames[suite.meta["frame"]]}, result_format=RESULT_FORMAT)
        results[suite.name] = result.to_json_dict()
        bad = [(r, getattr(r.expectation_config.severity, "value", r.expectation_config.severity))
               for r in result.results if not r.success]
        for r, severity in bad:
            failed.append(f"{suite.name}.{r.expectation_config.meta['name']} ({severity})")
            line = describe(suite.name, r)
            failures += [line] if severity == "critical" else []
            log.log(logging.ERROR if severity == "critical" else logging.WARNING, "%s", line)
        summary["suites"][suite.name] = {"evaluated": len(result.results), "failed": len(bad), "success": bool(result.success),
                                         "failed_critical": sum(s == "critical" for _, s in bad)}
    context.build_data_docs()
    summary.update(passed=not failures, failed=sorted(failed))
    return Validation(results, summary, sorted(failures))


def read_jsonl(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run(cfg: Config) -> dict:
    """Validate the curated splits and eval sets; write results, Data Docs and summary; log to MLflow."""
    import mlflow

    curated = pd.concat([pd.read_parquet(Path(cfg.paths.curated) / f"{s}.parquet") for s in CURATED_SPLITS],
                        ignore_index=True)
    evals = pd.DataFrame([{**row, "eval_set": name} for name in EVAL_SETS
                          for row in read_jsonl(Path(cfg.paths.eval_dir) / f"{name}.jsonl")])
    policies, raw_suites = load_policies(cfg.paths.policies), read_suites(cfg.paths.expectations)
    out = Path(cfg.paths.validate_dir)
    with tracking.stage_run(cfg, "validate"):
        with io.atomic_dir(out) as tmp:
            outcome = validate(curated, evals, cfg.validate, policies, raw_suites, tmp / "data_docs")
            io.write_json(tmp / "results.json", outcome.results)
        io.write_json(cfg.paths.validate_report, outcome.summary)
        metrics = {f"{s}.{k}": float(v) for s, d in outcome.summary["suites"].items() for k, v in d.items()}
        mlflow.log_metrics({**metrics, "passed": float(outcome.summary["passed"])})
        mlflow.log_artifact(str(out / "results.json"))
        mlflow.log_artifacts(str(out / "data_docs"), "data_docs")
        if outcome.failures:  # raised inside the MLflow run, so the run is marked FAILED
            raise ValidationFailed(f"{len(outcome.failures)} critical expectation(s) failed "
                                   f"(Data Docs: {out / 'data_docs' / 'index.html'}):\n  "
                                   + "\n  ".join(outcome.failures))
    log.info("all critical expectations held: %s", outcome.summary["suites"])
    return outcome.summary


def main() -> None:
    stage_main(run, (ValidationFailed,))


if __name__ == "__main__":
    main()
