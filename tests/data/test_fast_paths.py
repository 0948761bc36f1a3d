"""The curate stage's fast paths give exactly what the plain definitions give (benchmarks/curate)."""

import json
import random
import re
import unicodedata
from collections import Counter

import msgspec
import numpy as np
import pyarrow as pa
import pytest
import rensa

from alignflow.data import curation, dedup, text
from alignflow.data.curation_report import WordHashes
from alignflow.data.policies import Policies
from alignflow.data.records import check_row, parse_line, raw_text, read_lines, row_type

ALPHABET = list("ab Z9_-.,@\n\n\t\r  ") + ["\u00a0", "\u200b", "\u3000", "e\u0301", "\u00e9", "\x0b", "\x1c", "\x85",
                                            "\u2028", "\x00", "\ufeff", "\u0663", "ß", "İ", "2024", "x@y.io"]


def fuzz(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def normalise_reference(t: str) -> str:
    """normalise() as first written: every edit applied unconditionally."""
    t = unicodedata.normalize("NFC", t).replace("\r\n", "\n").replace("\r", "\n")
    t = text._ZERO_WIDTH.sub("", text._ODD_SPACES.sub(" ", t))
    t = "\n".join(text._INNER_SPACES.sub(" ", line).rstrip() for line in t.split("\n"))
    return text._BLANK_LINES.sub("\n\n", t).strip()


def test_normalise_fast_path_matches_reference():
    for t in fuzz(5000) + ["plain text", "two\nlines", "", " ", "a\x7fb"]:
        assert text.normalise(t) == normalise_reference(t), repr(t)


def scrub_reference(t: str) -> tuple[str, dict]:
    """scrub_pii as first written: every pattern scans every text."""
    counts: dict = {}

    def sub(kind, pattern, t, valid):
        def repl(m):
            if not valid(m.group()):
                return m.group()
            counts[kind] = counts.get(kind, 0) + 1
            return text.PLACEHOLDERS[kind]
        return pattern.sub(repl, t)

    t = sub("email", text._EMAIL, t, lambda s: True)
    t = sub("card", text._CARD, t, lambda s: 13 <= len(re.sub(r"\D", "", s)) <= 19)
    t = sub("ip", text._IPV4, t, text._valid_ip)
    t = sub("phone", text._PHONE, t, lambda s: 9 <= len(re.sub(r"\D", "", s)) <= 15 and not text._valid_ip(s))
    return t, counts


def test_scrub_prefilters_and_word_bytes_match_reference():
    pieces = ["jane.doe@mail.example.org", "+44 20 7946 0958", "4111 1111 1111 1111", "10.0.0.254", "1.2.3",
              "(555) 123-4567", "020 7946 0958", "\u0661\u0662\u0663 \u0664\u0665\u0666 \u0667\u0668\u0669\u0660",
              "2026-11-22", " ", "x", "0", ".", "-"]
    rng = random.Random(7)
    texts = fuzz(3000, seed=1) + ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(3000)]
    for t in texts:
        out, counts = text.scrub_pii(t)
        assert (out, dict(counts)) == text.scrub_pii_counts(t) == scrub_reference(t), repr(t)
        assert [w.decode() for w in text.word_bytes(t)] == text.words(t), repr(t)


POLICIES = Policies({"cyber_harm": "x"}, {"coding": "y"}, {"cyber_harm": "Cyber"})
ROW = {"id": "r1", "messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}],
       "policy": "cyber_harm", "use_case": "coding", "adversarial": True, "source": "t"}


