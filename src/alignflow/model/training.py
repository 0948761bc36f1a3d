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
from alignflow.model.sft import Encoded, make_batch

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


def plan(n_rows: int, p: TuneParams) -> tuple[int, int]:
    """(steps per epoch, total steps)."""
    per_epoch = math.ceil(n_rows / p.batch_size)
    total = per_epoch * p.epochs
    return per_epoch, min(total, p.max_steps) if p.max_steps else total


def batch_indices(n_rows: int, step: int, per_epoch: int, batch_size: int, seed: int) -> tuple[int, list[int]]:
    """(epoch, row indices) of a global step; the last batch of an epoch is topped up with -1 (padding)."""
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    idx = order[k * batch_size : (k + 1) * batch_size].tolist()
    return epoch, idx + [-1] * (batch_size - len(idx))


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


def compile_for_sft(causal_lm, p: TuneParams, total_steps: int) -> None:
    """Loss = mean cross-entropy over response tokens (sample weights select them)."""
    import keras

    causal_lm.compile(
        optimizer=make_optimizer(p, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[],
    )
    causal_lm.optimizer.build(causal_lm.trainable_variables)


# --- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(path: Path, causal_lm, step: int, fingerprint: str, result: TrainResult) -> None:
    """Trainable weights, optimizer state and progress, swapped in atomically."""
    with atomic_dir(path) as tmp:
        np.savez(tmp / "trainable.npz", *[np.asarray(v.value) for v in causal_lm.trainable_variables])
        np.savez(tmp / "optimizer.npz", *[np.asarray(v.value) for v in causal_lm.optimizer.variables])
        meta = {"step": step, "fingerprint": fingerprint, "history": result.history, "val_history": result.val_history}
        (tmp / "state.json").write_text(json.dumps(meta))


def load_checkpoint(path: Path, causal_lm, fingerprint: str) -> dict | None:
    """Restore a checkpoint made for the same fingerprint (params, data, base); None if there is none."""
    state_file = path / "state.json"
    if not state_file.exists():
        return None
    meta = json.loads(state_file.read_text())
    if meta.get("fingerprint") != fingerprint:
        log.info("checkpoint in %s is for other params/data/base: starting fresh", path)
        return None
    for group, variables in (("trainable", causal_lm.trainable_variables), ("optimizer", causal_lm.optimizer.variables)):
        with np.load(path / f"{group}.npz") as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(variables):
            log.warning("checkpoint %s does not match the model: starting fresh", path)
            return None
        for var, value in zip(variables, values):
            var.assign(value)
    return meta


def train(
    causal_lm,
    train_rows: Sequence[Encoded],
    val_rows: Sequence[Encoded],
    p: TuneParams,
    seed: int,
    pad_id: int,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    on_step: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train (resuming from checkpoint_dir when it holds a matching checkpoint); validate each epoch."""
    from tqdm.auto import tqdm

    per_epoch, total = plan(len(train_rows), p)
    result = TrainResult(steps=total)
    start = 0
    if checkpoint_dir is not None and (meta := load_checkpoint(checkpoint_dir, causal_lm, fingerprint)):
        start = result.resumed_from = meta["step"]
        result.history, result.val_history = meta["history"], meta["val_history"]
        log.info("resumed from checkpoint at step %d of %d", start, total)
    if start == 0 and val_rows:  # the untuned model's validation loss, the curve's first point
        result.val_history.append({"step": 0, "epoch": -1, "val_loss": round(evaluate_loss(causal_lm, val_rows, p, pad_id), 5)})
    blank = Encoded([pad_id], [0])
    bar = tqdm(total=total, initial=start, desc="tune", unit="step", disable=os.environ.get("ALIGNFLOW_NO_PROGRESS") == "1")
    t0 = time.perf_counter()
    for step in range(start, total):
        epoch, idx = batch_indices(len(train_rows), step, per_epoch, p.batch_size, seed)
        x, y, w = make_batch([train_rows[i] if i >= 0 else blank for i in idx], p.seq_len, pad_id)
        lr = float(np.asarray(causal_lm.optimizer.learning_rate))
        loss = float(causal_lm.train_on_batch(x, y, sample_weight=w))
        if not math.isfinite(loss):
            raise TrainingError(f"loss is {loss} at step {step + 1}: lower tune.learning_rate or check the data")
        tokens = int(x["padding_mask"].sum())
        result.tokens += tokens
        row = {"step": step + 1, "epoch": epoch, "loss": round(loss, 5), "lr": lr}
        result.history.append(row)
        elapsed = time.perf_counter() - t0
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{result.tokens / elapsed:.0f}")
        bar.update(1)
        if on_step:
            on_step({**row, "tokens_per_second": result.tokens / elapsed})
        end_of_epoch = (step + 1) % per_epoch == 0 or step + 1 == total
        if end_of_epoch and val_rows:
            result.val_history.append({"step": step + 1, "epoch": epoch, "val_loss": round(evaluate_loss(causal_lm, val_rows, p, pad_id), 5)})
            log.info("epoch %d: val loss %.4f", epoch, result.val_history[-1]["val_loss"])
        if checkpoint_dir is not None and ((step + 1) % p.checkpoint_every == 0 or step + 1 == total):
            save_checkpoint(checkpoint_dir, causal_lm, step + 1, fingerprint, result)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def evaluate_loss(causal_lm, rows: Sequence[Encoded], p: TuneParams, pad_id: int) -> float:
    """Mean cross-entropy per response token over `rows`, in the training batch shape."""
    total, weight = 0.0, 0.0
    blank = Encoded([pad_id], [0])
    for start in range(0, len(rows), p.batch_size):
        chunk = list(rows[start : start + p.batch_size])
        chunk += [blank] * (p.batch_size - len(chunk))
        x, y, w = make_batch(chunk, p.seq_len, pad_id)
        loss = float(causal_lm.test_on_batch(x, y, sample_weight=w))
        total += loss * w.sum()
        weight += w.sum()
    return float(total / weight) if weight else float("nan")
