"""The curation steps on a Hugging Face `datasets.Dataset` of raw lines: parse and check, normalise,
scrub PII, deduplicate, decontaminate, split. Pure: lines in, rows (and dropped rows with reasons) out.

Where the time goes (benchmarks/curate): everything done once per row in Python (JSON parsing, the
contract check, normalisation, PII scrubbing, word n-gram hashing) runs in `_prepare_batch`, on
`num_proc` processes; the parent then works on whole columns (Arrow, numpy, rensa) and touches Python
objects only for the rows it drops or must look at closely (duplicate candidates, contamination
suspects).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from alignflow.config import CurateParams
from alignflow.data import dedup
from alignflow.data.curation_report import WordHashes, diversity_ratios
from alignflow.data.policies import Policies
from alignflow.data.records import Dropped, line_parser, log_dropped, raw_text
from alignflow.data.text import PLACEHOLDERS, normalise, scrub_pii_counts, word_stream

PII_KINDS = tuple(PLACEHOLDERS)
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
# One row per raw line. A line that breaks the contract has `reason` (and field, detail, maybe id)
# set and nulls elsewhere. The prompt and response are the last two messages (`turn`). `shingles` are
# the word n-gram hashes of prompt + "\n" + response in order (repeats kept); the first `prompt_grams`
# of them are the prompt's own n-grams (-1: the prompt has fewer words than n, so its shingle set is
# not a prefix). `key` is the prompt's case-folded words joined by spaces; `prompt_hashes` and
# `response_hashes` are the 64-bit hashes of those words, in order (dedup.split_words), from which
# the report's distinct n-gram ratios are counted; `prompt_words`/`response_words` count
# whitespace-split words.
PREPARED = pa.schema([
    ("reason", pa.string()), ("field", pa.string()), ("detail", pa.string()), ("id", pa.string()),
    ("messages", pa.list_(MESSAGE)),
    ("policy", pa.string()), ("use_case", pa.string()), ("adversarial", pa.bool_()),
    ("formulation", pa.string()), ("source", pa.string()),
    ("key", pa.string()), ("prompt_hashes", pa.list_(pa.uint64())), ("response_hashes", pa.list_(pa.uint64())),
    ("empty", pa.bool_()),
    *[(f"pii_{k}", pa.int32()) for k in PII_KINDS],
    ("shingles", pa.list_(pa.uint64())), ("prompt_grams", pa.int32()),
    ("prompt_words", pa.int32()), ("response_words", pa.int32()),
])
_META = ("policy", "use_case", "adversarial", "formulation", "source")
# Not carried to `kept`.
_PARENT_ONLY = ("reason", "field", "detail", "empty", "shingles", "prompt_grams", "prompt_hashes", "response_hashes")


def _prepare_batch(batch: pa.Table, policies: Policies, shingle_n: int) -> pa.Table:
    """Per raw line: parse and check; then normalised + scrubbed messages, keys, PII counts, shingles.

    Python runs per row only to parse, check, normalise and scrub (appends bound to locals); words,
    keys and n-gram hashes are numpy over the whole batch (`dedup.split_words`), Arrow columns are
    built once per batch.
    """
    n_kinds, pii_index = len(PII_KINDS), {k: n for n, k in enumerate(PII_KINDS)}
    problems, ids, meta, empty, pii, ends = [], [], [], [], [], []
    roles, contents, msg_offsets, streams = [], [], [0], []
    add_role, add_content, add_msg_end, add_streams = roles.append, contents.append, msg_offsets.append, streams.extend
    parse = line_parser(policies)
    for raw in batch.column("raw").to_pylist():
        obj, rid, problem = parse(raw)
        ids.append(rid)
        problems.append(problem)
        if problem:
            add_msg_end(len(roles))
            continue
        counts = [0] * n_kinds
        start = len(contents)
        for m in obj.messages:
            text, found = scrub_pii_counts(normalise(m.content))
            for kind, c in found.items():
                counts[pii_index[kind]] += c
            add_role(m.role), add_content(text)
        row_texts = contents[start:]
        prompt, response = row_texts[-2], row_texts[-1]  # check_row: the last two are user, assistant
        add_streams((word_stream(prompt), word_stream(response)))
        add_msg_end(len(roles))
        ends.append(len(roles))  # the row's prompt and response are contents[end - 2] and [end - 1]
        meta.append((obj.policy, obj.use_case, obj.adversarial, obj.formulation, obj.source))
        empty.append(not all(row_texts))
        pii.append(counts)

    # Columns: valid rows fill the positions without a problem, the others stay null.
    ok = np.array([p is None for p in problems], dtype=bool)

    def column(values, name: str) -> pa.Array:
        arr = values if isinstance(values, pa.Array) else pa.array(values, PREPARED.field(name).type)
        if len(arr) == len(ok):
            return arr
        # Scatter the valid rows' values into a full-length column (nulls where a line failed).
        idx = np.cumsum(ok) - 1
        return arr.take(pa.array(idx, pa.int64(), mask=~ok))

    def lists(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
        """A list<uint64> column: valid row k holds the next lengths[k] values; lines with a problem hold []."""
        full = np.zeros(len(ok), dtype=np.int64)
        full[ok] = lengths
        return pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(full)], pa.int32()), pa.array(values, pa.uint64()))

    # Words of prompt + response (words(p + "\n" + r) == words(p) + words(r)): the prompt's n-grams
    # come first; a prompt of fewer than n words has no n-gram set of its own (prompt_grams -1).
    words = dedup.split_words(streams)
    prompt_words = words.counts[0::2]
    texts = pa.array(contents, pa.string())
    turns = np.asarray(ends, dtype=np.int64)[:, None] - [2, 1]  # [rows, 2]: prompt, response
    whitespace_words = word_counts(texts, contents)[turns] if len(turns) else np.zeros((0, 2), np.int64)
    flat, offsets = dedup.gram_hashes_flat(words.hashes, prompt_words + words.counts[1::2], shingle_n)
    in_prompt = np.repeat(np.arange(len(streams)) % 2 == 0, words.counts)
    cols = {
        "reason": pa.array([p and p[0] for p in problems], pa.string()),
        "field": pa.array([p and p[1] for p in problems], pa.string()),
        "detail": pa.array([p and p[2] for p in problems], pa.string()),
        "id": pa.array(ids, pa.string()),
        "messages": pa.ListArray.from_arrays(pa.array(msg_offsets, pa.int32()), pa.StructArray.from_arrays(
            [pa.array(roles, pa.string()), texts], fields=list(MESSAGE))),
        "shingles": lists(flat, np.diff(offsets)),
        "key": column(words.keys.take(pa.array(np.arange(0, len(streams), 2))), "key"),
        "prompt_hashes": lists(words.hashes[in_prompt], prompt_words),
        "response_hashes": lists(words.hashes[~in_prompt], words.counts[1::2]),
        "prompt_grams": column(pa.array(np.where(prompt_words >= shingle_n, prompt_words - shingle_n + 1, -1), pa.int32()),
                               "prompt_grams"),
        "empty": column(empty, "empty"),
        "prompt_words": column(pa.array(whitespace_words[:, 0], pa.int32()), "prompt_words"),
        "response_words": column(pa.array(whitespace_words[:, 1], pa.int32()), "response_words"),
    }
    for names, rows in ((_META, meta), ([f"pii_{k}" for k in PII_KINDS], pii)):
        for name, values in zip(names, zip(*rows) if rows else [[] for _ in names]):
            cols[name] = column(list(values), name)
    return pa.table(cols).select(PREPARED.names).cast(PREPARED)


# Bytes that str.split() splits ASCII text at.
_ASCII_WHITESPACE = np.zeros(256, dtype=bool)
_ASCII_WHITESPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


def word_counts(texts: pa.StringArray, strings: list[str]) -> np.ndarray:
    """len(t.split()) for each of `texts` (the same texts as `strings`): numpy over the UTF-8 buffer for
    ASCII texts (a word starts where a non-whitespace byte follows whitespace or a text's start), the
    Python split for the few texts with other bytes (Unicode has more whitespace than ASCII)."""
    offsets = np.frombuffer(texts.buffers()[1], np.int32)[texts.offset:texts.offset + len(texts) + 1].astype(np.int64)
    data = np.frombuffer(texts.buffers()[2], np.uint8)[offsets[0]:offsets[-1]] if offsets[-1] > offsets[0] else np.zeros(0, np.uint8)
    offsets -= offsets[0]
    space = data <= 32  # then the few control bytes among them looked up (most are " " and "\n")
    odd = np.flatnonzero(space & (data != 32) & (data != 10))
    space[odd] = _ASCII_WHITESPACE[data[odd]]
    starts = ~space
    starts[1:] &= space[:-1]
    first = offsets[:-1][offsets[:-1] < offsets[1:]]  # each non-empty text's first byte starts a word unless it is whitespace
    starts[first] = ~space[first]
    counts = np.diff(np.searchsorted(np.flatnonzero(starts), offsets))
    for i in np.flatnonzero(np.diff(np.searchsorted(np.flatnonzero(data >= 128), offsets))).tolist():
        counts[i] = len(strings[i].split())
    return counts


@dataclass
class Curated:
    kept: Dataset  # the rows kept, with `split` and `pii_replaced` columns (and the PREPARED helpers)
    dropped: list[Dropped]  # every dropped line: load problems in line order, then each filter's drops
    pii: dict[str, int]
    rows_in: int  # non-blank raw lines
    distinct: dict[str, float]  # the report's distinct word n-gram ratios of the kept rows


def prepare(lines: Dataset, policies: Policies, p: CurateParams) -> pa.Table:
    """`_prepare_batch` over every line, on p.num_proc processes for 2,000 lines or more (starting
    workers costs ~0.2 s). Give a file-backed `lines` (Dataset.from_file): an in-memory one is pickled
    to each worker, which on 200k lines cost more than the work itself."""
    if len(lines) == 0:
        return PREPARED.empty_table()
    num_proc = p.num_proc if p.num_proc > 1 and len(lines) >= 2000 else None
    out = lines.with_format("arrow").map(
        _prepare_batch, batched=True, batch_size=1000, num_proc=num_proc, load_from_cache_file=False,
        # A fresh fingerprint: datasets skips hashing the function and its arguments, and a cache file
        # left by an earlier call can never be picked up (with its num_proc layout: DESIGN.md).
        new_fingerprint=uuid.uuid4().hex,
        remove_columns=lines.column_names, fn_kwargs=dict(policies=policies, shingle_n=p.shingle_words),
        desc="parse, normalise, scrub, shingle",
    )
    return out.with_format("arrow")[:]


def curate(lines: Dataset, files: list[str], policies: Policies, eval_ids: list[str], eval_texts: list[str],
           p: CurateParams, seed: int) -> Curated:
    """Parse and check raw lines (columns file, line, raw: see records.read_lines); normalise, scrub
    PII, drop exact and near duplicates and contaminated rows, split train/val."""
    index = dedup.ReferenceIndex([normalise(t) for t in eval_texts], p.shingle_words, p.contamination_ngram,
                                 p.num_perm, p.lsh_bands)
    source = lines.with_format("arrow")[:]  # file, line, raw (memory-mapped)
    table = prepare(lines, policies, p)  # one row per line, same order
    with ThreadPoolExecutor(1) as background:
        # Arrow and numpy work that releases the GIL runs beside the filters below (mostly Python and
        # rensa) instead of after them: every line's prompt and response (the kept ones are filtered
        # out of them later), and the report's word statistics.
        turns = background.submit(lambda: [turn(table.column("messages"), back) for back in (2, 1)])
        words = [background.submit(lambda c: WordHashes(*dedup.flat_lists(table.column(c))), c)
                 for c in ("prompt_hashes", "response_hashes")]
        alive, drops = _filter_rows(table, source, files, index, eval_ids, p)
        kept_rows = np.flatnonzero(alive)
        distinct = background.submit(lambda: diversity_ratios(words[0].result(), words[1].result(), kept_rows))
        dropped = _dropped_records(source, files, drops)
        log_dropped([d for d in dropped if d.filter == "load"])
        kept, pii = _kept_rows(table, alive, turns.result(), p.val_fraction, seed)
        # A fixed fingerprint: datasets would otherwise hash every row to make one (caching is off anyway).
        kept = Dataset(kept, fingerprint="alignflow-curate-kept")
        return Curated(kept, dropped, pii, len(lines), distinct.result())


def _dropped_records(source: pa.Table, files: list[str], drops: list[tuple]) -> list[Dropped]:
    """Quarantine records for (line, reason, filter, detail, id, field) tuples, with the raw text."""
    where = _pick(source.select(["file", "line", "raw"]), [d[0] for d in drops])
    return [Dropped(files[f], n, reason, flt, detail, raw_text(raw), rid, field)
            for f, n, raw, (_, reason, flt, detail, rid, field) in zip(
                where.column("file").to_pylist(), where.column("line").to_pylist(), where.column("raw").to_pylist(), drops)]


def _kept_rows(table: pa.Table, alive: np.ndarray, turns: list[pa.Array], val_fraction: float,
               seed: int) -> tuple[pa.Table, dict[str, int]]:
    """The kept rows with prompt, response (`turns`: every line's), split and pii_replaced; PII
    replacements per kind."""
    mask = pa.array(alive)
    kept = table.select([c for c in table.column_names if c not in _PARENT_ONLY]).filter(mask)
    kept = kept.combine_chunks()  # one chunk per column: later column work is a few calls, not one per batch
    for name, column in zip(("prompt", "response"), turns):
        kept = kept.append_column(name, column.filter(mask))
    splits = stratified_split(kept.column("policy"), kept.column("use_case"), val_fraction, seed)
    pii_counts = np.stack([kept.column(f"pii_{k}").to_numpy().astype(np.int64) for k in PII_KINDS])
    kept = kept.append_column("split", pa.array(splits, pa.string()))
    kept = kept.append_column("pii_replaced", pa.array(pii_counts.sum(axis=0), pa.int32()))
    return kept, {k: int(c.sum()) for k, c in zip(PII_KINDS, pii_counts)}


def _filter_rows(table: pa.Table, source: pa.Table, files: list[str], index: dedup.ReferenceIndex,
                 eval_ids: list[str], p: CurateParams) -> tuple[np.ndarray, list[tuple]]:
    """Which prepared lines survive, and the dropped ones as (line, reason, filter, detail, id, field):
    contract problems and duplicate ids (load) in line order, then each filter's drops in line order."""
    ids = table.column("id").to_pylist()
    loaded = table.column("reason").is_null().to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~loaded)
    problems = _pick(table.select(["reason", "field", "detail"]), bad).to_pylist()
    drops = [(int(i), q["reason"], "load", q["detail"], ids[i], q["field"]) for i, q in zip(bad, problems)]
    # Duplicate ids: every valid line whose id appeared on an earlier valid line.
    valid = np.flatnonzero(loaded)
    first = _first_equal(table.column("id"), valid)
    repeated, original = valid[first != valid], first[first != valid]
    places = _pick(source.select(["file", "line"]), original)
    drops += [(int(i), "duplicate_id", "load", f"id '{ids[i]}' already used at {files[f]}:{n}", ids[i], "id")
              for i, f, n in zip(repeated, places.column("file").to_pylist(), places.column("line").to_pylist())]
    drops.sort(key=lambda d: d[0])
    alive = loaded.copy()
    alive[repeated] = False

    def drop(rows, reason: str, flt: str, details) -> None:
        alive[rows] = False
        drops.extend((int(i), reason, flt, d, ids[i], "messages") for i, d in zip(rows, details))

    empty = np.flatnonzero(alive & pc.fill_null(table.column("empty"), False).to_numpy(zero_copy_only=False))
    drop(empty, "empty_content", "normalise", ["content is empty after normalisation"] * len(empty))
    live = np.flatnonzero(alive)
    first = _first_equal(table.column("key"), live)
    copies = first != live
    drop(live[copies], "exact_duplicate", "exact_dedup", [f"same prompt as '{ids[j]}'" for j in first[copies]])
    flat, offsets = dedup.flat_lists(table.column("shingles"))
    live = np.flatnonzero(alive)
    with ThreadPoolExecutor(1) as beside:
        # Near-duplicate candidates among the rows left so far are found beside the contamination
        # check (rensa and numpy release the GIL); contaminated rows then take no part in resolving
        # them, which gives exactly what a search among the rows left after decontamination gives.
        live_flat, live_offsets = dedup.gather(flat, offsets, live)
        pairs = beside.submit(dedup.candidate_pairs_flat, live_flat, live_offsets, p.num_perm, p.lsh_bands)
        found = contaminated(table, flat, offsets, live, index, p)
        drop([i for i, _ in found], "contaminated", "decontaminate",
             [f"matches held-out '{eval_ids[ref]}' ({method}, jaccard {sim})" for _, (ref, method, sim) in found])
        near = dedup.resolve_pairs(*pairs.result(), len(live), p.near_dup_threshold, absent=~alive[live])
    drop(live[[m.index for m in near]], "near_duplicate", "near_dedup",
         [f"near duplicate of '{ids[int(live[m.other])]}' (jaccard {m.similarity})" for m in near])
    return alive, drops


def _pick(data: pa.Table | pa.ChunkedArray, rows: np.ndarray | list[int]):
    """data[rows] for a chunked (memory-mapped) table or column, rows in any order.

    Arrow's take on chunked data concatenates every chunk first (a copy of the whole column); a
    boolean filter works chunk by chunk, so few rows out of many cost little.
    """
    rows = np.asarray(rows, dtype=np.int64)
    mask = np.zeros(len(data), dtype=bool)
    mask[rows] = True
    picked = data.filter(pa.array(mask))
    if len(rows) > 1 and not (np.diff(rows) > 0).all():  # not ascending: reorder the filtered rows
        picked = picked.take(pa.array(np.searchsorted(np.flatnonzero(mask), rows)))
    return picked


def _first_equal(values: pa.ChunkedArray, rows: np.ndarray) -> np.ndarray:
    """For each of `rows` (ascending), the first of `rows` whose value equals its value (itself if none
    before it): Arrow's hash-based dictionary encoding, then a stable numpy sort."""
    if not len(rows):
        return rows
    codes = pc.dictionary_encode(_pick(values, rows).combine_chunks()).indices.to_numpy(zero_copy_only=False)
    _, first_pos, inverse = np.unique(codes, return_index=True, return_inverse=True)
    return rows[first_pos[inverse]]


def turn(messages: pa.Array | pa.ChunkedArray, back: int) -> pa.Array:
    """Content of each row's message `back` from the end (2: the prompt, 1: the response); null for a
    row with fewer messages (a line that failed to load has none)."""
    arr = messages.combine_chunks() if isinstance(messages, pa.ChunkedArray) else messages
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    short = np.diff(offsets) < back
    contents = pc.struct_field(pc.list_flatten(arr), "content")
    return contents.take(pa.array(np.where(short, 0, offsets[1:] - offsets[0] - back), pa.int64(), mask=short))


def contaminated(table: pa.Table, flat: np.ndarray, offsets: np.ndarray, live: np.ndarray,
                 index: dedup.ReferenceIndex, p: CurateParams) -> list[tuple[int, tuple[int, str, float]]]:
    """(row, (held-out index, method, similarity)) for each live row whose prompt matches a held-out text.

    `index.match` runs only on suspects: prompts sharing a shingle with some held-out text (or with
    too few words for the prefix layout); for any other prompt it would return no match.
    """
    grams = pc.fill_null(table.column("prompt_grams"), -1).to_numpy()[live]
    prompt_flat, prompt_offsets = dedup.take_slices(flat, offsets[live], np.maximum(grams, 0))
    suspects = live[index.suspects(prompt_flat, prompt_offsets, p.contamination_threshold)]
    if not len(suspects):
        return []
    prompts = turn(_pick(table.column("messages"), suspects), 2).to_pylist()
    shingles = dedup.shingle_rows(prompts, p.shingle_words)
    keys = dedup.band_keys(dedup.digests(shingles, p.num_perm), p.lsh_bands)
    found = []
    for i, text, sh, k in zip(suspects.tolist(), prompts, shingles, keys):
        ref, method, sim = index.match(text, sh, k, p.contamination_threshold)
        if ref >= 0:
            found.append((i, (ref, method, sim)))
    return found


def stratified_split(policies: pa.Array | pa.ChunkedArray, use_cases: pa.Array | pa.ChunkedArray,
                     val_fraction: float, seed: int) -> np.ndarray:
    """'train'/'val' per row: within each policy x use case cell (cells in sorted order), a seeded
    shuffle of the cell's rows (ascending) sends round(n * val_fraction) of them to val (at least one
    when the cell has 3 or more rows). Cells come from Arrow dictionary codes, not a Python loop per row."""
    codes, names = [], []
    for col in (policies, use_cases):
        enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
        codes.append(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))
        names.append(enc.dictionary.to_pylist())
    width = max(len(names[1]), 1)
    cell = codes[0] * width + codes[1]
    order = np.argsort(cell, kind="stable")  # rows grouped by cell, ascending within each
    present, starts = np.unique(cell[order], return_index=True)
    bounds = dict(zip(present.tolist(), zip(starts.tolist(), np.r_[starts[1:], len(order)].tolist())))
    out = np.full(len(cell), "train", dtype=object)
    rng = np.random.default_rng(seed)
    for key in sorted(bounds, key=lambda c: (names[0][c // width], names[1][c % width])):
        a, b = bounds[key]
        members = order[a:b].copy()
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        if val_fraction > 0 and n_val == 0 and len(members) >= 3:
            n_val = 1
        out[members[:n_val]] = "val"
    return out