@pytest.mark.parametrize("line", [
    json.dumps(ROW), json.dumps({**ROW, "formulation": None}), json.dumps({**ROW, "formulation": "direct"}) + "\r",
    json.dumps({**ROW, "id": 123456789012345678901234567890}), json.dumps({**ROW, "extra": float("nan")}),
    json.dumps({**ROW, "source": 1e400}), '{"id": "x", "messages": "\\ud800"}', json.dumps(ROW)[:-3],
    "\ufeff" + json.dumps(ROW), json.dumps([ROW]), json.dumps({**ROW, "id": " "}), "  " + json.dumps(ROW) + " \t",
    json.dumps({**ROW, "messages": [{"role": ["user"], "content": "x"}, ROW["messages"][1]]}),
    json.dumps({**ROW, "formulation": ["direct"]}), json.dumps({**ROW, "policy": "none"}),
    json.dumps({**ROW, "messages": ROW["messages"][::-1]}), json.dumps({**ROW, "adversarial": 1}),
    json.dumps({**ROW, "id": "a\ud800b"}), json.dumps(ROW).replace("hi there", "hi\\ud83dthere"),
    json.dumps(ROW).replace("hi there", "hi\u00e9\x01there"), json.dumps(ROW).replace("hi there", "hi \udcffthere"),
    json.dumps({**ROW, "id": "x", "id ": "y"}), json.dumps(ROW).replace('"id": "r1"', '"id": "r1", "id": "r2"'),
    json.dumps({**ROW, "adversarial": False, "policy": "none"}), json.dumps({**ROW, "formulation": "poem"}),
    json.dumps({**ROW, "messages": [{"role": "system", "content": " \u3000"}, *ROW["messages"]]}),
    json.dumps({**ROW, "messages": [{**ROW["messages"][0], "name": "x"}, ROW["messages"][1]]}),
])
def test_parse_line_matches_json_parsing(line):
    raw = line.encode("utf-8", errors="surrogateescape" if "\udcff" in line else "surrogatepass") + b"\n"
    try:
        obj = json.loads(raw.decode("utf-8").rstrip("\r\n"))
        problem = check_row(obj, POLICIES)
        rid = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
        row = row_type(POLICIES)
        expected = (None if problem else msgspec.convert(obj, row), rid, problem)
    except UnicodeDecodeError as exc:
        expected = (None, None, ("invalid_utf8", None, f"invalid UTF-8 at byte {exc.start}"))
    except json.JSONDecodeError as exc:
        expected = (None, None, ("malformed_json", None, f"invalid JSON: {exc.msg} (column {exc.colno})"))
    assert parse_line(raw, POLICIES) == expected


def reference_parse(raw: bytes):
    """parse_line's answer, worked out with json.loads and check_row only."""
    try:
        obj = json.loads(raw.decode("utf-8").rstrip("\r\n"))
    except UnicodeDecodeError as exc:
        return None, None, ("invalid_utf8", None, f"invalid UTF-8 at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return None, None, ("malformed_json", None, f"invalid JSON: {exc.msg} (column {exc.colno})")
    problem = check_row(obj, POLICIES)
    rid = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
    return (None if problem else msgspec.convert(obj, row_type(POLICIES))), rid, problem


def test_parse_line_matches_json_parsing_on_mutated_lines():
    """Random byte edits of valid rows: the typed fast path accepts exactly what json + check_row accept."""
    rng = random.Random(11)
    seeds = [json.dumps(ROW).encode(), json.dumps({**ROW, "formulation": "direct", "adversarial": False}).encode(),
             json.dumps({**ROW, "messages": [{"role": "system", "content": "be \u00e9 brief"}, *ROW["messages"]]},
                        ensure_ascii=False).encode()]
    pieces = [b'"', b"\\", b"\\u00e9", b"\\ud800", b"\xff", b"\xc3\xa9", b"\x00", b" ", b"\t", b",", b"{", b"}", b"[", b"]",
              b"null", b"true", b"1", b'"none"', b'"user"', b'"assistant"', b'"formulation":', b'"role":']
    accepted = 0
    for _ in range(4000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(raw) + 1)
            if rng.random() < 0.5:
                raw[at:at + rng.randint(1, 4)] = b""
            else:
                raw[at:at] = rng.choice(pieces)
        raw = bytes(raw) + b"\n"
        expected = reference_parse(raw)
        assert parse_line(raw, POLICIES) == expected, raw
        accepted += expected[2] is None
    assert 50 < accepted < 3950  # both paths exercised


def test_read_lines_matches_file_iteration(tmp_path):
    data = b'{"a": 1}\n\n   \n\t\r\n{"b": 2}\r\n \x0b\n x \n\xff\xfe\n{"c": 3}'
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "b.jsonl").write_bytes(b"")
    table, names = read_lines([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], root=tmp_path)
    expected = [(n, raw) for n, raw in enumerate(open(tmp_path / "a.jsonl", "rb"), start=1) if raw.strip()]
    assert names == ["a.jsonl", "b.jsonl"]
    assert list(zip(table.column("line").to_pylist(), table.column("raw").to_pylist())) == expected
    assert set(table.column("file").to_pylist()) == {0}
    assert raw_text(b"\xff\xfe\n") == "\ufffd\ufffd" and raw_text(b'{"a": 1}\r\n') == '{"a": 1}'


