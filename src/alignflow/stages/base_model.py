"""DVC stage `base_model`: load the configured base model offline and prove it answers.

Writes a report with the model's identity (name, file hash, parameter count) and greedy
answers to the configured prompts; logs it to MLflow with load time and generation throughput.
"""

from __future__ import annotations

import logging
import time

from alignflow import io, tracking
from alignflow.config import Config, GenerateParams
from alignflow.model.base import ChatModel, load_model
from alignflow.model.gguf_loader import ModelLoadError
from alignflow.stages import stage_main

log = logging.getLogger(__name__)


def check_model(model: ChatModel, prompts: tuple[str, ...], gen: GenerateParams) -> tuple[dict, dict]:
    """Greedy answers to `prompts` (deterministic) and the generation timing (not)."""
    out = model.ask(list(prompts), gen)
    answers = [{"prompt": p, "answer": a, "new_tokens": n} for p, a, n in zip(prompts, out.texts, out.new_tokens)]
    return {"answers": answers}, {"generate_seconds": out.seconds, "new_tokens_per_second": out.tokens_per_second}


def run(cfg: Config) -> dict:
    """Load the base model, answer the smoke prompts, write the report, log to MLflow."""
    import mlflow

    with tracking.stage_run(cfg, "base_model"):
        t0 = time.perf_counter()
        model = load_model(cfg.model)
        timing = {"load_seconds": time.perf_counter() - t0}
        answers, gen_timing = check_model(model, cfg.base_model.prompts, cfg.generate)
        timing.update(gen_timing)
        identity = {k: v for k, v in model.info.items() if k != "path"}  # no machine-specific paths
        # Deterministic content only, so the same params give the same DVC hash; timings go to MLflow.
        report = {"model": {"base": cfg.model.base, "name": model.name, "sha256": model.source_hash, **identity}, **answers}
        mlflow.log_metrics(timing)
        mlflow.set_tags({"base_model.name": model.name, "base_model.sha256": model.source_hash})
        mlflow.log_dict(report, "base_model.json")
    io.write_json(cfg.paths.base_model_report, report)
    log.info("loaded in %.1f s; %.1f new tokens/s", timing["load_seconds"], timing["new_tokens_per_second"])
    for a in report["answers"]:
        log.info("Q: %s\nA: %s", a["prompt"], a["answer"])
    return report


def main() -> None:
    stage_main(run, (ModelLoadError,))


if __name__ == "__main__":
    main()
