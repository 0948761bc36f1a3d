"""MLflow set-up: a local SQLite store in the project folder unless MLFLOW_TRACKING_URI says otherwise."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alignflow.config import Config, flatten, to_dict


def tracking_uri(cfg: Config) -> str:
    """MLFLOW_TRACKING_URI if set, else sqlite:///<abs path of paths.mlflow_db>."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(cfg.paths.mlflow_db).resolve()}"


def setup(cfg: Config) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    import mlflow

    uri = tracking_uri(cfg)
    local = not os.environ.get("MLFLOW_TRACKING_URI")  # read before set_tracking_uri, which sets it
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is not None:
        exp_id = exp.experiment_id
    else:
        artifacts = None
        if local:
            artifacts = Path(cfg.paths.mlflow_artifacts).resolve().as_uri()
        exp_id = mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextmanager
def stage_run(cfg: Config, stage: str) -> Iterator[object]:
    """An MLflow run for one stage, with the resolved config logged as params and a JSON artifact."""
    import mlflow

    setup(cfg)
    with mlflow.start_run(run_name=stage, tags={"alignflow.stage": stage}) as run:
        params = flatten(to_dict(cfg))
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_dict(to_dict(cfg), "config.json")
        yield run
