"""The curation steps on a Hugging Face `datasets.Dataset` of raw lines: parse and check, normalise,
scrub PII, deduplicate, decontaminate, split. Pure: lines in, rows (and dropped rows with reasons) out.

Where the time goes (benchmarks/curate): everything done once per row in Python (JSON parsing, the
contract check, normalisation, PII scrubbing, word n-gram hashing) runs in `_prepare_batch`, on
`num_proc` processes; the parent then works on whole columns (Arrow, numpy, rensa) and touches Python
objects only for the rows it drops or must look at closely (duplicate candidates, contamination
suspects).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from alignflow.config import CurateParams
from alignflow.data import dedup
from alignflow.data.policies import Policies
from alignflow.data.records import Dropped, log_dropped, parse_line, raw_text
from alignflow.data.text import PLACEHOLDERS, normalise, scrub_pii_counts, word_bytes

PII_KINDS = tuple(PLACEHOLDERS)
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
# One row per raw line. A line that breaks the contract has `reason` (and field, detail, maybe id)
# set and nulls elsewhere. The prompt and response are the last two messages (`turn`). `shingles` are
# the word n-gram hashes of prompt + "\n" + response in order (repeats kept); the first `prompt_grams`
# of them are the prompt's own n-grams (-1: the prompt has fewer words than n, so its shingle set is
# not a prefix). `key` and `response_key` are the case-folded words joined by spaces;
# `prompt_words`/`response_words` count whitespace-split words.
PREPARED = pa.schema([
    ("reason", pa.string()), ("field", pa.string()), ("detail", pa.string()), ("id", pa.string()),
    ("messages", pa.list_(MESSAGE)),
    ("policy", pa.string()), ("use_case", pa.string()), ("adversarial", pa.bool_()),
    ("formulation", pa.string()), ("source", pa.string()),
    ("key", pa.string()), ("response_key", pa.string()), ("empty", pa.bool_()),
    *[(f"pii_{k}", pa.int32()) for k in PII_KINDS],
    ("shingles", pa.list_(pa.uint64())), ("prompt_grams", pa.int32()),
    ("prompt_words", pa.int32()), ("response_words", pa.int32()),
])
_META = ("policy", "use_case", "adversarial", "formulation", "source")
_PARENT_ONLY = ("reason", "field", "detail", "empty", "shingles", "prompt_grams")  # not carried to `kept`


def _prepare_batch(batch: pa.Table, policies: Policies, shingle_n: int) -> pa.Table:
    """Per raw line: parse and check; then normalised + scrubbed messages, keys, PII counts, shingles.

    ~25 us a row on one core; hot, so appends are bound to locals and columns are built at the end.
    """
    n_kinds, pii_index = len(PII_KINDS), {k: n for n, k in enumerate(PII_KINDS)}
    problems, ids, meta, texts, numbers, pii = [], [], [], [], [], []
    roles, contents, msg_offsets, shingles, sh_offsets = [], [], [0], [], [0]
    add_role, add_content, add_msg_end, add_shingles, add_sh_end = (
        roles.append, contents.append, msg_offsets.append, shingles.extend, sh_offsets.append)
    for raw in batch.column("raw").to_pylist():
        obj, rid, problem = parse_line(raw, policies)
        ids.append(rid)
        problems.append(problem)
        if problem:
            add_msg_end(len(roles)), add_sh_end(len(shingles))
            continue
        counts = [0] * n_kinds
        start = len(contents)
        for m in obj["messages"]:
            text, found = scrub_pii_counts(normalise(m["content"]))
            for kind, c in found.items():
                counts[pii_index[kind]] += c
            add_role(m["role"]), add_content(text)
        row_texts = contents[start:]
        prompt, response = row_texts[-2], row_texts[-1]  # check_row: the last two are user, assistant
        pw, rw = word_bytes(prompt), word_bytes(response)
        add_shingles(dedup.gram_hashes(pw + rw, shingle_n))  # words(p + "\n" + r) == words(p) + words(r)
        add_msg_end(len(roles)), add_sh_end(len(shingles))
        meta.append((obj["policy"], obj["use_case"], obj["adversarial"], obj.get("formulation"), obj["source"]))
        texts.append((b" ".join(pw).decode(), b" ".join(rw).decode()))
        numbers.append((not all(row_texts), len(pw) - shingle_n + 1 if len(pw) >= shingle_n else -1,
                        len(prompt.split()), len(response.split())))
        pii.append(counts)

    # Columns: valid rows fill the positions without a problem, the others stay null.
    ok = np.array([p is None for p in problems], dtype=bool)

    def column(values: list, name: str) -> pa.Array:
        arr = pa.array(values, PREPARED.field(name).type)
        if len(values) == len(ok):
            return arr
        # Scatter the valid rows' values into a full-length column (nulls where a line failed).
        idx = np.cumsum(ok) - 1
        return arr.take(pa.array(idx, pa.int64(), mask=~ok))

    cols = {
        "reason": pa.array([p and p[0] for p in problems], pa.string()),
        "field": pa.array([p and p[1] for p in problems], pa.string()),
        "detail": pa.array([p and p[2] for p in problems], pa.string()),
        "id": pa.array(ids, pa.string()),
        "messages": pa.ListArray.from_arrays(pa.array(msg_offsets, pa.int32()), pa.StructArray.from_arrays(
            [pa.array(roles, pa.string()), pa.array(contents, pa.string())], fields=list(MESSAGE))),
        "shingles": pa.ListArray.from_arrays(pa.array(sh_offsets, pa.int32()), pa.array(shingles, pa.uint64())),
    }
    for names, rows in ((_META, meta), (("key", "response_key"), texts),
                        (("empty", "prompt_grams", "prompt_words", "response_words"), numbers),
                        ([f"pii_{k}" for k in PII_KINDS], pii)):
        for name, values in zip(names, zip(*rows) if rows else [[] for _ in names]):
            cols[name] = column(list(values), name)
    return pa.table(cols).select(PREPARED.names).cast(PREPARED)


@dataclass
class Curated:
    kept: Dataset  # the rows kept, with `split` and `pii_replaced` columns (and the PREPARED helpers)
    dropped: list[Dropped]  # every dropped line: load problems in line order, then each filter's drops
    pii: dict[str, int]
    rows_in: int  # non-blank raw lines


def prepare(lines: Dataset, policies: Policies, p: CurateParams) -> pa.Table:
    """`_prepare_batch` over every line, on p.num_proc processes for 2,000 lines or more (starting
    workers costs ~0.3 s). Give a file-backed `lines` (Dataset.from_file): an in-memory one is pickled
    to each worker, which on 200k lines cost more than the work itself."""
    if len(lines) == 0:
        return PREPARED.empty_table()
    num_proc = p.num_proc if p.num_proc > 1 and len(lines) >= 2000 else None
    out = lines.with_format("arrow").map(
        _prepare_batch, batched=True, batch_size=1000, num_proc=num_proc, load_from_cache_file=False,
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
    file_of, line_of = source.column("file").to_pylist(), source.column("line").to_pylist()
    at: list[int] = []  # dropped lines, with (reason, filter, detail, id, field) in `what`
    what: list[tuple] = []

    # Load: contract problems, then duplicate ids (the first valid occurrence of an id wins).
    reasons, ids = table.column("reason").to_pylist(), table.column("id").to_pylist()
    alive = np.array([r is None for r in reasons], dtype=bool)
    fields, details = table.column("field").to_pylist(), table.column("detail").to_pylist()
    seen: dict[str, int] = {}
    for i, (reason, rid) in enumerate(zip(reasons, ids)):
        if reason is not None:
            at.append(i), what.append((reason, "load", details[i], rid, fields[i]))
        elif rid in seen:
            j = seen[rid]
            alive[i] = False
            at.append(i), what.append(("duplicate_id", "load", f"id '{rid}' already used at {files[file_of[j]]}:{line_of[j]}",
                                       rid, "id"))
        else:
            seen[rid] = i
    n_load = len(at)

    def drop(i: int, reason: str, flt: str, detail: str) -> None:
        alive[i] = False
        at.append(i), what.append((reason, flt, detail, ids[i], "messages"))

    for i in np.flatnonzero(alive & pc.fill_null(table.column("empty"), False).to_numpy(zero_copy_only=False)):
        drop(int(i), "empty_content", "normalise", "content is empty after normalisation")
    first: dict[str, int] = {}
    for i, k in enumerate(table.column("key").to_pylist()):
        if not alive[i]:
            continue
        if k in first:
            drop(i, "exact_duplicate", "exact_dedup", f"same prompt as '{ids[first[k]]}'")
        else:
            first[k] = i
    flat, offsets = _flat(table.column("shingles"))
    for i, (ref, method, sim) in contaminated(table, flat, offsets, np.flatnonzero(alive), index, p):
        drop(i, "contaminated", "decontaminate", f"matches held-out '{eval_ids[ref]}' ({method}, jaccard {sim})")
    live = np.flatnonzero(alive)
    live_flat, live_offsets = dedup.gather(flat, offsets, live)
    for m in dedup.near_duplicates_flat(live_flat, live_offsets, p.num_perm, p.lsh_bands, p.near_dup_threshold):
        drop(int(live[m.index]), "near_duplicate", "near_dedup",
             f"near duplicate of '{ids[int(live[m.other])]}' (jaccard {m.similarity})")

    raws = source.column("raw").take(pa.array(at, pa.int64())).to_pylist() if at else []
    dropped = [Dropped(files[file_of[i]], line_of[i], reason, flt, detail, raw_text(raw), rid, field)
               for i, raw, (reason, flt, detail, rid, field) in zip(at, raws, what)]
    log_dropped(dropped[:n_load])
    kept = table.select([c for c in table.column_names if c not in _PARENT_ONLY]).filter(pa.array(alive))
    kept = kept.append_column("prompt", turn(kept.column("messages"), 2))
    kept = kept.append_column("response", turn(kept.column("messages"), 1))
    splits = stratified_split(kept.column("policy").to_pylist(), kept.column("use_case").to_pylist(),
                              p.val_fraction, seed)
    pii_counts = np.stack([kept.column(f"pii_{k}").to_numpy().astype(np.int64) for k in PII_KINDS])
    pii = {k: int(c.sum()) for k, c in zip(PII_KINDS, pii_counts)}
    kept = kept.append_column("split", pa.array(splits, pa.string()))
    kept = kept.append_column("pii_replaced", pa.array(pii_counts.sum(axis=0), pa.int32()))
    # A fixed fingerprint: datasets would otherwise hash every row to make one (caching is off anyway).
    return Curated(Dataset(kept, fingerprint="alignflow-curate-kept"), dropped, pii, len(lines))


def turn(messages: pa.Array | pa.ChunkedArray, back: int) -> pa.ChunkedArray:
    """Content of each row's message `back` from the end (2: the prompt, 1: the response)."""
    chunks = messages.chunks if isinstance(messages, pa.ChunkedArray) else [messages]
    out = []
    for arr in chunks:
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        contents = pc.struct_field(pc.list_flatten(arr), "content")
        out.append(contents.take(pa.array(offsets[1:] - offsets[0] - back)))
    return pa.chunked_array(out, pa.string())


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list<uint64> column as numpy arrays (row i: values[offsets[i]:offsets[i+1]])."""
    arr = column.combine_chunks()
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    return np.asarray(arr.values, dtype=np.uint64), offsets


def contaminated(rows: pa.Table, flat: np.ndarray, offsets: np.ndarray, live: np.ndarray,
                 index: dedup.ReferenceIndex, p: CurateParams) -> list[tuple[int, tuple[int, str, float]]]:
    """(row, (held-out index, method, similarity)) for each live row whose prompt matches a held-out text.

    `index.match` runs only on suspects: prompts sharing a shingle with some held-out text (or with
    too few words for the prefix layout); for any other prompt it would return no match.
    """
    grams = pc.fill_null(rows.column("prompt_grams"), -1).to_numpy()[live]
    prompt_flat, prompt_offsets = dedup.take_slices(flat, offsets[live], np.maximum(grams, 0))
    suspects = live[index.suspects(prompt_flat, prompt_offsets, p.contamination_threshold)]
    if not len(suspects):
        return []
    prompts = turn(rows.column("messages").take(pa.array(suspects, pa.int64())), 2).to_pylist()
    shingles = [dedup.shingle_hashes(t, p.shingle_words) for t in prompts]
    keys = dedup.band_keys(dedup.digests(shingles, p.num_perm), p.lsh_bands)
    found = []
    for i, text, sh, k in zip(suspects.tolist(), prompts, shingles, keys):
        ref, method, sim = index.match(text, sh, k, p.contamination_threshold)
        if ref >= 0:
            found.append((i, (ref, method, sim)))
    return found


def stratified_split(policies: list[str], use_cases: list[str], val_fraction: float, seed: int) -> list[str]:
    """'train'/'val' per row: within each policy x use case cell, a seeded shuffle sends
    round(n * val_fraction) rows to val (at least one when the cell has 3 or more rows)."""
    cells: dict[tuple[str, str], list[int]] = {}
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
