"""The SFT training loop: fixed-shape batches, AdamW with warm-up and cosine decay, resumable checkpoints.

One `train_on_batch` per step keeps Keras' compiled JAX step (one compile for the one shape) while the
loop owns checkpointing, progress and logging. The data order of every epoch is a pure function of
(seed, epoch), so a run resumed from a checkpoint replays exactly the batches it would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from alignflow.config import TuneParams
from alignflow.io import atomic_dir
from alignflow.model.sft import Encoded, make_batch, pack

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot continue (a non-finite loss)."""


@dataclass
class TrainResult:
    steps: int
    history: list[dict] = field(default_factory=list)  # one row per step: step, epoch, loss, lr
    val_history: list[dict] = field(default_factory=list)  # one row per epoch: step, epoch, val_loss
    resumed_from: int = 0
    tokens: int = 0  # non-padding tokens seen by the steps of this process
    seconds: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """Which rows every step trains on: each epoch's seeded order packed into sequences, then batched."""

    batches: list[list[list[int]]]  # step -> batch rows -> row indices packed into that row
    epochs: list[int]  # step -> epoch
    per_epoch: list[int]  # steps in each epoch

    @property
    def total(self) -> int:
        return len(self.batches)


def sequences(lengths: Sequence[int], order: Sequence[int], p: TuneParams) -> list[list[int]]:
    """Row indices per training sequence: packed first-fit (tune.packing) or one row each."""
    return pack(lengths, order, p.seq_len + 1) if p.packing else [[i] for i in order]


def plan(lengths: Sequence[int], p: TuneParams, seed: int) -> Schedule:
    """The whole run's batches: a pure function of (row lengths, params, seed), so a resumed run replays it."""
    batches, epochs, per_epoch = [], [], []
    for epoch in range(p.epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(lengths)).tolist()
        packs = sequences(lengths, order, p)
        steps = [packs[k : k + p.batch_size] for k in range(0, len(packs), p.batch_size)]
        batches += steps
        epochs += [epoch] * len(steps)
        per_epoch.append(len(steps))
    if p.max_steps:
        batches, epochs = batches[: p.max_steps], epochs[: p.max_steps]
    return Schedule(batches, epochs, per_epoch)


class SFTModel:
    """Builds the Keras model that trains a backbone on packed conversations (see sft.make_batch).

    It reuses the backbone's own layers, so LoRA weights trained here are the causal LM's weights; the
    only difference from the backbone's forward pass is the attention mask: causal and within a segment.
    """

    @staticmethod
    def build(backbone):
        import keras
        from keras import ops

        class _SFT(keras.Model):
            def __init__(self, backbone, **kwargs):
                super().__init__(**kwargs)
                self.backbone = backbone

            def call(self, inputs):
                seg = inputs["segment_ids"]
                mask = ops.equal(ops.expand_dims(seg, 2), ops.expand_dims(seg, 1))  # padding attends to padding
                x = self.backbone.token_embedding(inputs["token_ids"])
                for layer in self.backbone.transformer_layers:
                    x = layer(x, decoder_attention_mask=mask)
                x = self.backbone.layer_norm(x)
                return self.backbone.token_embedding(x, reverse=True)

        return _SFT(backbone, name="sft")


def make_optimizer(p: TuneParams, total_steps: int):
    import keras

    decay = max(total_steps - p.warmup_steps, 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if p.warmup_steps else p.learning_rate,
        decay_steps=decay,
        alpha=0.1,  # end at 10% of the peak
        warmup_target=p.learning_rate if p.warmup_steps else None,
        warmup_steps=p.warmup_steps,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=p.weight_decay, global_clipnorm=p.clip_norm)


