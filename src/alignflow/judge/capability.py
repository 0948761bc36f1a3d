"""Capability checks: is a short answer correct, and how likely is the reference answer under a model.

`is_correct` matches normalised accept strings as whole words ("5" is not found in "15", "four" not in
"fourteen"). `reference_loglik` is a generation-free capability signal: the mean log-probability per
token of the reference answer after the chat-formatted prompt, comparable between base and tuned model.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import numpy as np

from alignflow.model import sft
from alignflow.model.base import ChatModel

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # "1,000" -> "1000"
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")  # keep "3.5" whole: "5" must not match inside "3.5"
_NON_WORD = re.compile(r"[^\w\u0000]+|_")


def normalise(text: str) -> str:
    """NFKC, case-folded; punctuation (hyphens included) becomes space; whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _DECIMAL.sub("\u0000", _THOUSANDS.sub("", text))  # protect decimal separators from the punctuation pass
    text = _NON_WORD.sub(" ", text).replace("\u0000", ".")
    return " ".join(text.split())


def is_correct(answer: str, accept: Sequence[str]) -> bool:
    """True when any accept string occurs in the answer as whole words, after normalisation.

    "twenty-five" and "twenty five" both normalise to "twenty five"; "CO2" matches "co2".
    """
    padded = f" {normalise(answer)} "
    return any(f" {a} " in padded for a in (normalise(x) for x in accept) if a)


def _encode(model: ChatModel, prompt: str, reference: str, seq_len: int) -> sft.Encoded:
    """The chat-formatted [user prompt, assistant reference]; only the reference's own tokens flagged.

    The template adds an end-of-turn marker after the reference; when the reference tokenizes as a prefix
    of the response (true for ChatML, Gemma and Llama 3: the marker is a special token) only the
    reference is scored, else the whole response (marker included) is.
    """
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reference}]
    enc = sft.encode_conversation(model.tokenizer, model.template, messages)
    ref_ids = model.tokenizer.encode(reference)
    start = enc.is_response.index(1)
    if enc.ids[start : start + len(ref_ids)] == ref_ids:
        flags = [0] * start + [1] * len(ref_ids) + [0] * (len(enc.ids) - start - len(ref_ids))
        enc = sft.Encoded(enc.ids, flags)
    return sft.fit_length(enc, seq_len)


def _token_logprob_fn(causal_lm):
    """A jitted (variables, x, y) -> log p(y_t | x_<=t) per position, computed without host logits."""
    import jax

    def fn(trainable, non_trainable, x, y):
        logits, _ = causal_lm.stateless_call(trainable, non_trainable, x)
        logp = jax.nn.log_softmax(logits.astype("float32"), axis=-1)
        return jax.numpy.take_along_axis(logp, y[..., None], axis=-1)[..., 0]

    return jax.jit(fn)


def reference_loglik(
    model: ChatModel, prompts: Sequence[str], references: Sequence[str], batch_size: int = 8, seq_len: int = 128
) -> list[float]:
    """Mean log-probability per reference token given the chat-formatted prompt, one float per row.

    Batches have the fixed shape batch_size x seq_len (the last is padded with blank rows), so XLA
    compiles once. Prompts too long for seq_len lose their start (sft.fit_length); a reference longer
    than seq_len raises sft.TooLongError.
    """
    if len(prompts) != len(references):
        raise ValueError(f"{len(prompts)} prompts but {len(references)} references")
    pad = model.tokenizer.pad_id
    rows = [_encode(model, p, r, seq_len) for p, r in zip(prompts, references)]
    blank = sft.Encoded([pad], [0])
    lm = model.causal_lm
    fn = _token_logprob_fn(lm)
    trainable = [v.value for v in lm.trainable_variables]
    non_trainable = [v.value for v in lm.non_trainable_variables]
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        x, y, weight = sft.make_batch([[r] for r in chunk] + [[blank]] * (batch_size - len(chunk)), seq_len, pad)
        x = {"token_ids": x["token_ids"], "padding_mask": x["segment_ids"] > 0}  # one conversation per row
        logp = np.asarray(fn(trainable, non_trainable, x, y))
        for i in range(len(chunk)):
            w = weight[i]
            out.append(float((logp[i] * w).sum() / w.sum()))
    return out
