"""The curation report: conservation of rows, drops by reason, policy x use case coverage, diversity."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from alignflow.data import dedup
from alignflow.data.policies import BENIGN, Policies
from alignflow.data.records import Dropped
from alignflow.data.text import word_stream


def value_counts(table: pa.Table, columns: Sequence[str]) -> Counter:
    """Rows per distinct value of `columns` (a tuple of values, None for null), by Arrow's group-by."""
    grouped = table.select(list(columns)).group_by(list(columns)).aggregate([([], "count_all")])
    keys = zip(*(grouped.column(c).to_pylist() for c in columns))
    return Counter(dict(zip(keys, grouped.column("count_all").to_pylist())))


def coverage(policies: Policies, rows: pa.Table) -> list[dict]:
    """Rows per cell: every policy x use case (adversarial rows), then benign rows per use case.
    `rows` has the columns policy, use_case and adversarial."""
    adv, benign = Counter(), Counter()
    for (p, u, a), n in value_counts(rows, ("policy", "use_case", "adversarial")).items():
        if a:
            adv[(p, u)] += n
        else:
            benign[u] += n
    table = [{"cell": f"{p} / {u}", "policy": p, "use_case": u, "rows": adv[(p, u)]} for p, u in policies.cells]
    table += [{"cell": f"{BENIGN} / {u}", "policy": BENIGN, "use_case": u, "rows": benign[u]} for u in policies.use_cases]
    return table


def _lengths(counts: np.ndarray) -> dict[str, float]:
    """Quantiles of words per text (counts of whitespace-split words)."""
    n = counts.astype(np.int64) if len(counts) else np.zeros(1, dtype=np.int64)
    q = np.percentile(n, [0, 25, 50, 75, 100])
    return {"min": int(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "max": int(q[4]), "mean": round(float(n.mean()), 2)}


class WordHashes:
    """Texts given as their words' 64-bit hashes in a flat layout (values, offsets: dedup.split_words,
    which the curate workers run anyway), so that `text.distinct_ratio` of any subset of them is a few
    numpy calls: each n-gram is coded from its words' hashes and the sorted codes are counted.
    Exact unless two distinct words or n-grams share a 64-bit hash (for the ~10 million n-grams of
    200k rows, a chance of about 3 in a million).
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    @classmethod
    def of_texts(cls, texts: Sequence[str]) -> WordHashes:
        w = dedup.split_words([word_stream(t) for t in texts])
        return cls(w.hashes, np.concatenate([[0], np.cumsum(w.counts)]).astype(np.int64))

    def distinct_ratios(self, rows: np.ndarray, ns: Sequence[int]) -> dict[int, float]:
        """Distinct n-grams / all n-grams over the texts `rows`, for each n (as text.distinct_ratio).

        The n-gram starting at word i is coded as sum(hash[i + k] * M**(n - 1 - k)) mod 2**64, built
        from the (n-1)-gram codes in one pass; n-grams that run past their text's end are left out.
        """
        values, offsets = dedup.gather(self.values, self.offsets, np.asarray(rows, dtype=np.int64))
        room = np.repeat(offsets[1:], np.diff(offsets)) - np.arange(len(values))  # words left in the text
        out, code = {}, values
        for n in range(1, max(ns, default=0) + 1):
            if n > 1:
                code = code[:-1] * dedup.GRAM_MULT + values[n - 1:]  # wraps around mod 2**64
            if n in ns:
                grams = np.sort(code[room[:len(code)] >= n])  # numpy's vectorised sort
                distinct = int(len(grams) > 0) + int(np.count_nonzero(grams[1:] != grams[:-1]))
                out[n] = round(distinct / len(grams), 4) if len(grams) else 0.0
        return out


def diversity_ratios(prompt_words: WordHashes, response_words: WordHashes, rows: np.ndarray) -> dict[str, float]:
    """The report's distinct-n-gram figures for the rows `rows` (the kept rows)."""
    prompt = prompt_words.distinct_ratios(rows, (1, 2, 3))
    return {**{f"prompt_distinct_{n}": r for n, r in prompt.items()},
            "response_distinct_2": response_words.distinct_ratios(rows, (2,))[2]}


def build_report(rows_in: int, kept: pa.Table, dropped: list[Dropped], pii: dict[str, int], cells: list[dict],
                 distinct: dict[str, float]) -> dict:
    """The JSON report (DVC metrics): deterministic for the same inputs and params.

    `kept` holds the kept rows with the curation columns (see alignflow.data.curation.PREPARED):
    prompt_words/response_words (word counts); `cells` is their `coverage` and `distinct` their
    diversity_ratios.
    """
    adv_cells = [c["rows"] for c in cells if c["policy"] != BENIGN]
    by_reason = Counter(d.reason for d in dropped)
    n_adversarial = int(pc.sum(kept.column("adversarial")).as_py() or 0)

    def mix(column: str, null: str | None = None) -> dict:
        return dict(sorted((k if k is not None else null, n) for (k,), n in value_counts(kept, (column,)).items()))

    return {
        "rows_in": rows_in,
        "rows_out": kept.num_rows,
        "rows_quarantined": len(dropped),
        "conserved": rows_in == kept.num_rows + len(dropped),
        "quarantined_share": round(len(dropped) / rows_in, 4) if rows_in else 0.0,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "quarantined_by_file": dict(sorted(Counter(d.file for d in dropped).items())),
        "splits": mix("split"),
        "adversarial_rows": n_adversarial,
        "benign_rows": int(kept.num_rows - n_adversarial),
        "pii_replaced": dict(sorted(pii.items())),
        "coverage": {
            "cells": len(adv_cells),
            "min_rows_per_cell": int(min(adv_cells)) if adv_cells else 0,
            "empty_cells": [c["cell"] for c in cells if c["policy"] != BENIGN and c["rows"] == 0],
            "table": {c["cell"]: c["rows"] for c in cells},
        },
        "diversity": {
            **distinct,
            "prompt_words": _lengths(kept.column("prompt_words").to_numpy(zero_copy_only=False)),
            "response_words": _lengths(kept.column("response_words").to_numpy(zero_copy_only=False)),
            "formulation_mix": mix("formulation", null="unspecified"),
            "use_case_mix": mix("use_case"),
        },
    }
