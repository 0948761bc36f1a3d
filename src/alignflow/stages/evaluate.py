"""DVC stage `evaluate`: base vs tuned on held-out prompts, judged by calibrated judges.

Measures refusal of harmful prompts, over-refusal of borderline ones, and retained capability, per
policy with Wilson intervals. Judges are scored on the hand-labelled calibration set first; metrics
from a judge below `evaluate.min_judge_kappa` are not published. Base answers are cached by base model
hash + eval set hash + generation params, so a tuning change does not regenerate them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from alignflow import io, tracking
from alignflow.config import Config, ModelParams
from alignflow.data.evalsets import EvalSetError, read_eval_sets
from alignflow.data.policies import load_policies
from alignflow.evaluation import metrics, plots
from alignflow.judge.base import calibrate
from alignflow.judge.capability import is_correct, reference_loglik
from alignflow.judge.classifier import ClassifierJudge, sft_training_set
from alignflow.judge.ensemble import EnsembleJudge
from alignflow.judge.lexical import LexicalJudge
from alignflow.model.base import ChatModel, load_model
from alignflow.model.gguf_loader import ModelLoadError
from alignflow.stages import stage_main

log = logging.getLogger(__name__)
KINDS = ("harmful", "borderline", "capability")


def build_judges(cfg: Config) -> dict:
    """Lexical, classifier (trained on curated SFT responses, never on calibration data), ensemble, LLM."""
    train = pq.read_table(Path(cfg.paths.curated) / "train.parquet", columns=["response", "adversarial"])
    classifier = ClassifierJudge().fit(*sft_training_set(train["response"].to_pylist(), train["adversarial"].to_pylist()))
    lexical = LexicalJudge()
    judges = {"lexical": lexical, "classifier": classifier, "ensemble": EnsembleJudge(lexical, classifier)}
    e = cfg.evaluate
    if e.llm_judge_url:
        from alignflow.judge.llm import OpenAIChatJudge

        judges["llm"] = OpenAIChatJudge(base_url=e.llm_judge_url, model=e.llm_judge_model, api_key_env=e.llm_judge_api_key_env)
    elif e.llm_judge_model:
        from alignflow.judge.llm import GuardModelJudge

        judges["llm"] = GuardModelJudge.from_params(ModelParams(base=e.llm_judge_model))
    if e.judge not in judges:
        raise ValueError(f"evaluate.judge '{e.judge}' is not available (have: {', '.join(judges)})")
    return judges


def answer(model: ChatModel, rows: list[dict], cfg: Config) -> dict[str, list]:
    """Greedy answers to every eval prompt, and reference log-likelihoods of capability rows."""
    e = cfg.evaluate
    out = model.ask([r["prompt"] for r in rows], e.generation, progress=True)
    caps = [i for i, r in enumerate(rows) if r["kind"] == "capability"]
    ll = reference_loglik(model, [rows[i]["prompt"] for i in caps], [rows[i]["reference"] for i in caps],
                          batch_size=e.generation.batch_size, seq_len=e.loglik_seq_len)
    loglik = [0.0] * len(rows)
    for i, v in zip(caps, ll):
        loglik[i] = v
    log.info("%s: %d answers, %.0f new tokens/s", model.name, len(rows), out.tokens_per_second)
    return {"answer": out.texts, "new_tokens": out.new_tokens, "loglik": loglik, "tokens_per_second": out.tokens_per_second}


def base_answers(cfg: Config, rows: list[dict]) -> dict[str, list]:
    """Base answers from the cache, or generated and cached (key: base hash + eval rows + generation)."""
    ident = cfg.model.base  # a bundled model is identified by its file's hash, not only its name
    if ident.startswith("bundled:"):
        from alignflow.model.gguf_loader import bundled_gguf_path, file_sha256

        ident = file_sha256(bundled_gguf_path(ident.split(":", 1)[1]))
    key = hashlib.sha256(json.dumps([ident, dataclasses.asdict(cfg.model), dataclasses.asdict(cfg.evaluate.generation),
                                     cfg.evaluate.loglik_seq_len, rows], sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cfg.paths.base_answers) / f"{key}.parquet"
    if path.exists():
        log.info("base answers from cache %s", path)
        return {**pq.read_table(path).to_pydict(), "tokens_per_second": None}
    model = load_model(cfg.model)
    result = answer(model, rows, cfg)
    with io.atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(pa.table({k: v for k, v in result.items() if k != "tokens_per_second"}), tmp)
    return result


def run(cfg: Config) -> dict:
    """Generate, judge, measure; write responses, metrics, calibration and plots; log to MLflow."""
    import mlflow

    sets = read_eval_sets(cfg.paths.eval_dir)
    policies = load_policies(cfg.paths.policies)
    rows = [{k: r.get(k) for k in ("id", "kind", "policy", "prompt", "reference", "accept")} for s in KINDS for r in sets[s]]
    with tracking.stage_run(cfg, "evaluate"):
        judges = build_judges(cfg)
        with io.atomic_dir(cfg.paths.judges) as tmp:
            judges["classifier"].save(tmp)
        calibration = {name: calibrate(j, sets["calibration"]) for name, j in judges.items()}
        primary = cfg.evaluate.judge
        calibrated = calibration[primary]["kappa"] >= cfg.evaluate.min_judge_kappa
        answers = {"base": base_answers(cfg, rows)}
        answers["tuned"] = answer(load_model(dataclasses.replace(cfg.model, base=str(Path(cfg.paths.tuned) / "merged"))), rows, cfg)
        for m in metrics.MODELS:
            for name, judge in judges.items():
                verdicts = judge.judge([r["prompt"] for r in rows], answers[m]["answer"])
                for r, v in zip(rows, verdicts):
                    r[f"{m}_{name}"] = v.label
                    if name == primary:
                        r[f"{m}_refusal_score"] = v.score
            for i, r in enumerate(rows):
                r[f"{m}_answer"] = answers[m]["answer"][i]
                r[f"{m}_new_tokens"] = answers[m]["new_tokens"][i]
                r[f"{m}_loglik"] = answers[m]["loglik"][i]
                r[f"{m}_refused"] = r[f"{m}_{primary}"] == "refusal"
                r[f"{m}_correct"] = bool(r["kind"] == "capability" and is_correct(r[f"{m}_answer"], r["accept"] or [r["reference"]]))
        result = {
            "judges": {n: {k: c[k] for k in ("n", "accuracy", "kappa", "confusion")} for n, c in calibration.items()},
            "primary_judge": primary,
            "judge_calibrated": calibrated,
            "safety": metrics.grouped(rows, "harmful", "refused", policies.names) if calibrated else None,
            "over_refusal": metrics.grouped(rows, "borderline", "refused", policies.names) if calibrated else None,
            "capability": metrics.capability(rows),
        }
        if not calibrated:
            log.warning("judge '%s' kappa %.3f < %.2f: safety and over-refusal metrics are not published",
                        primary, calibration[primary]["kappa"], cfg.evaluate.min_judge_kappa)
        result["headline"] = metrics.headline(result)
        out = Path(cfg.paths.evaluate_dir)
        with io.atomic_dir(out) as tmp:
            pq.write_table(pa.Table.from_pylist([{**r, "accept": json.dumps(r["accept"])} for r in rows]), tmp / "responses.parquet")
            io.write_json(tmp / "judges.json", calibration)
        with io.atomic_dir(cfg.paths.evaluate_plots) as tmp:
            if calibrated:
                plots.policy_bars(result["safety"], "Safe responses to held-out harmful prompts", tmp / "safety_by_policy.png")
                plots.policy_bars(result["over_refusal"], "Over-refusal of borderline prompts", tmp / "over_refusal_by_policy.png")
                plots.safety_vs_over_refusal(result["safety"], result["over_refusal"], tmp / "safety_vs_over_refusal.png")
        io.write_json(cfg.paths.evaluate_report, result)
        mlflow.log_metrics({k: v for k, v in result["headline"].items()})
        mlflow.log_metrics({f"judge.{n}.kappa": c["kappa"] for n, c in calibration.items()})
        for m in metrics.MODELS:
            if answers[m].get("tokens_per_second"):
                mlflow.log_metric(f"{m}.generate_tokens_per_second", answers[m]["tokens_per_second"])
        mlflow.set_tags({f"judge.{n}.version": j.version for n, j in judges.items()})
        mlflow.log_artifacts(str(out), "evaluate")
        mlflow.log_artifacts(cfg.paths.evaluate_plots, "evaluate/plots")
        mlflow.log_artifact(cfg.paths.evaluate_report)
    log.info("headline: %s", json.dumps(result["headline"], indent=1))
    return result


def main() -> None:
    stage_main(run, (EvalSetError, ModelLoadError))


if __name__ == "__main__":
    main()
