"""End to end: `dvc repro` of the real dvc.yaml in a temporary copy of the repo, on the tiny model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def dvc(cwd, *args):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture
def tiny_repo(tmp_path, repo_root):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(repo_root / name, tmp_path / name)
    for name in ("src", "data"):
        shutil.copytree(repo_root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["model"]["base"] = "random:tiny"
    params["generate"].update(batch_size=2, max_prompt_tokens=48, max_new_tokens=6)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    dvc(tmp_path, "init", "--no-scm", "-q")
    return tmp_path


def test_dvc_repro_runs_then_is_up_to_date(tiny_repo):
    dvc(tiny_repo, "repro")
    report = json.loads((tiny_repo / "reports/base_model.json").read_text())
    assert report["model"]["base"] == "random:tiny"
    assert (tiny_repo / "dvc.lock").exists() and (tiny_repo / "mlflow.db").exists()
    second = dvc(tiny_repo, "repro")
    assert "didn't change" in second or "up to date" in second.lower()
    status = dvc(tiny_repo, "status")
    assert "up to date" in status.lower()
