"""The chat model every stage shares: load a base model by name, format chats, generate greedily.

A `ChatModel` bundles a keras-hub CausalLM (no preprocessor attached: alignflow tokenizes itself so
shapes stay fixed and no start token is prepended twice), a tokenizer and a chat template.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

import alignflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
from alignflow.config import GenerateParams, ModelParams
from alignflow.model import chat
from alignflow.model.gguf_loader import (
    ModelLoadError,
    build_backbone,
    bundled_gguf_path,
    file_sha256,
    read_gguf,
)
from alignflow.model.tokenizer import BPETokenizer, KerasHubTokenizer, TextTokenizer

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
RANDOM_PREFIX = "random:"  # "random:tiny" or "random:tiny:SEED": a tiny random model, for tests
HUB_PREFIXES = ("hf://", "kaggle://", "modelscope://")


@dataclass(frozen=True)
class Generated:
    """Greedy answers, the new tokens of each (up to its stop token) and the wall time."""

    texts: list[str]
    new_tokens: list[int]
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ChatModel:
    """A causal LM, its tokenizer and chat template, and where it came from."""

    name: str
    causal_lm: object
    tokenizer: TextTokenizer
    template: str
    source_hash: str = ""
    info: dict = field(default_factory=dict)
    _decoders: dict = field(default_factory=dict, repr=False, compare=False)

    def decoder(self, max_new_tokens: int):
        """The compiled greedy decoder for this many new tokens; None when the backbone is not a Llama."""
        import keras_hub

        if not isinstance(self.causal_lm.backbone, keras_hub.models.LlamaBackbone):
            return None
        if max_new_tokens not in self._decoders:
            from alignflow.model.decode import GreedyDecoder

            self._decoders[max_new_tokens] = GreedyDecoder(self.causal_lm.backbone, max_new_tokens)
        return self._decoders[max_new_tokens]

    def prompt_ids(self, messages: Sequence[chat.Message]) -> list[int]:
        return self.tokenizer.encode(chat.prompt_text(self.template, messages))

    def chat(self, conversations: Sequence[Sequence[chat.Message]], gen: GenerateParams, progress: bool = False) -> Generated:
        """Greedy answers to conversations (each a list of messages ending with a user turn)."""
        ids = [self.prompt_ids(c) for c in conversations]
        return generate_ids(self, ids, gen, progress)

    def ask(self, questions: Sequence[str], gen: GenerateParams, progress: bool = False) -> Generated:
        """Greedy answers to single user questions."""
        return self.chat([[{"role": "user", "content": q}] for q in questions], gen, progress)


def _check_backend() -> None:
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"alignflow runs Keras on JAX but KERAS_BACKEND is '{keras.backend.backend()}'; "
            "unset it or set KERAS_BACKEND=jax"
        )


def _greedy_lm(backbone):
    import keras_hub

    lm = keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    return lm


def load_gguf_model(path: Path, name: str, dtype: str = "float32", template: str = "auto") -> ChatModel:
    """A ChatModel from a llama GGUF file (dequantised to float32 weights)."""
    _check_backend()
    t0 = time.perf_counter()
    contents = read_gguf(path)
    tokenizer = BPETokenizer.from_gguf(contents)
    backbone = build_backbone(contents, dtype=dtype)
    source = chat.resolve_template(template, contents.chat_template, name)
    log.info("loaded %s from %s in %.1f s", name, path, time.perf_counter() - t0)
    return ChatModel(
        name=name,
        causal_lm=_greedy_lm(backbone),
        tokenizer=tokenizer,
        template=source,
        source_hash=file_sha256(path),
        info={"format": "gguf", "path": str(path), "parameters": int(backbone.count_params())},
    )


def load_preset_model(preset: str, dtype: str = "float32", template: str = "auto") -> ChatModel:
    """A ChatModel from a keras-hub preset name, a local preset folder or an hf:// / kaggle:// handle.

    Preset names and hub handles download weights on first use (needs network); local folders do not.
    """
    _check_backend()
    import keras_hub

    lm = keras_hub.models.CausalLM.from_preset(preset, dtype=dtype)
    tokenizer = KerasHubTokenizer(lm.preprocessor.tokenizer)
    lm.preprocessor = None
    lm.compile(sampler="greedy")
    local = Path(preset)
    digest = ""
    if local.is_dir():
        import hashlib

        h = hashlib.sha256()
        for f in sorted(p for p in local.rglob("*") if p.is_file()):
            h.update(f.relative_to(local).as_posix().encode())
            h.update(file_sha256(f).encode())
        digest = h.hexdigest()
    return ChatModel(
        name=preset,
        causal_lm=lm,
        tokenizer=tokenizer,
        template=chat.resolve_template(template, None, preset),
        source_hash=digest,
        info={"format": "keras-hub-preset", "parameters": int(lm.backbone.count_params())},
    )


def load_model(params: ModelParams) -> ChatModel:
    """Load the base model named in params (see ModelParams.base for the accepted forms)."""
    base = params.base
    if base.startswith(RANDOM_PREFIX):
        kind, _, seed = base[len(RANDOM_PREFIX):].partition(":")
        if kind != "tiny" or (seed and not seed.isdigit()):
            raise ModelLoadError(f"model.base '{base}': the random form is 'random:tiny' or 'random:tiny:SEED'")
        return build_tiny_model(int(seed or 0))
    if base.startswith(BUNDLED_PREFIX):
        name = base[len(BUNDLED_PREFIX):]
        return load_gguf_model(bundled_gguf_path(name), name, params.dtype, params.chat_template)
    if base.endswith(".gguf"):
        path = Path(base)
        if not path.exists():
            raise ModelLoadError(f"{path}: GGUF file not found")
        return load_gguf_model(path, path.stem, params.dtype, params.chat_template)
    if Path(base).is_dir():
        from alignflow.model import artifacts  # (imports this module)

        if (Path(base) / artifacts.MERGED_META).exists():
            return artifacts.load_merged(Path(base))
        if (Path(base) / artifacts.ADAPTER_META).exists():
            return artifacts.load_adapter(Path(base), params)
    if Path(base).is_dir() or base.startswith(HUB_PREFIXES) or "/" not in base:
        return load_preset_model(base, params.dtype, params.chat_template)
    raise ModelLoadError(f"model.base '{base}': not a bundled name, .gguf file, preset folder or hub handle")


def bundled_tokenizer(name: str = "smollm2-135m-instruct") -> tuple[BPETokenizer, str]:
    """The bundled model's tokenizer and chat template, without loading its weights."""
    contents = read_gguf(bundled_gguf_path(name), tensors=False)
    return BPETokenizer.from_gguf(contents), chat.resolve_template("auto", contents.chat_template, name)


