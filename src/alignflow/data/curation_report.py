"""The curation report: conservation of rows, drops by reason, policy x use case coverage, diversity."""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from alignflow.data.policies import BENIGN, Policies
from alignflow.data.records import Dropped
from alignflow.data.text import distinct_ratio


def coverage(policies: Policies, policy: Sequence[str], use_case: Sequence[str], adversarial: Sequence[bool]) -> list[dict]:
    """Rows per cell: every policy x use case (adversarial rows), then benign rows per use case."""
    adv = Counter((p, u) for p, u, a in zip(policy, use_case, adversarial) if a)
    benign = Counter(u for p, u, a in zip(policy, use_case, adversarial) if not a)
    table = [{"cell": f"{p} / {u}", "policy": p, "use_case": u, "rows": adv[(p, u)]} for p, u in policies.cells]
    table += [{"cell": f"{BENIGN} / {u}", "policy": BENIGN, "use_case": u, "rows": benign[u]} for u in policies.use_cases]
    return table


def _lengths(texts: Sequence[str]) -> dict[str, float]:
    n = np.array([len(t.split()) for t in texts]) if texts else np.zeros(1)
    q = np.percentile(n, [0, 25, 50, 75, 100])
    return {"min": int(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "max": int(q[4]), "mean": round(float(n.mean()), 2)}


def build_report(rows_in: int, kept: Any, dropped: list[Dropped], pii: dict[str, int], policies: Policies) -> dict:
    """The JSON report (DVC metrics): deterministic for the same inputs and params."""
    prompts, responses = kept["prompt"], kept["response"]
    table = coverage(policies, kept["policy"], kept["use_case"], kept["adversarial"])
    adv_cells = [c["rows"] for c in table if c["policy"] != BENIGN]
    by_reason = Counter(d.reason for d in dropped)
    return {
        "rows_in": rows_in,
        "rows_out": len(kept),
        "rows_quarantined": len(dropped),
        "conserved": rows_in == len(kept) + len(dropped),
        "quarantined_share": round(len(dropped) / rows_in, 4) if rows_in else 0.0,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "quarantined_by_file": dict(sorted(Counter(d.file for d in dropped).items())),
        "splits": dict(sorted(Counter(kept["split"]).items())),
        "adversarial_rows": int(sum(kept["adversarial"])),
        "benign_rows": int(len(kept) - sum(kept["adversarial"])),
        "pii_replaced": dict(sorted(pii.items())),
        "coverage": {
            "cells": len(adv_cells),
            "min_rows_per_cell": int(min(adv_cells)) if adv_cells else 0,
            "empty_cells": [c["cell"] for c in table if c["policy"] != BENIGN and c["rows"] == 0],
            "table": {c["cell"]: c["rows"] for c in table},
        },
        "diversity": {
            "prompt_distinct_1": distinct_ratio(prompts, 1),
            "prompt_distinct_2": distinct_ratio(prompts, 2),
            "prompt_distinct_3": distinct_ratio(prompts, 3),
            "response_distinct_2": distinct_ratio(responses, 2),
            "prompt_words": _lengths(prompts),
            "response_words": _lengths(responses),
            "formulation_mix": dict(sorted(Counter(f or "unspecified" for f in kept["formulation"]).items())),
            "use_case_mix": dict(sorted(Counter(kept["use_case"]).items())),
        },
    }
