"""End to end: `dvc repro` of the real dvc.yaml in a temporary copy of the repo, on the tiny model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml


def dvc(cwd, *args, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", ALIGNFLOW_NO_PROGRESS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(repo_root / name, root / name)
    for name in ("src", "expectations"):
        shutil.copytree(repo_root / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo_root / "data", root / "data", ignore=shutil.ignore_patterns("curated"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"]["base"] = "random:tiny"
    params["generate"].update(batch_size=2, max_prompt_tokens=48, max_new_tokens=6)
    params["tune"].update(seq_len=64, max_steps=2, lora_top_layers=0)
    params["evaluate"]["generation"].update(batch_size=16, max_prompt_tokens=96, max_new_tokens=4)
    params["evaluate"]["loglik_seq_len"] = 96
    # A random model is not safe: open the gates so this test sees a registration (gates have their own tests).
    params["register"].update(min_safe_rate=0.0, min_safe_rate_per_policy=0.0, max_over_refusal=1.0,
                              max_capability_drop=1.0, max_policy_regression=1.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(root, "init", "--no-scm", "-q")
    first = dvc(root, "repro")
    return root, first


def test_dvc_repro_runs_every_stage_and_registers(tiny_repo):
    root, first = tiny_repo
    for stage in ("base_model", "curate", "validate", "tune", "evaluate", "register"):
        assert f"Running stage '{stage}'" in first.stdout
    curate = json.loads((root / "reports/curate.json").read_text())
    assert curate["conserved"] and curate["rows_in"] == curate["rows_out"] + curate["rows_quarantined"]
    assert json.loads((root / "reports/validate.json").read_text())["passed"]
    registration = json.loads((root / "reports/register.json").read_text())
    assert registration["decision"] == "registered" and "candidate" in registration["aliases"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    version = mlflow.MlflowClient().get_model_version_by_alias(registration["model_name"], "candidate")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    curated_md5 = next(o["md5"] for o in lock["stages"]["curate"]["outs"] if o["path"] == "data/curated")
    assert curated_md5 in json.dumps(version.tags)
    assert (root / "reports/model_card.md").read_text().startswith("#")


def test_second_repro_is_up_to_date(tiny_repo):
    root, _ = tiny_repo
    second = dvc(root, "repro")
    assert "Running stage" not in second.stdout
    assert "up to date" in dvc(root, "status").stdout.lower()


def test_failed_validation_stops_the_dag(tiny_repo, tmp_path):
    root, _ = tiny_repo
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", "mlruns"))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["validate"]["min_rows_per_cell"] = 1000  # no cell can have that many rows
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = dvc(copy, "repro", check=False)
    assert proc.returncode != 0
    assert "curated_coverage" in proc.stdout + proc.stderr
    assert "Running stage 'tune'" not in proc.stdout
