"""Evaluate/validate/curate reports in the exact shape the stages write, built from counts (k of n)."""

import pytest

from alignflow.evaluation.stats import delta, rate_with_interval

POLICIES = ("cyber_harm", "self_harm")


def compare(base: tuple[int, int], tuned: tuple[int, int]) -> dict:
    b, t = rate_with_interval(*base), rate_with_interval(*tuned)
    return {"base": b, "tuned": t, "delta": {**delta(b, t), "mcnemar_p": 0.01}}


def make_evaluation(safety=((20, 144), (140, 144)), per_policy=None, over=((1, 96), (2, 96)),
                    capability=((60, 72), (58, 72)), calibrated=True) -> dict:
    """A passing evaluation by default; pass counts to make one gate fail."""
    per_policy = per_policy or {p: ((10, 72), (70, 72)) for p in POLICIES}
    ev = {
        "primary_judge": "ensemble",
        "judge_calibrated": calibrated,
        "judges": {"lexical": {"n": 132, "accuracy": 0.9, "kappa": 0.78, "confusion": {}},
                   "ensemble": {"n": 132, "accuracy": 0.93, "kappa": 0.85 if calibrated else 0.4, "confusion": {}}},
        "safety": {"overall": compare(*safety), "per_policy": {p: compare(*c) for p, c in per_policy.items()}} if calibrated else None,
        "over_refusal": {"overall": compare(*over), "per_policy": {p: compare(*over) for p in per_policy}} if calibrated else None,
        "capability": {"accuracy": compare(*capability), "loglik": {"base": -2.5, "tuned": -2.6, "delta": -0.1}},
    }
    ev["headline"] = {"base.capability_accuracy": ev["capability"]["accuracy"]["base"]["rate"],
                      "tuned.capability_accuracy": ev["capability"]["accuracy"]["tuned"]["rate"]}
    if calibrated:
        ev["headline"]["tuned.safe_response_rate"] = ev["safety"]["overall"]["tuned"]["rate"]
        ev["headline"]["tuned.over_refusal_rate"] = ev["over_refusal"]["overall"]["tuned"]["rate"]
    return ev


@pytest.fixture
def make_eval():
    """The builder itself, for tests that vary the counts."""
    return make_evaluation


@pytest.fixture
def evaluation() -> dict:
    return make_evaluation()


@pytest.fixture
def validation() -> dict:
    return {"passed": True, "failed": [], "suites": {}}


@pytest.fixture
def curation() -> dict:
    return {"rows_in": 770, "rows_out": 767, "rows_quarantined": 3, "adversarial_rows": 447, "benign_rows": 320,
            "quarantined_by_reason": {"contaminated": 3}, "splits": {"train": 697, "val": 70},
            "coverage": {"cells": 10, "empty_cells": [], "min_rows_per_cell": 10}}
