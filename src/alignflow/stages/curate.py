"""DVC stage `curate`: raw SFT rows -> curated train/val splits, quarantine and a curation report.

Every dropped row lands in quarantine.parquet with the filter that dropped it and why; rows in
(non-blank raw lines) = rows out + rows quarantined, checked before anything is written.
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alignflow import io, tracking
from alignflow.config import Config
from alignflow.data.curation import curate
from alignflow.data.curation_report import build_report, coverage
from alignflow.data.evalsets import EvalSetError, held_out_prompts, read_eval_sets
from alignflow.data.policies import PoliciesError, load_policies
from alignflow.data.records import Dropped, read_lines
from alignflow.stages import stage_main

log = logging.getLogger(__name__)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
CURATED_SCHEMA = pa.schema([
    ("id", pa.string()), ("messages", pa.list_(MESSAGE)), ("prompt", pa.string()), ("response", pa.string()),
    ("policy", pa.string()), ("use_case", pa.string()), ("adversarial", pa.bool_()),
    ("formulation", pa.string()), ("source", pa.string()), ("pii_replaced", pa.int32()), ("split", pa.string()),
])
QUARANTINE_SCHEMA = pa.schema([
    ("id", pa.string()), ("file", pa.string()), ("line", pa.int64()), ("field", pa.string()),
    ("reason", pa.string()), ("filter", pa.string()), ("detail", pa.string()), ("raw", pa.string()),
])


class CurateError(RuntimeError):
    """Curation cannot produce trustworthy output (no input, too much quarantined, rows lost)."""


@dataclass
class StageOutput:
    kept: pa.Table  # kept rows: the CURATED_SCHEMA columns plus curation helpers (curation.PREPARED)
    dropped: list[Dropped]
    report: dict
    coverage: list[dict]


def curate_files(cfg: Config) -> StageOutput:
    """Read raw lines and eval sets, curate and build the report; check conservation and the bounds.

    Writes nothing but a temporary copy of the lines and logs nothing to MLflow (benchmarks/curate
    times exactly this plus `write_outputs`).
    """
    import datasets

    datasets.disable_caching()  # DVC is the cache; stale HF cache files can also pin num_proc (DESIGN.md)
    policies = load_policies(cfg.paths.policies)
    files = sorted(Path(cfg.paths.raw_sft).glob("*.jsonl"))
    if not files:
        raise CurateError(f"{cfg.paths.raw_sft}: no *.jsonl files to curate")
    eval_ids, eval_prompts = held_out_prompts(read_eval_sets(cfg.paths.eval_dir))
    table, names = read_lines(files)
    if table.num_rows == 0:
        raise CurateError(f"{cfg.paths.raw_sft}: the *.jsonl files hold no rows")
    with tempfile.TemporaryDirectory(prefix="alignflow-curate-", ignore_cleanup_errors=True) as tmp:
        # Workers map a file-backed dataset; an in-memory one would be pickled to each of them.
        path = Path(tmp) / "lines.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=10_000)
        del table
        result = curate(datasets.Dataset.from_file(str(path)), names, policies, eval_ids, eval_prompts,
                        cfg.curate, cfg.seed)
    kept = result.kept.with_format("arrow")[:]
    cells = coverage(policies, kept)
    report = build_report(result.rows_in, kept, result.dropped, result.pii, cells, result.distinct)
    if not report["conserved"]:
        raise CurateError(f"row conservation broken: {result.rows_in} in, {report['rows_out']} out, "
                          f"{len(result.dropped)} quarantined")
    if report["quarantined_share"] > cfg.curate.max_quarantine_share:
        reasons = ", ".join(f"{k}: {v}" for k, v in report["quarantined_by_reason"].items())
        raise CurateError(
            f"{len(result.dropped)} of {result.rows_in} rows quarantined ({report['quarantined_share']:.1%} > "
            f"curate.max_quarantine_share {cfg.curate.max_quarantine_share:.0%}): {reasons}"
        )
    return StageOutput(kept, result.dropped, report, cells)


def run(cfg: Config) -> dict:
    """Read raw rows and eval sets, curate, check the bounds, write outputs atomically, log to MLflow."""
    import mlflow

    out = curate_files(cfg)
    report = out.report
    with tracking.stage_run(cfg, "curate"):
        write_outputs(cfg, out)
        mlflow.log_metrics({k: report[k] for k in ("rows_in", "rows_out", "rows_quarantined", "quarantined_share")})
        mlflow.log_metrics({f"quarantined.{k}": v for k, v in report["quarantined_by_reason"].items()})
        mlflow.log_metric("coverage.min_rows_per_cell", report["coverage"]["min_rows_per_cell"])
        mlflow.log_artifact(cfg.paths.curate_report)
        mlflow.log_artifact(cfg.paths.coverage_plot)
    log.info("curated %d rows in: %d out (%s), %d quarantined (%s)", report["rows_in"], report["rows_out"],
             report["splits"], len(out.dropped), report["quarantined_by_reason"])
    return report


def write_outputs(cfg: Config, out: StageOutput) -> None:
    """train/val/quarantine Parquet files, swapped in as one folder; then the report and coverage JSON."""
    columns = dict(zip(Dropped._fields, zip(*out.dropped))) if out.dropped else dict.fromkeys(Dropped._fields, ())
    tables = {"quarantine": pa.table({c: list(columns[c]) for c in QUARANTINE_SCHEMA.names}, schema=QUARANTINE_SCHEMA)}
    for split in ("train", "val"):
        part = out.kept.filter(pc.equal(out.kept.column("split"), split))
        # One chunk and the bare schema (no datasets metadata): the same bytes for the same rows.
        tables[split] = part.select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA).combine_chunks()
    with io.atomic_dir(cfg.paths.curated) as tmp, ThreadPoolExecutor(len(tables)) as pool:
        # Parquet encoding releases the GIL: the three files are written at once (~2x faster on 2 cores).
        list(pool.map(lambda name: pq.write_table(tables[name], tmp / f"{name}.parquet"), tables))
    io.write_json(cfg.paths.curate_report, out.report)
    io.write_json(cfg.paths.coverage_plot, out.coverage)


def main() -> None:
    stage_main(run, (CurateError, PoliciesError, EvalSetError))


if __name__ == "__main__":
    main()
