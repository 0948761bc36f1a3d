"""The tune stage on the tiny model: metadata never tokenized, artifacts reload in a fresh process."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignflow import config
from alignflow.stages import tune
from alignflow.stages.curate import CURATED_SCHEMA

SENTINELS = ("POLICYSENTINEL", "USECASESENTINEL", "SOURCESENTINEL", "FORMSENTINEL")


def curated_rows(n, split):
    return [{"id": f"{split}-{i}", "messages": [{"role": "user", "content": f"How do I do task {i}?"},
                                                {"role": "assistant", "content": f"Here is task {i}, done safely."}],
             "prompt": f"How do I do task {i}?", "response": f"Here is task {i}, done safely.",
             "policy": SENTINELS[0], "use_case": SENTINELS[1], "adversarial": True, "formulation": SENTINELS[3],
             "source": SENTINELS[2], "pii_replaced": 0, "split": split} for i in range(n)]


@pytest.fixture
def cfg(tmp_path, monkeypatch, repo_root):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ALIGNFLOW_NO_PROGRESS", "1")
    (tmp_path / "curated").mkdir()
    for split, n in (("train", 6), ("val", 2)):
        pq.write_table(pa.Table.from_pylist(curated_rows(n, split), schema=CURATED_SCHEMA), tmp_path / f"curated/{split}.parquet")
    base = config.load(repo_root / "params.yaml")
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, base="random:tiny"),
        paths=dataclasses.replace(base.paths, curated="curated"),
        tune=dataclasses.replace(base.tune, seq_len=64, batch_size=2, epochs=2, max_steps=4, lora_top_layers=0, checkpoint_every=2),
    )


def test_metadata_never_reaches_the_tokenizer(cfg, monkeypatch):
    from alignflow.model.tokenizer import BPETokenizer

    seen = []
    original = BPETokenizer.encode
    monkeypatch.setattr(BPETokenizer, "encode", lambda self, text: seen.append(text) or original(self, text))
    report = tune.run(cfg)
    assert seen and report["train_rows"] == 6
    assert not [t for t in seen if any(s in t for s in SENTINELS)]


def test_tuned_artifacts_reload_in_a_fresh_process_and_generate(cfg, tmp_path):
    report = tune.run(cfg)
    assert report["steps"] == 4 and report["val_loss_after"] is not None
    curve = json.loads((tmp_path / "reports/tune_curve.json").read_text())
    assert [c["step"] for c in curve] == [1, 2, 3, 4]
    meta = json.loads((tmp_path / "models/tuned/adapter/adapter.json").read_text())
    assert meta["base"] == "random:tiny" and meta["lora_rank"] == cfg.tune.lora_rank
    code = (
        "import sys, dataclasses\n"
        "from alignflow.config import ModelParams, GenerateParams\n"
        "from alignflow.model.base import load_model\n"
        "import keras\n"
        "assert keras.config.is_safe_mode_enabled() if hasattr(keras.config, 'is_safe_mode_enabled') else True\n"
        "m = load_model(ModelParams(base=sys.argv[1]))\n"
        "out = m.ask(['hello'], GenerateParams(batch_size=1, max_prompt_tokens=48, max_new_tokens=4))\n"
        "print('FORMAT', m.info['format'], 'TOKENS', out.new_tokens[0])\n"
    )
    for kind, fmt in (("merged", "alignflow-merged"), ("adapter", "alignflow-adapter")):
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "models/tuned" / kind)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"FORMAT {fmt} TOKENS" in proc.stdout


def test_merged_and_adapter_give_the_same_logits(cfg, tmp_path):
    """With LoRA on attention and MLP layers: the adapter records its targets and reloads them."""
    import numpy as np

    from alignflow.model.base import load_model

    targets = ("query", "value", "attention_output", "feedforward_gate_dense", "feedforward_output_dense")
    tune.run(dataclasses.replace(cfg, tune=dataclasses.replace(cfg.tune, lora_targets=targets)))
    meta = json.loads((tmp_path / "models/tuned/adapter/adapter.json").read_text())
    assert tuple(meta["lora_targets"]) == targets
    ids = np.array([[1, 4093, 198, 6004, 2, 198, 1, 520]], dtype="int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, dtype=bool)}
    logits = [np.asarray(load_model(dataclasses.replace(cfg.model, base=f"models/tuned/{k}")).causal_lm(x))
              for k in ("merged", "adapter")]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-4)


def test_same_seed_gives_the_same_tuned_weights(cfg, tmp_path, monkeypatch):
    """LoRA's initial weights come from the run's seed, not from whatever state loading the base left
    Keras' global RNG in (the bundled model's loader does not seed it; random:tiny does)."""
    import keras
    import numpy as np

    load = tune.load_model
    runs = []
    for rng_state in (1, 2):
        def load_then_scramble(params, state=rng_state):
            model = load(params)
            keras.utils.set_random_seed(state)  # a base loader that leaves the global RNG anywhere
            return model

        monkeypatch.setattr(tune, "load_model", load_then_scramble)
        shutil.rmtree(tmp_path / cfg.paths.checkpoints, ignore_errors=True)  # no resume: train from scratch
        tune.run(cfg)
        with np.load(tmp_path / cfg.paths.checkpoints / "trainable.npz") as saved:
            runs.append([saved[k] for k in sorted(saved.files)])
    assert len(runs[0]) > 0
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_other_training_code_is_not_resumed(tmp_path):
    """The checkpoint fingerprint covers the training code: an edit to model/ or tune.py starts afresh."""
    package = tmp_path / "alignflow"
    for folder, pattern in tune.TRAINING_CODE:
        (package / folder).mkdir(parents=True, exist_ok=True)
        for src in (tune.PACKAGE / folder).glob(pattern):
            shutil.copy(src, package / folder / src.name)
    assert tune.code_hash(package) == tune.code_hash()
    training_py = package / "model" / "training.py"
    training_py.write_text(training_py.read_text() + "\n# an edit\n")
    assert tune.code_hash(package) != tune.code_hash()
