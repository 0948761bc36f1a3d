"""Greedy decoding with a KV cache, compiled once per (batch, prompt length) into one XLA program.

keras-hub's `CausalLM.generate` right-pads prompts, runs its prefill over the whole padded length (the
slots still to be generated and the LM head of every position included) and restacks the cache of all
layers at every step. Here prompts are left-padded to a shared length P, so every row's next token sits
at position P: the prefill runs over the P prompt positions only, the LM head runs for the last position
only, each layer's cache is its own loop carry (updated in place), and the loop ends as soon as every
row has produced a stop token. Left padding only shifts a row's absolute positions; RoPE attention
depends on relative positions alone, and padded keys are masked, so the answers are those of decoding
each prompt on its own.

The backbone's own sublayers (embedding, norms, projections, RoPE, MLP) compute the forward pass under a
StatelessScope inside one jax.jit, as keras-hub does for its own generate, so LoRA-enabled backbones work
too. Only attention is alignflow's: grouped-query attention over per-layer key and value caches, without
keras-hub's per-step repeat of K/V to every query head and restacking of the cache (on 2 CPU cores those
made a decode step ~3x slower than its matmuls).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class GreedyDecoder:
    """Batched greedy decoding of left-padded token-id prompts for a keras-hub Llama-family backbone."""

    def __init__(self, backbone, max_new_tokens: int):
        self.backbone = backbone
        self.max_new_tokens = max_new_tokens
        self._fn = None

    def _compile(self):
        import jax
        import jax.numpy as jnp
        import keras

        bb = self.backbone
        layers = bb.transformer_layers
        variables = bb.variables
        max_new = self.max_new_tokens
        attn0 = layers[0]._self_attention_layer
        kv_heads, heads = attn0.num_key_value_heads, attn0.num_query_heads
        head_dim = bb.hidden_dim // heads
        dtype = bb.compute_dtype

        def attention(layer, h, k_cache, v_cache, index, allowed):
            """Grouped-query attention of h's positions over the cache (written at `index` first)."""
            attn = layer._self_attention_layer
            q = attn.rotary_embedding_layer(attn._query_dense(h), start_index=index)  # [b, t, heads, d]
            k = attn.rotary_embedding_layer(attn._key_dense(h), start_index=index)  # [b, t, kv, d]
            v = attn._value_dense(h)
            # caches are [b, kv, length, d]: batched matmuls over (b, kv) read them in place, no transpose
            k_cache = jax.lax.dynamic_update_slice(k_cache, k.transpose(0, 2, 1, 3).astype(dtype), (0, 0, index, 0))
            v_cache = jax.lax.dynamic_update_slice(v_cache, v.transpose(0, 2, 1, 3).astype(dtype), (0, 0, index, 0))
            b, t = q.shape[:2]
            group = heads // kv_heads
            # [b, t, kv * group, d] -> [b, kv, group * t, d]: no repeat of K/V per query head
            q = q.reshape(b, t, kv_heads, group, head_dim).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, group * t, head_dim)
            scores = jnp.einsum("bkqd,bkld->bkql", q, k_cache).astype("float32") * attn._inv_norm_factor
            mask = jnp.broadcast_to(allowed[:, None, None, :, :], (b, 1, group, t, allowed.shape[-1]))
            scores = jnp.where(mask.reshape(b, 1, group * t, -1), scores, jnp.finfo("float32").min)
            probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
            out = jnp.einsum("bkql,bkld->bkqd", probs, v_cache)
            out = out.reshape(b, kv_heads, group, t, head_dim).transpose(0, 3, 1, 2, 4).reshape(b, t, heads, head_dim)
            return attn._output_dense(out), k_cache, v_cache

        def forward(token_ids, caches, index, key_mask):
            """Logits of the last position and the updated (key, value) caches of every layer."""
            t, length = token_ids.shape[1], key_mask.shape[1]
            causal = jnp.arange(length)[None, :] <= index + jnp.arange(t)[:, None]  # [t, length]
            allowed = causal[None, :, :] & (key_mask[:, None, :] > 0)  # padded keys never attend
            x = bb.token_embedding(token_ids)
            updated = []
            for layer, (k_cache, v_cache) in zip(layers, caches):
                a, k_cache, v_cache = attention(layer, layer._self_attention_layernorm(x), k_cache, v_cache, index, allowed)
                x = x + a
                h = layer._feedforward_layernorm(x)
                gate = layer.activation(layer._feedforward_gate_dense(h).astype("float32")).astype(dtype)
                x = x + layer._feedforward_output_dense(layer._feedforward_intermediate_dense(h) * gate)
                updated.append((k_cache, v_cache))
            x = bb.layer_norm(x[:, -1:, :])
            return bb.token_embedding(x, reverse=True)[:, 0, :].astype("float32"), tuple(updated)

        def generate(state, token_ids, prompt_mask, stop_ids, pad_id):
            b, p = token_ids.shape
            length = p + max_new
            key_mask = jnp.concatenate([prompt_mask.astype("int32"), jnp.ones((b, max_new), "int32")], axis=1)
            with keras.StatelessScope(state_mapping=list(zip(variables, state))):
                empty = jnp.zeros((b, kv_heads, length, head_dim), dtype)
                logits, caches = forward(token_ids, tuple((empty, empty) for _ in layers), 0, key_mask)
                token = jnp.argmax(logits, axis=-1).astype("int32")
                out = jnp.full((b, max_new), pad_id, "int32").at[:, 0].set(token)
                done = jnp.isin(token, stop_ids)

                def cond(carry):
                    t, _, _, _, done = carry
                    return (t < max_new) & ~jnp.all(done)

                def body(carry):
                    t, token, caches, out, done = carry
                    logits, caches = forward(token[:, None], caches, p + t - 1, key_mask)
                    nxt = jnp.where(done, pad_id, jnp.argmax(logits, axis=-1).astype("int32"))
                    return t + 1, nxt, caches, out.at[:, t].set(nxt), done | jnp.isin(nxt, stop_ids)

                _, _, _, out, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), token, caches, out, done))
            return out

        self._fn = jax.jit(generate)

    def __call__(self, prompts: Sequence[Sequence[int]], length: int, stop_ids: Sequence[int], pad_id: int) -> np.ndarray:
        """New token ids [len(prompts), max_new_tokens] (pad after a stop) for prompts left-padded to `length`."""
        if self._fn is None:
            self._compile()
        ids = np.full((len(prompts), length), pad_id, dtype="int32")
        mask = np.zeros((len(prompts), length), dtype="int32")
        for i, row in enumerate(prompts):
            row = list(row)[-length:]
            if row:
                ids[i, -len(row):] = row
                mask[i, -len(row):] = 1
        state = [v.value for v in self.backbone.variables]
        stops = np.asarray(sorted(stop_ids) or [-1], dtype="int32")
        return np.asarray(self._fn(state, ids, mask, stops, np.int32(pad_id)))
