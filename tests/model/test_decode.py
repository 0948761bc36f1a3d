"""alignflow's greedy decoder gives keras-hub's greedy answers, in fewer and cheaper steps."""

import numpy as np

from alignflow.config import GenerateParams
from alignflow.model.base import build_tiny_model, pad_batch
from alignflow.model.decode import GreedyDecoder


def keras_hub_greedy(model, prompts, max_new):
    """Reference: keras-hub's own generate on right-padded prompts, one prompt at a time (no padding games)."""
    out = []
    for row in prompts:
        ids, mask = pad_batch([row], len(row) + max_new, model.tokenizer.pad_id)
        res = np.asarray(model.causal_lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)["token_ids"])
        out.append(res[0, len(row) : len(row) + max_new].tolist())
    return out


def test_left_padded_batch_decodes_like_each_prompt_alone():
    model = build_tiny_model(seed=5)
    prompts = [model.prompt_ids([{"role": "user", "content": q}]) for q in ("Hi", "What is two plus two, exactly?", "Name a colour.")]
    decoder = GreedyDecoder(model.causal_lm.backbone, max_new_tokens=6)
    got = decoder(prompts, max(map(len, prompts)) + 3, stop_ids=[], pad_id=model.tokenizer.pad_id)
    assert got.shape == (3, 6)
    assert got.tolist() == keras_hub_greedy(model, prompts, 6)


def test_rows_stop_at_their_stop_token_and_pad_after():
    model = build_tiny_model(seed=5)
    prompt = model.prompt_ids([{"role": "user", "content": "Hi"}])
    free = GreedyDecoder(model.causal_lm.backbone, 6)([prompt], len(prompt), [], model.tokenizer.pad_id)[0]
    stop = int(free[2])
    first = free.tolist().index(stop)
    cut = GreedyDecoder(model.causal_lm.backbone, 6)([prompt], len(prompt), [stop], -7)[0]
    assert cut[: first + 1].tolist() == free[: first + 1].tolist()
    assert (cut[first + 1 :] == -7).all()


def test_generate_ids_uses_the_decoder_and_keeps_input_order():
    model = build_tiny_model(seed=2)
    questions = ["A much longer question about the weather in several places today?", "Hi", "Name a colour."]
    gen = GenerateParams(batch_size=2, max_prompt_tokens=64, max_new_tokens=5, bucket=8)
    answers = model.ask(questions, gen)
    singles = [model.ask([q], gen).texts[0] for q in questions]
    assert answers.texts == singles and model.decoder(5) is not None
    assert all(0 <= n <= 5 for n in answers.new_tokens)