def build_tiny_model(seed: int = 0, num_layers: int = 2, hidden_dim: int = 64) -> ChatModel:
    """A tiny random Llama3 model with the bundled tokenizer, for tests (trains a step in ~0.1 s)."""
    _check_backend()
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    tokenizer, template = bundled_tokenizer()
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=num_layers,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        rope_max_wavelength=10000,
        tie_word_embeddings=True,
    )
    return ChatModel(
        name="tiny-random-llama3",
        causal_lm=_greedy_lm(backbone),
        tokenizer=tokenizer,
        template=template,
        source_hash=f"random-seed-{seed}",
        info={"format": "random", "parameters": int(backbone.count_params())},
    )


def pad_batch(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token lists to [len(rows), length]; longer rows keep their last `length` tokens."""
    ids = np.full((len(rows), length), pad_id, dtype="int32")
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, row in enumerate(rows):
        row = list(row)[-length:]
        ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return ids, mask


def generate_ids(
    model: ChatModel, prompts: Sequence[Sequence[int]], gen: GenerateParams, progress: bool = False
) -> Generated:
    """Greedy decoding of token-id prompts in a few fixed shapes.

    Prompts are sorted by length, batched, and padded to the next multiple of `gen.bucket` (capped at
    max_prompt_tokens): rows in a batch have similar lengths and XLA compiles once per bucket (not once
    per batch). Llama-family models decode with alignflow's GreedyDecoder (left padding, early stop);
    other keras-hub models with their own `generate`, which right-pads and decodes every row up to the
    padded length. The last batch is topped up with copies of its first prompt. Answers come back in
    input order.
    """
    from tqdm.auto import tqdm

    stops = set(model.tokenizer.stop_ids)
    clipped = [list(p)[-gen.max_prompt_tokens:] for p in prompts]
    order = sorted(range(len(clipped)), key=lambda i: len(clipped[i]))
    answers: list[str] = [""] * len(clipped)
    counts: list[int] = [0] * len(clipped)
    decoder = model.decoder(gen.max_new_tokens)
    t0 = time.perf_counter()
    bar = tqdm(total=len(clipped), desc=f"generate {model.name}", unit="prompt", disable=not progress)
    for start in range(0, len(order), gen.batch_size):
        rows = order[start : start + gen.batch_size]
        chunk = [clipped[i] for i in rows]
        longest = max(len(c) for c in chunk)
        prompt_len = min(gen.max_prompt_tokens, -(-longest // gen.bucket) * gen.bucket)
        filled = chunk + [chunk[0]] * (gen.batch_size - len(chunk))
        if decoder is not None:
            new_ids = decoder(filled, prompt_len, stops, model.tokenizer.pad_id)
        else:
            ids, mask = pad_batch(filled, prompt_len + gen.max_new_tokens, model.tokenizer.pad_id)
            out = model.causal_lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=tuple(sorted(stops)))
            out_ids = np.asarray(out["token_ids"])
            new_ids = [out_ids[j, len(c) : len(c) + gen.max_new_tokens] for j, c in enumerate(filled)]
        for j, i in enumerate(rows):
            new = list(new_ids[j])
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            answers[i] = model.tokenizer.decode(new[:cut]).strip()
            counts[i] = cut
        bar.update(len(rows))
        bar.set_postfix(tok_s=f"{sum(counts) / (time.perf_counter() - t0):.0f}")
    bar.close()
    return Generated(answers, counts, time.perf_counter() - t0)
