"""Shared fixtures: the tiny random model (fast) and the real bundled SmolLM2 (marked slow)."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).parent))  # tests/reference_bpe.py

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def bundled_tok():
    from alignflow.model.base import bundled_tokenizer

    return bundled_tokenizer()


@pytest.fixture(scope="session")
def gguf_contents():
    from alignflow.model.gguf_loader import bundled_gguf_path, read_gguf

    return read_gguf(bundled_gguf_path("smollm2-135m-instruct"), tensors=False)


@pytest.fixture(scope="session")
def smollm2():
    """The real bundled base model (~15 s to load, 2.7 GB)."""
    from alignflow.config import ModelParams
    from alignflow.model.base import load_model

    return load_model(ModelParams())


@pytest.fixture
def tiny_model():
    from alignflow.model.base import build_tiny_model

    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def curated_dir(tmp_path_factory):
    """The shipped raw SFT data curated by the real curate code (data/curated is a DVC output, not in git)."""
    import dataclasses

    from alignflow import config
    from alignflow.stages import curate

    root = tmp_path_factory.mktemp("curated")
    out = root / "curated"
    cfg = config.load(REPO / "params.yaml")
    paths = {k: str(REPO / v) for k, v in dataclasses.asdict(cfg.paths).items() if k in ("policies", "raw_sft", "eval_dir")}
    cfg = dataclasses.replace(cfg, paths=dataclasses.replace(
        cfg.paths, curated=str(out), curate_report=str(root / "curate.json"), coverage_plot=str(root / "coverage.json"), **paths))
    curate.write_outputs(cfg, curate.curate_files(cfg))
    return out
