"""Re-evaluate the champion on today's eval sets and judges, and record on its version whether it still passes.

Eval sets grow and judges improve after a model was registered; the champion's registration numbers then
no longer say how it does now. This runs the evaluate stage itself (evaluate.run, unchanged: same judges,
calibration, cached base answers) on the champion's merged preset, with every output redirected to a
temporary folder so no DVC output changes. The gates are checked again; the validation gate uses the
validation report recorded when the champion was registered (its training data has not changed).
Aliases are never moved here: a champion that no longer passes is flagged, and people decide.

With `eval_dir` (`alignflow reevaluate --eval-dir DIR`) the champion answers the sets found in DIR instead
(any of the four `<set>.jsonl` DIR lacks comes from paths.eval_dir): a fresh held-out set, written after the
model was tuned, tests it without touching the pipeline. Base answers for such sets are cached beside the
pipeline's (`<paths.base_answers>_reevaluate`), so the evaluate stage's DVC output stays as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from alignflow import config, io, tracking
from alignflow.config import Config
from alignflow.data.evalsets import EVAL_SETS
from alignflow.registry import lineage
from alignflow.registry.gates import check_gates, failed
from alignflow.stages import evaluate
from alignflow.stages.register import CHAMPION, current_champion

log = logging.getLogger(__name__)
REPORT = "reevaluate.json"  # under paths.reports


def registration_validation(tags: dict[str, str], validate_report: str) -> dict:
    """The validation report logged by the run that registered the version, or {} (its gate then fails)."""
    import mlflow

    run_id = tags.get("register.run_id")
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/reports/{Path(validate_report).name}") if run_id else {}
    except Exception as exc:  # noqa: BLE001 (any store error means: not recorded)
        log.warning("validation report of run %s not readable: %s", run_id, exc)
        return {}


def merged_eval_dir(eval_dir: str | Path, default_dir: str | Path, into: Path) -> Path:
    """A folder of the four eval sets: each from `eval_dir` when it has one, else from `default_dir` (links)."""
    into.mkdir(parents=True)
    found = [name for name in EVAL_SETS if (Path(eval_dir) / f"{name}.jsonl").is_file()]
    if not found:
        raise FileNotFoundError(f"{eval_dir}: holds none of {', '.join(f'{n}.jsonl' for n in EVAL_SETS)}")
    for name in EVAL_SETS:
        src = Path(eval_dir if name in found else default_dir) / f"{name}.jsonl"
        (into / src.name).symlink_to(src.resolve())
    return into


def evaluate_version(cfg: Config, name: str, version: str, eval_dir: str | Path | None = None) -> tuple[dict, str, str]:
    """evaluate.run on a registered version's merged preset (on the sets of `eval_dir` when given, see the
    module doc); returns (evaluation, evaluate run id, eval key of the sets it answered)."""
    import mlflow
    from mlflow.models import Model

    from alignflow.registry.pyfunc import MERGED

    with tempfile.TemporaryDirectory(prefix="reevaluate-") as tmp:
        tmp = Path(tmp)
        paths = dataclasses.replace(cfg.paths, tuned=str(tmp / "tuned"), evaluate_dir=str(tmp / "evaluate"),
                                    evaluate_plots=str(tmp / "evaluate_plots"), evaluate_report=str(tmp / "evaluate.json"),
                                    judges=str(tmp / "judges"))
        if eval_dir is not None:  # before the download: a folder without eval sets fails at once
            paths = dataclasses.replace(paths, eval_dir=str(merged_eval_dir(eval_dir, cfg.paths.eval_dir, tmp / "eval")),
                                        base_answers=str(cfg.paths.base_answers).rstrip("/") + "_reevaluate")
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(tmp / "model")))
        merged = local / Model.load(str(local)).flavors["python_function"]["artifacts"][MERGED]["path"]
        (tmp / "tuned").mkdir()
        (tmp / "tuned" / "merged").symlink_to(merged.resolve(), target_is_directory=True)  # evaluate reads <tuned>/merged
        evaluation = evaluate.run(dataclasses.replace(cfg, paths=paths))
        key = lineage.eval_key(paths.eval_dir, str(evaluation.get("primary_judge")))
        return evaluation, mlflow.last_active_run().info.run_id, key


def reevaluate_champion(cfg: Config, eval_dir: str | Path | None = None) -> dict:
    """Evaluate `models:/<name>@champion` now (on `eval_dir`'s sets when given), check the gates, tag the
    version, write reports/reevaluate.json."""
    from mlflow import MlflowClient

    tracking.setup(cfg)
    p, client = cfg.register, MlflowClient()
    out = Path(cfg.paths.reports) / REPORT
    champion = current_champion(client, p.model_name)
    if champion is None:
        report = {"model_name": p.model_name, "version": None, "passed": None,
                  "reason": f"no version of '{p.model_name}' has the alias '{CHAMPION}': nothing to re-evaluate"}
        log.warning(report["reason"])
        io.write_json(out, report)
        return report
    version = champion["version"]
    evaluation, run_id, key = evaluate_version(cfg, p.model_name, version, eval_dir)
    gates = check_gates(evaluation, registration_validation(champion["tags"], cfg.paths.validate_report), p)
    refused = failed(gates)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    answered = str(eval_dir or cfg.paths.eval_dir)
    tags = {"reevaluation.passed": str(not refused).lower(), "reevaluation.date": date, "reevaluation.eval_key": key,
            "reevaluation.run_id": run_id, "reevaluation.eval_dir": answered,
            "reevaluation.failed_gates": ",".join(g.name for g in refused),
            **{f"reevaluation.metrics.{k}": str(v) for k, v in (evaluation.get("headline") or {}).items()}}
    for k, v in tags.items():
        client.set_model_version_tag(p.model_name, version, k, v)
    report = {"model_name": p.model_name, "version": version, "passed": not refused, "date": date,
              "eval_dir": answered, "eval_key": key,
              "evaluate_run_id": run_id, "reasons": [g.reason for g in refused], "gates": [g.to_dict() for g in gates],
              "headline": evaluation.get("headline")}
    io.write_json(out, report)
    client.set_tag(run_id, "alignflow.reevaluation_of", f"{p.model_name}/{version}")
    client.log_artifact(run_id, str(out), "reports")
    if refused:
        log.warning("champion %s v%s no longer passes (alias kept; decide by hand):\n  %s", p.model_name, version,
                    "\n  ".join(report["reasons"]))
    else:
        log.info("champion %s v%s still passes every gate", p.model_name, version)
    return report


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    reevaluate_champion(config.load())


if __name__ == "__main__":
    main()
