"""Tokenizers behind one small interface: encode text to ids, decode ids to text.

SmolLM2's tokenizer is byte-level BPE whose pre-tokenizer first splits every digit on its own, then
applies the GPT-2 byte-level split without a prefix space. keras-hub's BytePairTokenizer pre-splits
differently (repeated spaces, newlines and digits come out wrong), so for GGUF models alignflow builds
the exact pipeline with Hugging Face `tokenizers` from the GGUF's own vocabulary and merges.
For keras-hub presets (Gemma, Llama 3 ...) the preset's own keras-hub tokenizer is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

GGUF_TOKEN_TYPE_CONTROL = 3  # gguf.TokenType.CONTROL: special tokens never produced by BPE


class TextTokenizer(Protocol):
    """What the rest of alignflow needs from a tokenizer."""

    vocabulary_size: int
    pad_id: int
    stop_ids: tuple[int, ...]

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass
class BPETokenizer:
    """Exact SmolLM2-style byte-level BPE (Hugging Face `tokenizers`), special tokens parsed in text."""

    tokens: list[str]
    merges: list[str]
    special_tokens: list[str]
    pad_id: int
    stop_ids: tuple[int, ...]
    _tok: object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        vocab = {t: i for i, t in enumerate(self.tokens)}
        merges = [tuple(m.split(" ", 1)) for m in self.merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in self.special_tokens])
        self._tok = tok

    @classmethod
    def from_gguf(cls, contents) -> "BPETokenizer":
        """Build from a GGUF's tokenizer tables; control tokens become special tokens."""
        if contents.tokens and not contents.merges:
            raise ValueError("GGUF tokenizer has no merges: only byte-level BPE ('gpt2') is supported")
        special = [t for t, ty in zip(contents.tokens, contents.token_types) if ty == GGUF_TOKEN_TYPE_CONTROL]
        vocab = {t: i for i, t in enumerate(contents.tokens)}
        stops = [vocab[t] for t in ("<|im_end|>",) if t in vocab] or [contents.special["eos"]]
        # pad must differ from the stop id, or generation stops at once (keep <|endoftext|> = 0).
        pad = vocab.get("<|endoftext|>", 0)
        return cls(list(contents.tokens), list(contents.merges), special, pad, tuple(stops))

    @property
    def vocabulary_size(self) -> int:
        return len(self.tokens)

    def save(self, path) -> None:
        """Write the tokenizer tables as one JSON file (reloaded by `load`)."""
        data = {"format": "alignflow-bpe-v1", "tokens": self.tokens, "merges": self.merges,
                "special_tokens": self.special_tokens, "pad_id": self.pad_id, "stop_ids": list(self.stop_ids)}
        Path(path).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != "alignflow-bpe-v1":
            raise ValueError(f"{path}: not an alignflow tokenizer file")
        return cls(data["tokens"], data["merges"], data["special_tokens"], data["pad_id"], tuple(data["stop_ids"]))

    def token_to_id(self, token: str) -> int:
        return self._tok.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


class KerasHubTokenizer:
    """Adapter over a keras-hub preset tokenizer (for users with network or local presets)."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.vocabulary_size = int(tokenizer.vocabulary_size())
        stops = []
        for name in ("end_token_id", "end_of_turn_token_id", "eot_id"):
            if getattr(tokenizer, name, None) is not None:
                stops.append(int(getattr(tokenizer, name)))
        for token in ("<end_of_turn>", "<|eot_id|>", "<|im_end|>"):
            try:
                tid = tokenizer.token_to_id(token)
            except Exception:  # not in this vocabulary
                continue
            if tid is not None and tid >= 0:
                stops.append(int(tid))
        self.stop_ids = tuple(dict.fromkeys(stops))
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None and int(pad) not in self.stop_ids else 0

    def encode(self, text: str) -> list[int]:
        import numpy as np

        return [int(i) for i in np.asarray(self._tok.tokenize(text)).tolist()]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.detokenize([int(i) for i in ids]))