def compile_for_sft(backbone, p: TuneParams, total_steps: int):
    """The SFT model over `backbone`, compiled: loss = mean cross-entropy over response tokens."""
    import keras

    model = SFTModel.build(backbone)
    model.compile(
        optimizer=make_optimizer(p, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[],
    )
    model.optimizer.build(model.trainable_variables)
    return model


# --- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(path: Path, model, step: int, fingerprint: str, result: TrainResult) -> None:
    """Trainable weights, optimizer state and progress, swapped in atomically."""
    with atomic_dir(path) as tmp:
        np.savez(tmp / "trainable.npz", *[np.asarray(v.value) for v in model.trainable_variables])
        np.savez(tmp / "optimizer.npz", *[np.asarray(v.value) for v in model.optimizer.variables])
        meta = {"step": step, "fingerprint": fingerprint, "history": result.history, "val_history": result.val_history}
        (tmp / "state.json").write_text(json.dumps(meta))


def load_checkpoint(path: Path, model, fingerprint: str) -> dict | None:
    """Restore a checkpoint made for the same fingerprint (params, data, base); None if there is none."""
    state_file = path / "state.json"
    if not state_file.exists():
        return None
    meta = json.loads(state_file.read_text())
    if meta.get("fingerprint") != fingerprint:
        log.info("checkpoint in %s is for other params/data/base: starting fresh", path)
        return None
    for group, variables in (("trainable", model.trainable_variables), ("optimizer", model.optimizer.variables)):
        with np.load(path / f"{group}.npz") as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(variables):
            log.warning("checkpoint %s does not match the model: starting fresh", path)
            return None
        for var, value in zip(variables, values):
            var.assign(value)
    return meta


def train(
    model,
    train_rows: Sequence[Encoded],
    val_rows: Sequence[Encoded],
    p: TuneParams,
    seed: int,
    pad_id: int,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    on_step: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train `model` (from compile_for_sft), resuming from checkpoint_dir when it holds a matching
    checkpoint; validate at the end of every epoch."""
    from tqdm.auto import tqdm

    schedule = plan([len(r.ids) for r in train_rows], p, seed)
    total = schedule.total
    result = TrainResult(steps=total)
    start = 0
    if checkpoint_dir is not None and (meta := load_checkpoint(checkpoint_dir, model, fingerprint)):
        start = result.resumed_from = meta["step"]
        result.history, result.val_history = meta["history"], meta["val_history"]
        log.info("resumed from checkpoint at step %d of %d", start, total)
    if start == 0 and val_rows:  # the untuned model's validation loss, the curve's first point
        result.val_history.append({"step": 0, "epoch": -1, "val_loss": round(evaluate_loss(model, val_rows, p, pad_id), 5)})
    blank = [Encoded([pad_id], [0])]
    bar = tqdm(total=total, initial=start, desc="tune", unit="step", disable=os.environ.get("ALIGNFLOW_NO_PROGRESS") == "1")
    t0 = time.perf_counter()
    for step in range(start, total):
        epoch, batch = schedule.epochs[step], schedule.batches[step]
        packs = [[train_rows[i] for i in ids] for ids in batch] + [blank] * (p.batch_size - len(batch))
        x, y, w = make_batch(packs, p.seq_len, pad_id)
        lr = float(np.asarray(model.optimizer.learning_rate))
        loss = float(model.train_on_batch(x, y, sample_weight=w))
        if not math.isfinite(loss):
            raise TrainingError(f"loss is {loss} at step {step + 1}: lower tune.learning_rate or check the data")
        result.tokens += int((x["segment_ids"] > 0).sum())
        row = {"step": step + 1, "epoch": epoch, "loss": round(loss, 5), "lr": lr,
               "rows": sum(len(ids) for ids in batch)}
        result.history.append(row)
        elapsed = time.perf_counter() - t0
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{result.tokens / elapsed:.0f}")
        bar.update(1)
        if on_step:
            on_step({**row, "tokens_per_second": result.tokens / elapsed})
        end_of_epoch = step + 1 == total or schedule.epochs[step + 1] != epoch
        if end_of_epoch and val_rows:
            result.val_history.append({"step": step + 1, "epoch": epoch, "val_loss": round(evaluate_loss(model, val_rows, p, pad_id), 5)})
            log.info("epoch %d: val loss %.4f", epoch, result.val_history[-1]["val_loss"])
        if checkpoint_dir is not None and ((step + 1) % p.checkpoint_every == 0 or step + 1 == total):
            save_checkpoint(checkpoint_dir, model, step + 1, fingerprint, result)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def evaluate_loss(model, rows: Sequence[Encoded], p: TuneParams, pad_id: int) -> float:
    """Mean cross-entropy per response token over `rows`, packed (in order) into the training shape."""
    total, weight = 0.0, 0.0
    blank = [Encoded([pad_id], [0])]
    packs = sequences([len(r.ids) for r in rows], range(len(rows)), p)
    for start in range(0, len(packs), p.batch_size):
        chunk = [[rows[i] for i in ids] for ids in packs[start : start + p.batch_size]]
        chunk += [blank] * (p.batch_size - len(chunk))
        x, y, w = make_batch(chunk, p.seq_len, pad_id)
        loss = float(model.test_on_batch(x, y, sample_weight=w))
        total += loss * w.sum()
        weight += w.sum()
    return float(total / weight) if weight else float("nan")