def corpus(n: int, seed: int = 0) -> list[str]:
    """Random word texts with near copies (a word or two changed) of earlier texts."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    texts = []
    for _ in range(n):
        if texts and rng.random() < 0.3:
            ws = rng.choice(texts).split()
            for _ in range(rng.randint(1, 3)):
                ws[rng.randrange(len(ws))] = rng.choice(vocab)
        else:
            ws = [rng.choice(vocab) for _ in range(rng.randint(2, 40))]
        texts.append(" ".join(ws))
    return texts


def flat_layout(texts: list[str], n: int = 3):
    w = dedup.split_words([text.word_stream(t) for t in texts])
    return dedup.gram_hashes_flat(w.hashes, w.counts, n)


def gram_list(t: str, n: int = 3) -> list[int]:
    return flat_layout([t], n)[0].tolist()


def test_split_words_matches_words_and_key_in_any_batch():
    """Batched word hashes, keys and n-grams equal the per-text definitions, wherever a text sits."""
    texts = fuzz(2000, seed=8) + corpus(500, seed=9) + ["", " ", "one", "a b", "İß e\u0301 x", "It's 2 o'clock!"]
    w = dedup.split_words([text.word_stream(t) for t in texts])
    assert w.counts.tolist() == [len(text.words(t)) for t in texts]
    assert w.keys.to_pylist() == [text.key(t) for t in texts]
    flat, offsets = dedup.gram_hashes_flat(w.hashes, w.counts, 3)
    alone = [gram_list(t) for t in texts]
    assert [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == alone
    assert [len(g) for g in alone] == [len(text.ngrams(text.words(t), 3)) for t in texts]
    # Equal words hash equally, different words differently (over this corpus's vocabulary).
    vocab = {}
    for word, h in zip([x for t in texts for x in text.words(t)], w.hashes.tolist()):
        assert vocab.setdefault(word, h) == h
    assert len(set(vocab.values())) == len(vocab)
    # Equal n-grams hash equally, different n-grams differently, short texts included.
    grams = {}
    for t, hs in zip(texts, alone):
        for g, h in zip(text.ngrams(text.words(t), 3), hs):
            assert grams.setdefault(g, h) == h
    assert len(set(grams.values())) == len(grams)


@pytest.mark.parametrize("bands,threshold", [(16, 0.8), (32, 0.7), (8, 0.9)])
def test_near_duplicates_flat_matches_near_duplicates(bands, threshold):
    texts = corpus(1500)
    sig = dedup.digests([dedup.shingle_hashes(t, 3) for t in texts], 128)
    flat, offsets = flat_layout(texts)
    expected = dedup.near_duplicates(texts, sig, 3, bands, threshold)
    assert expected and dedup.near_duplicates_flat(flat, offsets, 128, bands, threshold) == expected


@pytest.mark.parametrize("bands", [8, 16, 32])
def test_rensa_flags_rows_that_share_a_band(bands):
    """near_duplicates_flat relies on rensa banding like band_keys (contiguous num_perm / bands slices)."""
    texts = corpus(2000, seed=2)
    flat, offsets = flat_layout(texts)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets.astype(np.uint64), 128, dedup.MINHASH_SEED)
    flags = np.array(rensa.RMinHashLSH(0.8, 128, bands).query_duplicate_flags_matrix_one_shot(matrix))
    in_pairs = np.zeros(len(texts), dtype=bool)
    in_pairs[dedup.pair_array(dedup.band_keys(dedup.digests([dedup.shingle_hashes(t, 3) for t in texts], 128), bands))
             .ravel()] = True
    assert in_pairs.any() and np.array_equal(flags, in_pairs)


def test_pair_array_matches_brute_force():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 6, size=(60, 4)).astype(np.uint64)
    brute = {(i, j) for i in range(60) for j in range(i + 1, 60) if (keys[i] == keys[j]).any()}
    assert dedup.candidate_pairs(keys) == brute
    assert [tuple(p) for p in dedup.pair_array(keys).tolist()] == sorted(brute)


def test_reference_index_suspects_cover_every_match():
    refs = corpus(200, seed=3)
    rows = corpus(3000, seed=4) + [refs[5], "zz " + refs[7], " ".join(refs[9].split()[:12]), "a", ""]
    index = dedup.ReferenceIndex(refs, shingle_n=3, overlap_n=10, num_perm=128, bands=16)
    hashes = [gram_list(t) if len(text.words(t)) >= 3 else [] for t in rows]
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in hashes])]).astype(np.int64)
    suspects = set(index.suspects(np.array([x for h in hashes for x in h], dtype=np.uint64), offsets, 0.5).tolist())
    matched = set()
    for i, t in enumerate(rows):
        sh = dedup.shingle_hashes(t, 3)
        if index.match(t, sh, dedup.band_keys(dedup.digests([sh], 128), 16)[0], 0.5)[0] >= 0:
            matched.add(i)
    assert {3000, 3001, 3002} <= matched <= suspects and len(suspects) < len(rows) // 2


def test_distinct_ratios_match_distinct_ratio():
    texts = corpus(500, seed=5) + ["", "one", "a b", "It's 2 o'clock!"] + fuzz(200, seed=6)
    words = WordHashes.of_texts(texts)
    assert words.distinct_ratios(np.arange(len(texts)), (1, 2, 3)) == {n: text.distinct_ratio(texts, n) for n in (1, 2, 3)}
    subset = np.arange(0, len(texts), 3)
    assert words.distinct_ratios(subset, (2, 4)) == {n: text.distinct_ratio([texts[i] for i in subset], n) for n in (2, 4)}
    assert WordHashes.of_texts([]).distinct_ratios(np.zeros(0, np.int64), (2,)) == {2: 0.0}


def test_curate_workers_emit_the_word_hashes_of_prompt_and_response():
    good = {"id": "r1", "policy": "cyber_harm", "use_case": "coding", "adversarial": False, "source": "t",
            "messages": [{"role": "user", "content": "Hello  World, hello!"},
                         {"role": "assistant", "content": "Hi there."}]}
    lines = [json.dumps(good), "{broken", json.dumps({**good, "id": "r2"})]
    batch = pa.table({"raw": pa.array([line.encode() for line in lines], pa.binary())})
    out = curation._prepare_batch(batch, POLICIES, 3)
    expected = WordHashes.of_texts(["Hello World, hello!", "Hi there."]).values
    assert out.column("prompt_hashes").to_pylist() == [expected[:3].tolist(), [], expected[:3].tolist()]
    assert out.column("response_hashes").to_pylist() == [expected[3:].tolist(), [], expected[3:].tolist()]
    assert expected[0] == expected[2] != expected[1]  # "hello" twice, case-folded


def test_word_bytes_agrees_with_the_regex_on_every_ascii_character():
    every = "".join(map(chr, range(128)))
    assert [w.decode() for w in text.word_bytes(every)] == re.findall(r"\w+", every.casefold())
    assert Counter(text.word_bytes("A a a")) == {b"a": 3}


def test_word_counts_match_split():
    texts = fuzz(3000, seed=8) + ["", "a", "a b", " a  b ", "x\ty", "l1\nl2  l3", "x\x1cy\x1f", "\u2028z", "é b"]
    texts += [text.scrub_pii(text.normalise(t))[0] for t in texts]
    for part in (texts, texts[1:], texts[:1], texts[:0]):
        counts = curation.word_counts(pa.array(part, pa.string()), part)
        assert counts.tolist() == [len(t.split()) for t in part]
    sliced = pa.array(texts, pa.string()).slice(5, 40)  # an array whose buffer starts elsewhere
    assert curation.word_counts(sliced, texts[5:45]).tolist() == [len(t.split()) for t in texts[5:45]]


def stratified_split_reference(policies: list[str], use_cases: list[str], val_fraction: float, seed: int) -> list[str]:
    """stratified_split as first written: a Python dict of cells, one loop per row."""
    cells: dict = {}
    for i, cell in enumerate(zip(policies, use_cases)):
        cells.setdefault(cell, []).append(i)
    out = ["train"] * len(policies)
    rng = np.random.default_rng(seed)
    for cell in sorted(cells):
        members = np.array(cells[cell])
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        if val_fraction > 0 and n_val == 0 and len(members) >= 3:
            n_val = 1
        for i in members[:n_val]:
            out[int(i)] = "val"
    return out


@pytest.mark.parametrize("fraction,seed", [(0.1, 42), (0.25, 7), (0.0, 1)])
def test_stratified_split_matches_reference(fraction, seed):
    from alignflow.data.curation import stratified_split

    rng = random.Random(seed)
    policies = [rng.choice(["fraud", "none", "cyber_harm", "hate"]) for _ in range(3000)]
    use_cases = [rng.choice(["advice", "coding", "qa"]) if p != "hate" else "qa" for p in policies]
    got = stratified_split(pa.array(policies), pa.chunked_array([use_cases[:1000], use_cases[1000:]]), fraction, seed)
    assert got.tolist() == stratified_split_reference(policies, use_cases, fraction, seed)
    assert (fraction == 0) == ("val" not in got.tolist())


def pair_case(rng, draw):
    """300 rows of hashes (`draw(size)` each: repeats and empty rows included), 2000 random pairs, and
    the pairs' Jaccard computed set by set."""
    rows = [draw(rng.integers(0, 25)) for _ in range(300)]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    pairs = np.array(sorted({tuple(sorted(rng.choice(300, 2, replace=False).tolist())) for _ in range(2000)}))
    sets = [np.unique(r) for r in rows]
    return np.concatenate(rows), offsets, pairs, sets, [dedup.jaccard(sets[i], sets[j]) for i, j in pairs.tolist()]


