"""Supervised fine-tuning building blocks: response-only token weights, fixed shapes, LoRA.

keras-hub's preprocessors weight every non-padding token; SFT must learn only the assistant's answer,
so alignflow tokenizes prompt and response separately and builds the per-token sample weights itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from alignflow.model import chat
from alignflow.model.tokenizer import TextTokenizer


class TooLongError(ValueError):
    """The response alone does not fit the sequence length."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of one conversation and a 0/1 flag per token: 1 where the token is response."""

    ids: list[int]
    is_response: list[int]
    truncated_prompt_tokens: int = 0


def encode_conversation(tokenizer: TextTokenizer, template: str, messages: Sequence[chat.Message]) -> Encoded:
    """Tokenize a conversation that ends with an assistant turn; flag the response tokens."""
    prompt, response = chat.split_for_training(template, messages)
    p = tokenizer.encode(prompt)
    r = tokenizer.encode(response)
    return Encoded(p + r, [0] * len(p) + [1] * len(r))


def fit_length(enc: Encoded, seq_len: int) -> Encoded:
    """Fit to seq_len + 1 tokens (inputs and shifted labels) by dropping prompt tokens from the left.

    The end of the prompt (the latest user turn and the assistant header) is kept; a response that
    alone needs more than seq_len tokens raises TooLongError (the caller quarantines the row).
    """
    budget = seq_len + 1
    extra = len(enc.ids) - budget
    if extra <= 0:
        return enc
    n_prompt = enc.is_response.index(1) if 1 in enc.is_response else len(enc.ids)
    if extra >= n_prompt:
        raise TooLongError(f"response needs {len(enc.ids) - n_prompt} tokens; sequence length is {seq_len}")
    return Encoded(enc.ids[extra:], enc.is_response[extra:], extra)


def make_batch(rows: Sequence[Encoded], seq_len: int, pad_id: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """(x, y, sample_weight) of shape [len(rows), seq_len]; weight 1 only where the label is response."""
    n = len(rows)
    ids = np.full((n, seq_len + 1), pad_id, dtype="int32")
    resp = np.zeros((n, seq_len + 1), dtype="float32")
    mask = np.zeros((n, seq_len + 1), dtype=bool)
    for i, row in enumerate(rows):
        k = len(row.ids)
        if k > seq_len + 1:
            raise TooLongError(f"row {i} has {k} tokens; call fit_length first")
        ids[i, :k] = row.ids
        resp[i, :k] = row.is_response
        mask[i, :k] = True
    x = {"token_ids": ids[:, :-1], "padding_mask": mask[:, :-1]}
    y = ids[:, 1:]
    weight = resp[:, 1:] * mask[:, 1:]
    return x, y, weight


def enable_lora(backbone, rank: int, top_layers: int = 0) -> None:
    """LoRA on query/value projections; with top_layers > 0 only the top k transformer layers train.

    Freezing the lower layers lets JAX skip their backward pass (measured ~40% faster a step).
    """
    backbone.enable_lora(rank)
    if top_layers and top_layers < backbone.num_layers:
        for i in range(backbone.num_layers - top_layers):
            backbone.get_layer(f"transformer_layer_{i}").trainable = False


def lora_weight_names(backbone) -> set[str]:
    """Paths of the trainable LoRA weights."""
    return {w.path for w in backbone.trainable_weights}
