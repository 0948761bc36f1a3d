"""Tokenizer parity with SmolLM2's reference tokenizer on strings that trip up naive pre-tokenizers."""

import pytest

from reference_bpe import ReferenceBPE

# Expected ids were derived once from the GGUF's vocabulary and merges and checked by hand against
# SmolLM2's reference pre-tokenization: digits one by one; GPT-2's byte-level split without a prefix
# space (a run of spaces leaves its last space to the next word: "a  b" -> a, Ġ, Ġb); newline = Ċ;
# special tokens whole. The token strings are given beside the ids.
KNOWN = [
    ("Hello world", [19556, 905]),  # Hello, Ġworld
    ("a  b   c\n\nd\n", [81, 216, 278, 256, 265, 198, 198, 84, 198]),  # a Ġ Ġb ĠĠ Ġc Ċ Ċ d Ċ
    ("12345 + 67.8 = 9", [33, 34, 35, 36, 37, 1232, 216, 38, 39, 30, 40, 446, 216, 41]),
    ("naïve café 東京 😀", [3546, 46494, 37366, 17097, 247, 126, 16736, 122, 40303, 218]),
    ("def f(x):\n    return x**2  # sq", [1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34, 216, 907, 15375]),
    ("<|im_start|>user\nhi<|im_end|>\n", [1, 4093, 198, 6004, 2, 198]),
    ("   leading", [256, 2899]),  # ĠĠ Ġleading
    ("trailing   ", [4861, 4966, 333]),  # tra iling ĠĠĠ
    ("I'm can't we'll", [57, 5248, 416, 982, 392, 3060]),
    ("\t tab", [197, 10147]),  # ĉ Ġtab
]

MORE = [
    "",
    " ",
    "\n\n\n",
    "2026-11-22 10:30",
    "x = [1,2,3]; print(sum(x))",
    "Ünïcödé — “quotes” … ½ ² ٣ ๔",
    "<|endoftext|><|im_end|>",
    "SELECT * FROM users WHERE id = 42;",
    "emoji 👩‍💻 and 🇫🇷 flags",
    "tabs\tand\r\nCRLF",
]


@pytest.mark.parametrize("text,ids", KNOWN)
def test_known_ids(bundled_tok, text, ids):
    tok, _ = bundled_tok
    assert tok.encode(text) == ids


@pytest.mark.parametrize("text", [t for t, _ in KNOWN] + MORE)
def test_matches_independent_reference(bundled_tok, gguf_contents, text):
    tok, _ = bundled_tok
    ref = ReferenceBPE(gguf_contents.tokens, gguf_contents.merges, tok.special_tokens)
    assert tok.encode(text) == ref.encode(text)


@pytest.mark.parametrize("text", [t for t, _ in KNOWN] + MORE)
def test_round_trip_without_specials(bundled_tok, text):
    tok, _ = bundled_tok
    plain = text.replace("<|im_start|>", "").replace("<|im_end|>", "").replace("<|endoftext|>", "")
    assert tok.decode(tok.encode(plain)) == plain


def test_special_ids(bundled_tok):
    tok, _ = bundled_tok
    assert tok.vocabulary_size == 49152
    assert tok.pad_id == 0  # <|endoftext|>; must differ from the stop id
    assert tok.stop_ids == (2,)  # <|im_end|>
    assert len(tok.merges) == 48900
