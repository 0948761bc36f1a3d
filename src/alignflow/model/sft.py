"""Supervised fine-tuning building blocks: response-only token weights, fixed shapes, LoRA.

keras-hub's preprocessors weight every non-padding token; SFT must learn only the assistant's answer,
so alignflow tokenizes prompt and response separately and builds the per-token sample weights itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    truncated_response_tokens: int = 0
    weight: float = 1.0  # loss weight of this conversation's response tokens
    lead: tuple[int, float] = (0, 1.0)  # the first lead[0] response tokens weigh lead[1] times more


def encode_conversation(tokenizer: TextTokenizer, template: str, messages: Sequence[chat.Message]) -> Encoded:
    """Tokenize a conversation that ends with an assistant turn; flag the response tokens."""
    prompt, response = chat.split_for_training(template, messages)
    p = tokenizer.encode(prompt)
    r = tokenizer.encode(response)
    return Encoded(p + r, [0] * len(p) + [1] * len(r))


def fit_length(enc: Encoded, seq_len: int, truncate_response: bool = False) -> Encoded:
    """Fit to seq_len + 1 tokens (inputs and shifted labels).

    Prompt tokens are dropped from the left first, so the end of the prompt (the latest user turn and
    the assistant header) is kept. A response that alone needs more than that raises TooLongError (the
    caller sets the row apart), unless `truncate_response`: then the prompt keeps up to half the window
    and the response is cut at the right. The start of an answer, where it complies or declines, is
    what safety tuning must learn; its tail can go.
    """
    budget = seq_len + 1
    extra = len(enc.ids) - budget
    if extra <= 0:
        return enc
    n_prompt = enc.is_response.index(1) if 1 in enc.is_response else len(enc.ids)
    n_response = len(enc.ids) - n_prompt
    if not truncate_response:
        if extra >= n_prompt:
            raise TooLongError(f"response needs {n_response} tokens; sequence length is {seq_len}")
        return replace(enc, ids=enc.ids[extra:], is_response=enc.is_response[extra:], truncated_prompt_tokens=extra)
    keep_prompt = min(n_prompt, max(budget - n_response, budget // 2))
    start = n_prompt - keep_prompt
    end = start + budget
    return replace(enc, ids=enc.ids[start:end], is_response=enc.is_response[start:end],
                   truncated_prompt_tokens=start, truncated_response_tokens=len(enc.ids) - end)


def pack(lengths: Sequence[int], order: Sequence[int], budget: int) -> list[list[int]]:
    """First-fit packing: row indices, visited in `order`, grouped so each group's lengths sum <= budget.

    Deterministic for a given order, so a resumed run sees the same sequences. A row longer than the
    budget (fit_length prevents that) gets a sequence of its own.
    """
    packs: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        slot = next((k for k, free in enumerate(room) if free >= n), None)
        if slot is None:
            packs.append([i])
            room.append(budget - n)
        else:
            packs[slot].append(i)
            room[slot] -= n
    return packs


def make_batch(packs: Sequence[Sequence[Encoded]], seq_len: int, pad_id: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """(x, y, sample_weight) of shape [len(packs), seq_len] from conversations packed end to end.

    Each batch row holds one or more conversations (at most seq_len + 1 tokens in all: inputs plus the
    shifted labels). `segment_ids` numbers them 1, 2, ... (0 is padding): attention stays inside a
    conversation (SFTModel builds that mask), and because RoPE only sees relative positions a packed
    conversation scores exactly as it would alone. Weight is 1 only where the label is a response token,
    so the label that crosses from one conversation into the next (a prompt token) weighs nothing;
    a conversation's `weight` scales its response tokens, and `lead` its first few response tokens.
    """
    n = len(packs)
    ids = np.full((n, seq_len + 1), pad_id, dtype="int32")
    resp = np.zeros((n, seq_len + 1), dtype="float32")
    seg = np.zeros((n, seq_len + 1), dtype="int32")
    for i, pack_ in enumerate(packs):
        at = 0
        for s, row in enumerate(pack_, start=1):
            k = len(row.ids)
            if at + k > seq_len + 1:
                raise TooLongError(f"batch row {i} needs more than {seq_len + 1} tokens; call fit_length and pack first")
            ids[i, at : at + k] = row.ids
            resp[i, at : at + k] = token_weights(row)
            seg[i, at : at + k] = s
            at += k
    x = {"token_ids": ids[:, :-1], "segment_ids": seg[:, :-1]}
    y = ids[:, 1:]
    weight = resp[:, 1:] * (seg[:, 1:] > 0)
    return x, y, weight


def token_weights(row: Encoded) -> np.ndarray:
    """Loss weight of each token of a conversation: 0 for prompt tokens, `weight` for response tokens,
    and `weight * lead[1]` for the first `lead[0]` response tokens (where a reply decides to answer or decline)."""
    w = np.asarray(row.is_response, dtype="float32") * row.weight
    n, factor = row.lead
    if n and factor != 1.0:
        first = row.is_response.index(1) if 1 in row.is_response else len(w)
        w[first : first + n] *= factor
    return w


DEFAULT_LORA_TARGETS = ("query", "value")


def enable_lora(backbone, rank: int, top_layers: int = 0, targets: tuple[str, ...] = DEFAULT_LORA_TARGETS) -> None:
    """LoRA on the named layers of every transformer layer (default: query and value projections);
    with top_layers > 0 only the top k transformer layers train.

    Freezing the lower layers lets JAX skip their backward pass (measured ~40% faster a step).
    """
    known = {lyr.name for lyr in backbone._flatten_layers(include_self=False) if hasattr(lyr, "enable_lora")}
    unknown = sorted(set(targets) - known)
    if unknown or not targets:
        raise ValueError(f"tune.lora_targets: no layer named {unknown or '(empty list)'} in {backbone.name}; "
                         f"choose from {sorted(known - {'token_embedding'})}")
    backbone.enable_lora(rank, target_layer_names=list(targets))
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "lora_enabled", False) and layer.quantization_mode is None:
            layer.call = _factored_lora_call(layer)
    if top_layers and top_layers < backbone.num_layers:
        for i in range(backbone.num_layers - top_layers):
            backbone.get_layer(f"transformer_layer_{i}").trainable = False


def _factored_lora_call(layer):
    """`call` of a LoRA-enabled Dense or EinsumDense as x W + s (x A) B.

    Keras computes x (W + s A B): it builds the merged kernel every call, and its backward pass then
    forms the full weight gradient x^T dY (d_in x d_out for every position) before reducing it to the
    gradients of A and B. Factored, the backward needs only x^T (dY B^T) and (x A)^T dY: rank-sized.
    With LoRA on every projection that drops about a quarter of a step's FLOPs (benchmarks/train).
    Same function of the same variables (float sums in another order); saving still merges the
    kernel (Keras' `save_own_variables`), so the saved model does not depend on this.
    """
    from keras import layers, ops

    einsum = isinstance(layer, layers.EinsumDense)
    scale = layer.lora_alpha / layer.lora_rank

    def project(inputs, kernel):
        return ops.einsum(layer.equation, inputs, kernel) if einsum else ops.matmul(inputs, kernel)

    low_rank = _low_rank_product(project)

    def call(inputs, training=None):
        delta = low_rank(inputs, layer.lora_kernel_a.value, layer.lora_kernel_b.value)
        x = ops.add(project(inputs, layer._kernel), ops.multiply(delta, scale))
        if layer.bias is not None:
            x = ops.add(x, layer.bias)
        return layer.activation(x) if layer.activation is not None else x

    return call


def _low_rank_product(project):
    """(x A) B with a hand-written backward pass that contracts B's gradient as dY^T (x A).

    JAX differentiates the product into the dot (x A)^T dY, which XLA:CPU runs with dY transposed,
    and it fuses the elementwise ops producing dY (the SwiGLU gate's derivative, for the gate
    projection) into that transposed copy, which then reads every input column by column: 34 ms a
    layer, 12% of the default tune step (benchmarks/train/op_profile.py). Written as dY^T (x A), with
    dY as the left operand, XLA reads dY in its own order; the [d_out, r] result is transposed (it is
    small). x's and A's gradients are those of `project` itself.
    """
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def product(x, a, b):
        return jnp.matmul(project(x, a), b)

    def forward(x, a, b):
        xa = project(x, a)
        return jnp.matmul(xa, b), (x, a, b, xa)

    def backward(saved, grad):
        x, a, b, xa = saved
        grad_rows, xa_rows = grad.reshape(-1, grad.shape[-1]), xa.reshape(-1, xa.shape[-1])
        grad_b = jax.lax.dot_general(grad_rows, xa_rows, (((0,), (0,)), ((), ()))).T  # [d_out, r] -> [r, d_out]
        _, pull = jax.vjp(project, x, a)
        grad_x, grad_a = pull(jnp.matmul(grad, b.T))
        return grad_x, grad_a, grad_b

    product.defvjp(forward, backward)
    return product


def lora_weight_names(backbone) -> set[str]:
    """Paths of the trainable LoRA weights."""
    return {w.path for w in backbone.trainable_weights}