def test_pair_jaccard_matches_sets():
    rng = np.random.default_rng(11)  # small values: they share their top 48 bits, the renumbered path answers
    flat, offsets, pairs, _, expected = pair_case(rng, lambda n: rng.integers(0, 40, size=n).astype(np.uint64))
    assert dedup.pair_jaccard(flat, offsets, pairs).tolist() == expected


@pytest.mark.parametrize("chunk", [dedup._PAIR_CHUNK, 7])
def test_pair_jaccard_fast_path_on_64_bit_hashes(monkeypatch, chunk):
    """Real shingle hashes (64-bit, no two sharing their top 48 bits) take the sorted-key path, in chunks of pairs."""
    monkeypatch.setattr(dedup, "_PAIR_CHUNK", chunk)
    rng = np.random.default_rng(12)
    pool = rng.integers(0, 2**63, size=60, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    flat, offsets, pairs, sets, expected = pair_case(rng, lambda n: rng.choice(pool, size=n))  # shared values
    assert dedup.pair_jaccard(flat, offsets, pairs).tolist() == expected
    # Two distinct hashes that agree in their top 48 bits: the renumbered path answers, still exact.
    twin = np.array([pool[0] ^ np.uint64(2)], dtype=np.uint64)
    got = dedup.pair_jaccard(np.concatenate([flat, twin]), np.r_[offsets, offsets[-1] + 1], np.vstack([pairs, [[0, 300]]]))
    assert got[:-1].tolist() == expected and got[-1] == dedup.jaccard(sets[0], twin)
