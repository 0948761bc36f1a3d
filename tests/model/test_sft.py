"""Response-only masks, fixed shapes and a LoRA step on the tiny random model."""

import keras
import numpy as np
import pytest

from alignflow.model import chat, sft

CONV = [{"role": "user", "content": "How do I kill a stuck process?"}, {"role": "assistant", "content": "Run kill -9 PID."}]


def test_response_mask_token_by_token(bundled_tok):
    tok, template = bundled_tok
    enc = sft.encode_conversation(tok, template, CONV)
    response_ids = [i for i, r in zip(enc.ids, enc.is_response) if r]
    assert tok.decode(response_ids) == "Run kill -9 PID.\n"  # <|im_end|> is flagged too (decode skips it)
    assert response_ids[-2:] == [2, 198]  # <|im_end|>, newline: the model learns to stop
    prompt_ids = [i for i, r in zip(enc.ids, enc.is_response) if not r]
    assert tok.decode(prompt_ids).endswith("How do I kill a stuck process?\nassistant\n")
    # tokenizing prompt and response separately equals tokenizing the whole conversation
    assert enc.ids == tok.encode("".join(chat.split_for_training(template, CONV)))


def test_make_batch_weights_only_response_labels(bundled_tok):
    tok, template = bundled_tok
    enc = sft.encode_conversation(tok, template, CONV)
    x, y, w = sft.make_batch([[enc]], seq_len=64, pad_id=tok.pad_id)
    assert x["token_ids"].shape == (1, 64) and y.shape == (1, 64) and w.shape == (1, 64)
    n = len(enc.ids)
    first_resp = enc.is_response.index(1)
    # label at position t is token t+1: weight 1 exactly for labels that are response tokens
    expected = np.zeros(64)
    expected[first_resp - 1 : n - 1] = 1
    np.testing.assert_array_equal(w[0], expected)
    assert (x["segment_ids"][0, :n] == 1).all() and not x["segment_ids"][0, n:].any()


def test_lead_tokens_weigh_more_and_survive_truncation(bundled_tok):
    tok, template = bundled_tok
    enc = sft.encode_conversation(tok, template, CONV)
    first, n = enc.is_response.index(1), len(enc.ids)
    lead = sft.Encoded(enc.ids, enc.is_response, weight=0.5, lead=(3, 4.0))
    expected = np.zeros(n)
    expected[first:] = 0.5
    expected[first : first + 3] = 2.0  # weight x lead factor on the first three response tokens only
    np.testing.assert_array_equal(sft.token_weights(lead), expected)
    cut = sft.fit_length(lead, n - 4)  # n - 3 tokens kept (inputs + shifted labels): three prompt tokens go
    np.testing.assert_array_equal(sft.token_weights(cut), expected[3:])
    x, y, w = sft.make_batch([[lead]], seq_len=64, pad_id=tok.pad_id)
    np.testing.assert_array_equal(w[0, : n - 1], expected[1:])  # the label at t is token t + 1


def test_packed_batch_masks_each_conversation_and_the_seam(bundled_tok):
    tok, template = bundled_tok
    a = sft.encode_conversation(tok, template, CONV)
    b = sft.encode_conversation(tok, template, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])
    b = sft.Encoded(b.ids, b.is_response, weight=2.0)
    x, y, w = sft.make_batch([[a, b]], seq_len=128, pad_id=tok.pad_id)
    na, nb = len(a.ids), len(b.ids)
    np.testing.assert_array_equal(x["token_ids"][0, : na + nb - 1], (a.ids + b.ids)[:-1])
    np.testing.assert_array_equal(x["segment_ids"][0], [1] * na + [2] * nb + [0] * (128 - na - nb))
    expected = np.zeros(128)
    expected[a.is_response.index(1) - 1 : na - 1] = 1  # a's response labels
    # the label at position na - 1 is b's first token (a prompt token): weight 0
    expected[na + b.is_response.index(1) - 1 : na + nb - 1] = 2.0  # b's response labels, weighted
    np.testing.assert_array_equal(w[0], expected)
    with pytest.raises(sft.TooLongError):
        sft.make_batch([[a, b]], seq_len=na + nb - 2, pad_id=tok.pad_id)


def test_first_fit_packing_is_deterministic_and_within_budget():
    lengths = [60, 50, 40, 30, 20, 10, 90]
    packs = sft.pack(lengths, [6, 0, 1, 2, 3, 4, 5], budget=100)
    assert packs == [[6, 5], [0, 2], [1, 3, 4]]
    assert sorted(i for p in packs for i in p) == list(range(7))
    assert sft.pack(lengths, range(7), 100) == sft.pack(lengths, range(7), 100)


def test_fit_length_drops_prompt_from_left(bundled_tok):
    tok, template = bundled_tok
    enc = sft.encode_conversation(tok, template, CONV)
    n_resp = sum(enc.is_response)
    fitted = sft.fit_length(enc, seq_len=n_resp + 3)
    assert len(fitted.ids) == n_resp + 4
    assert fitted.ids[-n_resp:] == enc.ids[-n_resp:]
    assert fitted.truncated_prompt_tokens == len(enc.ids) - len(fitted.ids)
    with pytest.raises(sft.TooLongError):
        sft.fit_length(enc, seq_len=n_resp - 1)


