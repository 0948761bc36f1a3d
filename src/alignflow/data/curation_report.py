"""The curation report: conservation of rows, drops by reason, policy x use case coverage, diversity."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from alignflow.data.policies import BENIGN, Policies
from alignflow.data.records import Dropped


def coverage(policies: Policies, policy: Sequence[str], use_case: Sequence[str], adversarial: Sequence[bool]) -> list[dict]:
    """Rows per cell: every policy x use case (adversarial rows), then benign rows per use case."""
    adv = Counter((p, u) for p, u, a in zip(policy, use_case, adversarial) if a)
    benign = Counter(u for p, u, a in zip(policy, use_case, adversarial) if not a)
    table = [{"cell": f"{p} / {u}", "policy": p, "use_case": u, "rows": adv[(p, u)]} for p, u in policies.cells]
    table += [{"cell": f"{BENIGN} / {u}", "policy": BENIGN, "use_case": u, "rows": benign[u]} for u in policies.use_cases]
    return table


def _lengths(counts: np.ndarray) -> dict[str, float]:
    """Quantiles of words per text (counts of whitespace-split words)."""
    n = counts.astype(np.int64) if len(counts) else np.zeros(1, dtype=np.int64)
    q = np.percentile(n, [0, 25, 50, 75, 100])
    return {"min": int(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "max": int(q[4]), "mean": round(float(n.mean()), 2)}


def distinct_ratios(keys: pa.Array | pa.ChunkedArray, ns: Sequence[int]) -> dict[int, float]:
    """`text.distinct_ratio` for each n, from texts given as their words joined by single spaces.

    Exact, without a Python object per word: Arrow splits the keys and numbers the distinct words,
    each n-gram becomes one integer (base = vocabulary size) and numpy counts the distinct integers.
    """
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    split = pc.split_pattern(keys, " ")  # "" (no words) splits into one empty string: not a word
    sizes = np.where(pc.binary_length(keys).to_numpy(zero_copy_only=False) > 0,
                     pc.list_value_length(split).to_numpy(zero_copy_only=False), 0).astype(np.int64)
    tokens = pc.list_flatten(split)
    tokens = tokens.filter(pc.binary_length(tokens).to_numpy(zero_copy_only=False) > 0) if len(tokens) else tokens
    ids = pc.dictionary_encode(tokens).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    vocab = int(ids.max()) + 1 if len(ids) else 1
    ends = np.repeat(np.cumsum(sizes), sizes)  # for each token, where its text ends
    out = {}
    for n in ns:
        starts = np.flatnonzero(np.arange(len(ids)) + n <= ends)  # n-grams that stay inside one text
        if vocab ** n < 2**62:
            code = np.zeros(len(starts), dtype=np.int64)
            for k in range(n):
                code = code * vocab + ids[starts + k]
            code.sort()  # distinct values of a sorted array: ~10x faster than np.unique's hash table here
            distinct = int(len(code) > 0) + int(np.count_nonzero(code[1:] != code[:-1]))
        else:  # too many words to pack an n-gram in 64 bits: compare n-grams as rows
            distinct = len(np.unique(np.stack([ids[starts + k] for k in range(n)], axis=1), axis=0))
        out[n] = round(distinct / len(starts), 4) if len(starts) else 0.0
    return out


def build_report(rows_in: int, kept: pa.Table, dropped: list[Dropped], pii: dict[str, int], policies: Policies) -> dict:
    """The JSON report (DVC metrics): deterministic for the same inputs and params.

    `kept` holds the kept rows with the curation columns (see alignflow.data.curation.PREPARED):
    key/response_key (words of prompt/response) and prompt_words/response_words (word counts).
    """
    col = {c: kept.column(c).to_pylist() for c in ("policy", "use_case", "adversarial", "split", "formulation")}
    table = coverage(policies, col["policy"], col["use_case"], col["adversarial"])
    adv_cells = [c["rows"] for c in table if c["policy"] != BENIGN]
    by_reason = Counter(d.reason for d in dropped)
    prompt_distinct = distinct_ratios(kept.column("key"), (1, 2, 3))
    n_adversarial = int(sum(col["adversarial"]))
    return {
        "rows_in": rows_in,
        "rows_out": kept.num_rows,
        "rows_quarantined": len(dropped),
        "conserved": rows_in == kept.num_rows + len(dropped),
        "quarantined_share": round(len(dropped) / rows_in, 4) if rows_in else 0.0,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "quarantined_by_file": dict(sorted(Counter(d.file for d in dropped).items())),
        "splits": dict(sorted(Counter(col["split"]).items())),
        "adversarial_rows": n_adversarial,
        "benign_rows": int(kept.num_rows - n_adversarial),
        "pii_replaced": dict(sorted(pii.items())),
        "coverage": {
            "cells": len(adv_cells),
            "min_rows_per_cell": int(min(adv_cells)) if adv_cells else 0,
            "empty_cells": [c["cell"] for c in table if c["policy"] != BENIGN and c["rows"] == 0],
            "table": {c["cell"]: c["rows"] for c in table},
        },
        "diversity": {
            "prompt_distinct_1": prompt_distinct[1],
            "prompt_distinct_2": prompt_distinct[2],
            "prompt_distinct_3": prompt_distinct[3],
            "response_distinct_2": distinct_ratios(kept.column("response_key"), (2,))[2],
            "prompt_words": _lengths(kept.column("prompt_words").to_numpy(zero_copy_only=False)),
            "response_words": _lengths(kept.column("response_words").to_numpy(zero_copy_only=False)),
            "formulation_mix": dict(sorted(Counter(f or "unspecified" for f in col["formulation"]).items())),
            "use_case_mix": dict(sorted(Counter(col["use_case"]).items())),
        },
    }
