"""DVC stage `tune`: LoRA supervised fine-tuning of the base model on the curated splits.

Rows are formatted by the shared chat template; only the `messages` reach the tokenizer (policy,
use case and the other metadata never do). Loss is on response tokens only. Checkpoints persist
across runs, so a killed run started again resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pyarrow.parquet as pq

from alignflow import config, io, tracking
from alignflow.config import Config
from alignflow.model import artifacts, sft, training
from alignflow.model.base import ChatModel, load_model
from alignflow.model.gguf_loader import ModelLoadError
from alignflow.registry import lineage
from alignflow.stages import stage_main

log = logging.getLogger(__name__)


def encode_rows(
    model: ChatModel, rows: list[dict], seq_len: int, benign_weight: float = 1.0, lead: tuple[int, float] = (0, 1.0),
    truncate_response: bool = False,
) -> tuple[list[sft.Encoded], list[dict]]:
    """Encode conversations for training; rows that cannot fit seq_len (see sft.fit_length) are returned apart.

    Only `messages` reach the tokenizer; the `adversarial` flag only sets the loss weight.
    """
    kept, too_long = [], []
    for row in rows:
        enc = sft.encode_conversation(model.tokenizer, model.template, row["messages"])  # messages only
        enc = dataclasses.replace(enc, weight=1.0 if row["adversarial"] else benign_weight, lead=lead)
        try:
            kept.append(sft.fit_length(enc, seq_len, truncate_response))
        except sft.TooLongError as exc:
            too_long.append({"id": row["id"], "reason": "too_long", "detail": str(exc)})
    return kept, too_long


PACKAGE = Path(__file__).resolve().parents[1]
# The code of tune's dvc.yaml deps that shapes a step, as (folder, glob) under the package.
TRAINING_CODE = (("stages", "tune.py"), ("model", "*.py"), (".", "config.py"))
TRAINING_LIBRARIES = ("jax", "jaxlib", "keras", "keras-hub", "numpy")


def code_hash(package: Path = PACKAGE) -> str:
    """sha256 of the training code (TRAINING_CODE under `package`) and the versions of the libraries
    that run it: a checkpoint made by other code may hold weights no run of this code would reach."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(lib: str) -> str:
        try:
            return version(lib)
        except PackageNotFoundError:
            return "missing"

    parts = [lineage.files_digest(package / folder, pattern) for folder, pattern in TRAINING_CODE]
    parts += [f"{lib}=={installed(lib)}" for lib in TRAINING_LIBRARIES]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def fingerprint(cfg: Config, base_hash: str, rows: list[dict]) -> str:
    """What a checkpoint must match to be resumed: tune params, seed, base model, training data, and
    the training code and library versions (code_hash)."""
    h = hashlib.sha256(json.dumps([dataclasses.asdict(cfg.tune), cfg.seed, base_hash, code_hash()], sort_keys=True).encode())
    for row in rows:
        h.update(json.dumps([row["id"], row["messages"]], sort_keys=True).encode())
    return h.hexdigest()


def run(cfg: Config) -> dict:
    """Tune, then write the adapter, the merged preset, metrics and curves."""
    import keras
    import mlflow

    p = cfg.tune
    split = {s: pq.read_table(Path(cfg.paths.curated) / f"{s}.parquet").to_pylist() for s in ("train", "val")}
    with tracking.stage_run(cfg, "tune"):
        model = load_model(cfg.model)
        train_rows, train_long = encode_rows(model, split["train"], p.seq_len, p.benign_weight,
                                              (p.lead_tokens, p.lead_weight), p.truncate_responses)
        val_rows, val_long = encode_rows(model, split["val"], p.seq_len, truncate_response=p.truncate_responses)
        if not train_rows:
            raise training.TrainingError(f"no training rows fit tune.seq_len={p.seq_len}")
        total = training.plan([len(r.ids) for r in train_rows], p, cfg.seed).total
        keras.utils.set_random_seed(cfg.seed)  # LoRA's initial A matrices: same seed, same run
        sft.enable_lora(model.causal_lm.backbone, p.lora_rank, p.lora_top_layers, p.lora_targets)
        sft_model = training.compile_for_sft(model.causal_lm.backbone, p, total)
        result = training.train(
            sft_model, train_rows, val_rows, p, cfg.seed, model.tokenizer.pad_id,
            checkpoint_dir=Path(cfg.paths.checkpoints), fingerprint=fingerprint(cfg, model.source_hash, split["train"]),
            on_step=lambda r: mlflow.log_metrics({"train_loss": r["loss"], "lr": r["lr"],
                                                  "tokens_per_second": r["tokens_per_second"]}, step=r["step"]),
        )
        for v in result.val_history:
            mlflow.log_metric("val_loss", v["val_loss"], step=v["step"])
        truncated = sum(1 for r in train_rows + val_rows if r.truncated_prompt_tokens)
        cut = sum(1 for r in train_rows + val_rows if r.truncated_response_tokens)
        meta = {"base": cfg.model.base, "base_sha256": model.source_hash, "lora_rank": p.lora_rank,
                "lora_top_layers": p.lora_top_layers,
                "lora_targets": list(p.lora_targets), "seq_len": p.seq_len, "steps": result.steps,
                "seed": cfg.seed, "config": config.to_dict(cfg)}
        with io.atomic_dir(cfg.paths.tuned) as tmp:
            artifacts.save_tuned(model, tmp, meta)
        losses = [h["loss"] for h in result.history]
        report = {
            "steps": result.steps,
            "train_rows": len(train_rows), "val_rows": len(val_rows),
            "rows_too_long": len(train_long) + len(val_long), "too_long_ids": [r["id"] for r in train_long + val_long],
            "rows_prompt_truncated": truncated, "rows_response_truncated": cut, "train_seconds": round(result.seconds, 1),
            "tokens_per_second": round(result.tokens / result.seconds, 1) if result.seconds else None,
            "rows_per_step": round(sum(h.get("rows", 0) for h in result.history) / max(len(result.history), 1), 2),
            "train_loss_first": losses[0], "train_loss_last": losses[-1],
            "train_loss_last10_mean": round(sum(losses[-10:]) / len(losses[-10:]), 5),
            "val_loss_before": result.val_history[0]["val_loss"] if result.val_history else None,
            "val_loss_after": result.val_history[-1]["val_loss"] if result.val_history else None,
        }
        io.write_json(cfg.paths.tune_curve, [{k: h[k] for k in ("step", "loss", "lr")} for h in result.history])
        io.write_json(cfg.paths.tune_val_curve, result.val_history)
        io.write_json(cfg.paths.tune_report, report)
        mlflow.log_metrics({"resumed_from_step": result.resumed_from, "train_seconds": result.seconds,
                            "rows_too_long": report["rows_too_long"], "rows_response_truncated": cut})
        mlflow.log_artifact(cfg.paths.tune_report)
        mlflow.log_artifact(str(Path(cfg.paths.tuned) / "adapter"), artifact_path="adapter")
    log.info("tuned %d steps in %.0f s: loss %.3f -> %.3f, val loss %s", result.steps, result.seconds,
             report["train_loss_first"], report["train_loss_last"], [v["val_loss"] for v in result.val_history])
    return report


def main() -> None:
    stage_main(run, (training.TrainingError, ModelLoadError))


if __name__ == "__main__":
    main()
