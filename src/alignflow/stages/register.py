"""DVC stage `register`: gate the tuned model, record the decision either way, register it when it passes.

Never silently: a refused model is recorded with its reasons (reports/register.json, the model card and
the MLflow run) and the stage still exits 0; nothing is registered and no alias moves. A model that
passes every gate becomes a new version of `register.model_name` with lineage and headline-metric tags
and the alias `candidate`; it also becomes `champion` when its primary metric beats the champion's on
the same eval sets (or there is no champion).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
from pathlib import Path

from alignflow import io, tracking
from alignflow.config import Config
from alignflow.data.evalsets import EVAL_SETS
from alignflow.data.policies import load_policies
from alignflow.registry import lineage, model_card
from alignflow.registry.gates import check_gates, failed, should_promote
from alignflow.stages import stage_main

log = logging.getLogger(__name__)
CANDIDATE, CHAMPION = "candidate", "champion"
DVC_LOCK = "dvc.lock"  # DVC's own record, always beside dvc.yaml in the project root
DESCRIPTION_CHARS = 4900  # model version descriptions are 5,000 characters in MLflow's SQL schema


def read_report(path: str | Path) -> dict:
    """A JSON report, or {} when it is missing (its gates then fail and say so)."""
    path = Path(path)
    if not path.exists():
        log.warning("%s not found", path)
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def current_champion(client, name: str) -> dict | None:
    """{"version", "tags"} of the version with alias `champion`, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        # No such registered model, or no such alias on it (MLflow reports the latter as an invalid parameter).
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "alias" in str(exc).lower():
            return None
        raise
    return {"version": str(mv.version), "tags": dict(mv.tags)}


def log_datasets(cfg: Config, lock: dict) -> None:
    """Curated splits and eval sets as MLflow dataset inputs; digest = the file's md5 (DVC's per-file hash)."""
    import mlflow
    import pandas as pd

    files = [(Path(cfg.paths.curated) / f"{s}.parquet", ctx, cfg.paths.curated) for s, ctx in (("train", "training"), ("val", "validation"))]
    files += [(Path(cfg.paths.eval_dir) / f"{n}.jsonl", "judge_calibration" if n == "calibration" else "evaluation", cfg.paths.eval_dir)
              for n in EVAL_SETS]
    for file, context, dvc_path in files:
        if not file.exists():
            continue
        df = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_json(file, lines=True, dtype=False)
        md5 = hashlib.md5(file.read_bytes()).hexdigest()
        # MLflow registers its local-file source twice and warns that the path is ambiguous, and hints about
        # integer columns: neither applies to a logged input.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(df, source=str(file.resolve()), name=f"{Path(dvc_path).name}/{file.stem}", digest=md5)
            mlflow.log_input(ds, context=context, tags={"dvc.path": dvc_path, "dvc.md5": lineage.path_md5(lock, dvc_path), "file.md5": md5})


def register_version(cfg: Config, tags: dict[str, str], evaluation: dict, card: str, run_id: str) -> dict:
    """Log the pyfunc, register a version, tag it, set `candidate` and maybe `champion`."""
    from mlflow import MlflowClient

    from alignflow.registry import pyfunc

    p, client = cfg.register, MlflowClient()
    champion = current_champion(client, p.model_name)  # read before the new version exists
    info = pyfunc.log_chat_model(Path(cfg.paths.tuned) / "merged", Path(cfg.paths.model_card),
                                 dataclasses.asdict(cfg.evaluate.generation), cfg.base_model.prompts[0], p.model_name)
    version = str(info.registered_model_version)
    for key, value in {**tags, "register.run_id": run_id}.items():
        client.set_model_version_tag(p.model_name, version, key, value)
    client.update_model_version(p.model_name, version, description=model_card.fit_sections(card, DESCRIPTION_CHARS))
    client.set_registered_model_alias(p.model_name, CANDIDATE, version)
    promote, why = should_promote((evaluation.get("headline") or {}).get(p.primary_metric), tags["lineage.eval_key"], champion, p)
    if promote:
        client.set_registered_model_alias(p.model_name, CHAMPION, version)
    log.info("registered %s version %s (%s); champion: %s", p.model_name, version, info.model_uri, why)
    return {"version": version, "aliases": [CANDIDATE, CHAMPION] if promote else [CANDIDATE],
            "champion": {"promoted": promote, "reason": why, "previous": champion and champion["version"]}}


def run(cfg: Config) -> dict:
    """Check the gates, write the model card and decision, log everything, register when all gates pass."""
    import mlflow

    p, paths = cfg.register, cfg.paths
    evaluation, validation, curation = (read_report(f) for f in (paths.evaluate_report, paths.validate_report, paths.curate_report))
    lock = lineage.read_lock(DVC_LOCK)
    tags = lineage.lineage_tags(cfg, evaluation, lock)
    gates = check_gates(evaluation, validation, p)
    refused = failed(gates)
    decision = "refused" if refused else "registered"
    card = model_card.render_card(p.model_name, decision, gates, evaluation, curation, validation, load_policies(paths.policies), tags)
    io.write_text(paths.model_card, card)
    report = {"model_name": p.model_name, "decision": decision, "reasons": [g.reason for g in refused],
              "gates": [g.to_dict() for g in gates], "version": None, "aliases": [], "champion": None}
    with tracking.stage_run(cfg, "register") as run:
        mlflow.set_tags({**tags, "register.decision": decision, **{f"gate.{g.name}": "pass" if g.passed else "fail" for g in gates}})
        mlflow.log_metrics({"register.gates_passed": len(gates) - len(refused), "register.gates_failed": len(refused)})
        log_datasets(cfg, lock)
        for f in (paths.curate_report, paths.validate_report, paths.evaluate_report, paths.model_card):
            if Path(f).exists():
                mlflow.log_artifact(f, "reports")
        if refused:
            log.warning("model refused, not registered:\n  %s", "\n  ".join(report["reasons"]))
        else:
            report.update(register_version(cfg, tags, evaluation, card, run.info.run_id))
        io.write_json(paths.register_report, report)
        mlflow.log_artifact(paths.register_report, "reports")
    return report


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
