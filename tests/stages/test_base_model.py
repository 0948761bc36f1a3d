"""The base_model stage's run() inside tmp_path, with the tiny random model and a real MLflow store."""

import dataclasses
import json

import mlflow

from alignflow import config
from alignflow.stages import base_model


def test_run_writes_report_and_logs_to_mlflow(tmp_path, monkeypatch, repo_root):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = config.load(repo_root / "params.yaml")
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, base="random:tiny"),
        generate=dataclasses.replace(cfg.generate, batch_size=2, max_prompt_tokens=48, max_new_tokens=6),
    )
    report = base_model.run(cfg)

    on_disk = json.loads((tmp_path / "reports/base_model.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["model"]["name"] == "tiny-random-llama3"
    assert [a["prompt"] for a in on_disk["answers"]] == list(cfg.base_model.prompts)
    assert not list((tmp_path / "reports").glob(".*"))  # no temp files left behind

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["alignflow"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["alignflow.stage"] == "base_model"
    assert run.data.params["model.base"] == "random:tiny"
    assert run.data.metrics["new_tokens_per_second"] > 0
