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


class WordNgrams:
    """Texts given as their words joined by single spaces (curation's `key` columns), numbered so that
    `text.distinct_ratio` of any subset of them is a few numpy calls.

    Exact, without a Python object per word: Arrow splits the texts and numbers the distinct words;
    each n-gram becomes one integer (base = vocabulary size) and numpy counts the distinct integers.
    """

    def __init__(self, keys: pa.Array | pa.ChunkedArray):
        keys = pc.fill_null(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys, "")
        split = pc.split_pattern(keys, " ")  # "" (no words) splits into one empty string: not a word
        self.sizes = np.where(pc.binary_length(keys).to_numpy(zero_copy_only=False) > 0,
                              pc.list_value_length(split).to_numpy(zero_copy_only=False), 0).astype(np.int64)
        tokens = pc.list_flatten(split)
        if len(tokens):
            tokens = tokens.filter(pc.binary_length(tokens).to_numpy(zero_copy_only=False) > 0)
        self.ids = pc.dictionary_encode(tokens).indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.vocab = int(self.ids.max()) + 1 if len(self.ids) else 1

    def distinct_ratios(self, rows: np.ndarray, ns: Sequence[int]) -> dict[int, float]:
        """Distinct n-grams / all n-grams over the texts `rows`, for each n (as text.distinct_ratio)."""
        ids, offsets = _take_rows(self.ids, self.offsets, rows)
        ends = np.repeat(offsets[1:], np.diff(offsets))  # for each token, where its text ends
        out = {}
        for n in ns:
            starts = np.flatnonzero(np.arange(len(ids)) + n <= ends)  # n-grams inside one text
            if self.vocab ** n < 2**62:
                code = np.zeros(len(starts), dtype=np.int64)
                for k in range(n):
                    code = code * self.vocab + ids[starts + k]
                code.sort()  # distinct values of a sorted array: ~10x faster than np.unique's hash table here
                distinct = int(len(code) > 0) + int(np.count_nonzero(code[1:] != code[:-1]))
            else:  # too many words to pack an n-gram in 64 bits: compare n-grams as rows
                distinct = len(np.unique(np.stack([ids[starts + k] for k in range(n)], axis=1), axis=0))
            out[n] = round(distinct / len(starts), 4) if len(starts) else 0.0
        return out


def _take_rows(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = (offsets[1:] - offsets[:-1])[rows]
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    shift = np.repeat(offsets[:-1][rows] - new_offsets[:-1], lengths)
    return values[shift + np.arange(new_offsets[-1])], new_offsets


def distinct_ratios(keys: pa.Array | pa.ChunkedArray, ns: Sequence[int]) -> dict[int, float]:
    """`text.distinct_ratio` for each n, from texts given as their words joined by single spaces."""
    words = WordNgrams(keys)
    return words.distinct_ratios(np.arange(len(words.sizes)), ns)


def diversity_ratios(prompt_words: WordNgrams, response_words: WordNgrams, rows: np.ndarray) -> dict[str, float]:
    """The report's distinct-n-gram figures for the rows `rows` (the kept rows)."""
    prompt = prompt_words.distinct_ratios(rows, (1, 2, 3))
    return {**{f"prompt_distinct_{n}": r for n, r in prompt.items()},
            "response_distinct_2": response_words.distinct_ratios(rows, (2,))[2]}


def build_report(rows_in: int, kept: pa.Table, dropped: list[Dropped], pii: dict[str, int], policies: Policies,
                 distinct: dict[str, float] | None = None) -> dict:
    """The JSON report (DVC metrics): deterministic for the same inputs and params.

    `kept` holds the kept rows with the curation columns (see alignflow.data.curation.PREPARED):
    key/response_key (words of prompt/response) and prompt_words/response_words (word counts).
    `distinct` (see diversity_ratios) is computed from them when not given.
    """
    col = {c: kept.column(c).to_pylist() for c in ("policy", "use_case", "adversarial", "split", "formulation")}
    table = coverage(policies, col["policy"], col["use_case"], col["adversarial"])
    adv_cells = [c["rows"] for c in table if c["policy"] != BENIGN]
    by_reason = Counter(d.reason for d in dropped)
    if distinct is None:
        everything = np.arange(kept.num_rows)
        distinct = diversity_ratios(WordNgrams(kept.column("key")), WordNgrams(kept.column("response_key")), everything)
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
            **distinct,
            "prompt_words": _lengths(kept.column("prompt_words").to_numpy(zero_copy_only=False)),
            "response_words": _lengths(kept.column("response_words").to_numpy(zero_copy_only=False)),
            "formulation_mix": dict(sorted(Counter(f or "unspecified" for f in col["formulation"]).items())),
            "use_case_mix": dict(sorted(Counter(col["use_case"]).items())),
        },
    }
