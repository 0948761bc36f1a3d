"""The training loop on the tiny random model: loss falls, resume equals an uninterrupted run."""

import dataclasses

import numpy as np
import pytest

from alignflow.config import TuneParams
from alignflow.model import sft, training
from alignflow.model.base import build_tiny_model

CONVS = [
    [{"role": "user", "content": f"Question number {i}: how do I do thing {i}?"},
     {"role": "assistant", "content": f"I can't help with thing {i}, but here is a safe alternative."}]
    for i in range(6)
]
P = TuneParams(seq_len=48, batch_size=2, epochs=3, learning_rate=3e-2, warmup_steps=0, checkpoint_every=2)


def setup(p=P, seed=0):
    model = build_tiny_model(seed=seed)
    rows = [sft.fit_length(sft.encode_conversation(model.tokenizer, model.template, c), p.seq_len) for c in CONVS]
    sft.enable_lora(model.causal_lm.backbone, rank=4)
    training.compile_for_sft(model.causal_lm, p, training.plan(len(rows), p)[1])
    return model, rows


def test_plan_and_batches_cover_every_row_each_epoch():
    per_epoch, total = training.plan(5, TuneParams(batch_size=2, epochs=2))
    assert (per_epoch, total) == (3, 6)
    seen = [i for s in range(3) for i in training.batch_indices(5, s, 3, 2, seed=1)[1]]
    assert sorted(i for i in seen if i >= 0) == [0, 1, 2, 3, 4] and seen.count(-1) == 1
    assert training.plan(5, TuneParams(batch_size=2, epochs=2, max_steps=4))[1] == 4


def test_loss_decreases_over_a_few_steps():
    model, rows = setup()
    result = training.train(model.causal_lm, rows, rows[:2], P, seed=0, pad_id=model.tokenizer.pad_id)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 9 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    assert result.val_history[0]["step"] == 0 and result.val_history[-1]["val_loss"] < result.val_history[0]["val_loss"]


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    model, rows = setup()
    full = training.train(model.causal_lm, rows, [], P, seed=0, pad_id=0, checkpoint_dir=tmp_path / "a", fingerprint="f")
    expected = [np.asarray(v.value) for v in model.causal_lm.trainable_variables]

    def crash(row):
        if row["step"] == 5:
            raise KeyboardInterrupt("killed")

    model, rows = setup()
    with pytest.raises(KeyboardInterrupt):
        training.train(model.causal_lm, rows, [], P, seed=0, pad_id=0, checkpoint_dir=tmp_path / "b", fingerprint="f", on_step=crash)
    model, rows = setup()  # a fresh process: the same base, LoRA weights scrambled to prove the restore
    for v in model.causal_lm.trainable_variables:
        v.assign(np.random.default_rng(1).normal(size=v.shape).astype("float32"))
    resumed = training.train(model.causal_lm, rows, [], P, seed=0, pad_id=0, checkpoint_dir=tmp_path / "b", fingerprint="f")
    assert resumed.resumed_from == 4
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    for got, want in zip(model.causal_lm.trainable_variables, expected):
        np.testing.assert_allclose(np.asarray(got.value), want, rtol=0, atol=1e-6)


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    model, rows = setup()
    training.train(model.causal_lm, rows, [], dataclasses.replace(P, max_steps=2), 0, 0, tmp_path, fingerprint="old")
    model, rows = setup()
    result = training.train(model.causal_lm, rows, [], dataclasses.replace(P, max_steps=2), 0, 0, tmp_path, fingerprint="new")
    assert result.resumed_from == 0


def test_non_finite_loss_stops_training():
    model, rows = setup(dataclasses.replace(P, learning_rate=1e30, clip_norm=1e30))
    with pytest.raises(training.TrainingError, match="loss is"):
        training.train(model.causal_lm, rows, [], dataclasses.replace(P, learning_rate=1e30, clip_norm=1e30), 0, 0)