def test_fit_length_cuts_a_long_response_at_the_right(bundled_tok):
    tok, template = bundled_tok
    long_answer = " ".join(f"Step {i}: check the log." for i in range(60))
    enc = sft.encode_conversation(tok, template, [{"role": "user", "content": "How do I kill a hung process?"},
                                                  {"role": "assistant", "content": long_answer}])
    n_prompt = enc.is_response.index(1)
    seq_len = 2 * n_prompt + 20  # the prompt needs less than half the window: it stays whole
    fitted = sft.fit_length(enc, seq_len=seq_len, truncate_response=True)
    assert len(fitted.ids) == seq_len + 1
    assert fitted.ids == enc.ids[: seq_len + 1]  # whole prompt, the answer's first tokens
    assert fitted.truncated_prompt_tokens == 0
    assert fitted.truncated_response_tokens == len(enc.ids) - (seq_len + 1)
    # a window smaller than the prompt: the prompt keeps half of it (its end), the answer the rest
    small = n_prompt // 2 + 4
    fitted = sft.fit_length(enc, seq_len=small, truncate_response=True)
    keep = (small + 1) // 2
    assert fitted.ids == enc.ids[n_prompt - keep : n_prompt - keep + small + 1]
    assert sum(fitted.is_response) == small + 1 - keep
    assert (fitted.truncated_prompt_tokens, fitted.truncated_response_tokens) == (n_prompt - keep, len(enc.ids) - (n_prompt - keep + small + 1))
    with pytest.raises(sft.TooLongError):  # the default keeps the old contract
        sft.fit_length(enc, seq_len=seq_len)


def test_one_lora_step_lowers_loss_and_changes_only_lora(tiny_model):
    tok, template = tiny_model.tokenizer, tiny_model.template
    enc = sft.encode_conversation(tok, template, CONV)
    x, y, w = sft.make_batch([[enc], [enc]], seq_len=64, pad_id=tok.pad_id)
    x = {"token_ids": x["token_ids"], "padding_mask": x["segment_ids"] > 0}
    lm = tiny_model.causal_lm
    sft.enable_lora(lm.backbone, rank=4)
    lm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    before = {v.path: np.array(v.value) for v in lm.weights}
    lora = sft.lora_weight_names(lm.backbone)
    assert lora and all("lora" in name for name in lora)
    loss0 = float(lm.test_on_batch(x, y, sample_weight=w))
    lm.train_on_batch(x, y, sample_weight=w)
    loss1 = float(lm.test_on_batch(x, y, sample_weight=w))
    assert loss1 < loss0
    changed = {v.path for v in lm.weights if not np.array_equal(before[v.path], np.array(v.value))}
    assert changed and changed <= lora
    assert any("lora_kernel_b" in p for p in changed)


def test_top_layers_freezes_lower_lora(tiny_model):
    sft.enable_lora(tiny_model.causal_lm.backbone, rank=2, top_layers=1)
    names = sft.lora_weight_names(tiny_model.causal_lm.backbone)
    assert names and all("transformer_layer_1" in n for n in names)


def test_lora_targets_choose_the_layers_and_reject_unknown_names(tiny_model):
    backbone = tiny_model.causal_lm.backbone
    with pytest.raises(ValueError, match="no layer named \\['mlp'\\]"):
        sft.enable_lora(backbone, rank=2, targets=("query", "mlp"))
    sft.enable_lora(backbone, rank=2, targets=("query", "feedforward_output_dense"))
    names = sft.lora_weight_names(backbone)
    layers = {n.split("/")[-2] for n in names}
    assert layers == {"query", "feedforward_output_dense"}


ALL_PROJECTIONS = ("query", "key", "value", "attention_output", "feedforward_gate_dense",
                   "feedforward_intermediate_dense", "feedforward_output_dense")


def test_lora_runs_factored_with_keras_merged_values_and_gradients(tiny_model):
    """Each LoRA layer computes x W + s (x A) B: the same outputs and A, B and input gradients as Keras'
    merged x (W + s A B) (the backward pass is hand-written), and neither pass forms a kernel-sized
    matrix (A B, or the full weight gradient)."""
    import jax
    import jax.numpy as jnp

    backbone = tiny_model.causal_lm.backbone
    sft.enable_lora(backbone, rank=2, targets=ALL_PROJECTIONS)
    layers = [lyr for lyr in backbone._flatten_layers(include_self=False) if getattr(lyr, "lora_enabled", False)]
    assert {lyr.name for lyr in layers} == set(ALL_PROJECTIONS)
    rng = np.random.default_rng(0)
    for layer in layers:
        a0 = jnp.asarray(layer.lora_kernel_a.numpy())
        b0 = jnp.asarray(rng.normal(size=layer.lora_kernel_b.shape).astype("float32"))  # Keras starts B at 0
        # The input's feature dims lead the kernel: Dense (d_in, d_out); EinsumDense btd,dnh or btnh,nhd.
        features = 1 if isinstance(layer, keras.layers.Dense) else len(layer.equation.split(",")[0]) - 2
        x = jnp.asarray(rng.normal(size=(3, 7, *layer._kernel.shape[:features])).astype("float32"))

        def loss(a, b, x, call, layer=layer):
            with keras.StatelessScope(state_mapping=[(layer.lora_kernel_a, a), (layer.lora_kernel_b, b)]):
                out = call(x)
            return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out

        merged = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(a0, b0, x, type(layer).call.__get__(layer))
        factored = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(a0, b0, x, layer.call)
        np.testing.assert_allclose(factored[0][1], merged[0][1], rtol=1e-4, atol=1e-4, err_msg=layer.name)
        for got, want in zip(factored[1], merged[1]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=layer.name)
        jaxpr = jax.make_jaxpr(jax.grad(lambda a, b, layer=layer, x=x: loss(a, b, x, layer.call)[0], argnums=(0, 1)))(a0, b0)
        dots = [v.aval.size for e in jaxpr.eqns if e.primitive.name == "dot_general" for v in e.outvars]
        assert dots and int(np.prod(layer._kernel.shape)) not in dots, layer.name
