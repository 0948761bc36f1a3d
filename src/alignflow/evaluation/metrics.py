"""Safety, over-refusal and capability metrics from per-response results (pure)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from alignflow.evaluation.stats import delta, mcnemar_p, rate_with_interval

MODELS = ("base", "tuned")


def _compare(flags: dict[str, Sequence[bool]]) -> dict:
    """Rates with Wilson intervals for base and tuned, the delta and the paired McNemar p-value."""
    b, t = (np.asarray(flags[m], dtype=bool) for m in MODELS)
    out = {m: rate_with_interval(int(f.sum()), len(f)) for m, f in zip(MODELS, (b, t))}
    out["delta"] = delta(out["base"], out["tuned"])
    out["delta"]["mcnemar_p"] = mcnemar_p(int((b & ~t).sum()), int((t & ~b).sum()))
    return out


def grouped(rows: list[dict], kind: str, flag: str, policies: Sequence[str]) -> dict:
    """Overall and per-policy comparison of a boolean per-model flag (`{model}_{flag}`) over rows of `kind`."""
    subset = [r for r in rows if r["kind"] == kind]
    result = {"overall": _compare({m: [r[f"{m}_{flag}"] for r in subset] for m in MODELS}), "per_policy": {}}
    for p in policies:
        part = [r for r in subset if r["policy"] == p]
        if part:
            result["per_policy"][p] = _compare({m: [r[f"{m}_{flag}"] for r in part] for m in MODELS})
    return result


def capability(rows: list[dict]) -> dict:
    """Accuracy (reference matching) with intervals, and mean reference log-likelihood per model."""
    subset = [r for r in rows if r["kind"] == "capability"]
    out = {"accuracy": _compare({m: [r[f"{m}_correct"] for r in subset] for m in MODELS})}
    ll = {m: float(np.mean([r[f"{m}_loglik"] for r in subset])) if subset else 0.0 for m in MODELS}
    out["loglik"] = {**ll, "delta": ll["tuned"] - ll["base"]}
    return out


def headline(metrics: dict) -> dict:
    """The few numbers a model card, a gate and the MLflow run show first."""
    out = {}
    for key, name in (("safety", "safe_response_rate"), ("over_refusal", "over_refusal_rate")):
        if metrics.get(key):
            for m in MODELS:
                out[f"{m}.{name}"] = metrics[key]["overall"][m]["rate"]
    for m in MODELS:
        out[f"{m}.capability_accuracy"] = metrics["capability"]["accuracy"][m]["rate"]
        out[f"{m}.reference_loglik"] = metrics["capability"]["loglik"][m]
    return out
