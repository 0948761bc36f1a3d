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
    sft_model = training.compile_for_sft(model.causal_lm.backbone, p, training.plan([len(r.ids) for r in rows], p, 0).total)
    return sft_model, rows


def test_plan_covers_every_row_each_epoch():
    unpacked = training.plan([10] * 5, TuneParams(seq_len=20, batch_size=2, epochs=2, packing=False), seed=1)
    assert unpacked.per_epoch == [3, 3] and unpacked.total == 6 and unpacked.epochs == [0, 0, 0, 1, 1, 1]
    for epoch in (0, 1):
        seen = [i for b, e in zip(unpacked.batches, unpacked.epochs) if e == epoch for pack in b for i in pack]
        assert sorted(seen) == [0, 1, 2, 3, 4]
    packed = training.plan([10] * 5, TuneParams(seq_len=20, batch_size=2, epochs=2), seed=1)
    assert packed.per_epoch == [2, 2]  # two rows of 10 tokens fit one sequence of 20 + 1
    assert sorted(i for b in packed.batches[:2] for pack in b for i in pack) == [0, 1, 2, 3, 4]
    assert training.plan([10] * 5, TuneParams(seq_len=20, batch_size=2, epochs=2, max_steps=3), seed=1).total == 3
    assert packed == training.plan([10] * 5, TuneParams(seq_len=20, batch_size=2, epochs=2), seed=1)


def test_a_packed_conversation_scores_as_it_would_alone():
    """Segment masking: packing changes which rows share a sequence, not any token's loss."""
    import jax

    model = build_tiny_model(seed=3)
    a, b = (sft.encode_conversation(model.tokenizer, model.template, c) for c in CONVS[:2])
    sft_model = training.SFTModel.build(model.causal_lm.backbone)
    seq_len = len(a.ids) + len(b.ids)
    x_pack, y_pack, _ = sft.make_batch([[a, b]], seq_len, 0)
    x_one, y_one, _ = sft.make_batch([[a], [b]], seq_len, 0)

    def token_logprobs(x, y):
        logp = np.asarray(jax.nn.log_softmax(np.asarray(sft_model(x)), axis=-1))
        return np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]

    packed, alone = token_logprobs(x_pack, y_pack)[0], token_logprobs(x_one, y_one)
    na, nb = len(a.ids), len(b.ids)
    np.testing.assert_allclose(packed[: na - 1], alone[0, : na - 1], atol=1e-4)
    np.testing.assert_allclose(packed[na : na + nb - 1], alone[1, : nb - 1], atol=1e-4)
    # and the backbone's own forward pass agrees with SFTModel on an unpacked row
    ref = model.causal_lm({"token_ids": x_one["token_ids"], "padding_mask": x_one["segment_ids"] > 0})
    np.testing.assert_allclose(np.asarray(sft_model(x_one))[0, : na - 1], np.asarray(ref)[0, : na - 1], atol=1e-4)


def test_loss_decreases_over_a_few_steps():
    model, rows = setup()
    result = training.train(model, rows, rows[:2], P, seed=0, pad_id=0)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 9 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    assert result.val_history[0]["step"] == 0 and result.val_history[-1]["val_loss"] < result.val_history[0]["val_loss"]


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    model, rows = setup()
    full = training.train(model, rows, [], P, seed=0, pad_id=0, checkpoint_dir=tmp_path / "a", fingerprint="f")
    expected = [np.asarray(v.value) for v in model.trainable_variables]

    def crash(row):
        if row["step"] == 5:
            raise KeyboardInterrupt("killed")

    model, rows = setup()
    with pytest.raises(KeyboardInterrupt):
        training.train(model, rows, [], P, seed=0, pad_id=0, checkpoint_dir=tmp_path / "b", fingerprint="f", on_step=crash)
    model, rows = setup()  # a fresh process: the same base, LoRA weights scrambled to prove the restore
    for v in model.trainable_variables:
        v.assign(np.random.default_rng(1).normal(size=v.shape).astype("float32"))
    resumed = training.train(model, rows, [], P, seed=0, pad_id=0, checkpoint_dir=tmp_path / "b", fingerprint="f")
    assert resumed.resumed_from == 4
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    for got, want in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(np.asarray(got.value), want, rtol=0, atol=1e-6)


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    model, rows = setup()
    training.train(model, rows, [], dataclasses.replace(P, max_steps=2), 0, 0, tmp_path, fingerprint="old")
    model, rows = setup()
    result = training.train(model, rows, [], dataclasses.replace(P, max_steps=2), 0, 0, tmp_path, fingerprint="new")
    assert result.resumed_from == 0


def test_non_finite_loss_stops_training():
    model, rows = setup(dataclasses.replace(P, learning_rate=1e30, clip_norm=1e30))
    with pytest.raises(training.TrainingError, match="loss is"):
        training.train(model, rows, [], dataclasses.replace(P, learning_rate=1e30, clip_norm=1e30), 0, 0)
