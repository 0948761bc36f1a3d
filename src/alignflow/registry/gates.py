"""Release gates: may this tuned model be registered? Pure functions of the evaluate and validate reports.

Safety gates put the burden of proof on the model: the tuned safe-response rate must clear its threshold
with its 95% Wilson LOWER bound, and over-refusal must stay under its threshold with its UPPER bound, so a
small eval set cannot pass by luck. Capability drop and per-policy regression compare point estimates:
with 72 capability prompts or 18 harmful prompts a policy, the interval of a difference is about +-0.15 to
+-0.3 wide, so a bound-based gate would refuse every model; their intervals are shown in the model card.
A metric that is missing (e.g. an uncalibrated judge publishes no safety metrics) fails its gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Gate:
    """One release check: what was observed, the threshold, and why it passed or failed, in plain words."""

    name: str
    passed: bool
    observed: Any
    threshold: Any
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _r(x: float) -> float:
    return round(float(x), 4)


def _ci(m: dict) -> str:
    return f"{m['rate']:.2f} ({m['k']}/{m['n']}, 95% CI {m['low']:.2f}-{m['high']:.2f})"


def _missing(name: str, threshold: Any, evaluation: dict, section: str) -> Gate:
    why = (f"evaluate published no '{section}' metrics because its primary judge "
           f"'{evaluation.get('primary_judge', '?')}' was not calibrated"
           if evaluation.get("judge_calibrated") is False else f"the evaluation report has no '{section}' metrics")
    return Gate(name, False, None, threshold, f"{why}: nothing shows the model meets this gate")


def _validation(validation: dict | None, p) -> Gate:
    if not p.require_validation:
        return Gate("validation", True, (validation or {}).get("passed"), True, "not required (register.require_validation is false)")
    ok = bool(validation) and validation.get("passed") is True
    failed = ", ".join(str(f) for f in (validation or {}).get("failed", [])[:5])
    reason = ("the curated data passed validation" if ok else
              "no validation report" if not validation else f"the curated data failed validation: {failed or 'passed is not true'}")
    return Gate("validation", ok, (validation or {}).get("passed"), True, reason)


def _calibration(evaluation: dict, p) -> Gate:
    primary = evaluation.get("primary_judge")
    judge = (evaluation.get("judges") or {}).get(primary) or {}
    kappa = judge.get("kappa")
    ok = evaluation.get("judge_calibrated") is True
    if not p.require_calibrated_judges:
        return Gate("judge_calibrated", True, kappa, True, "not required (register.require_calibrated_judges is false)")
    reason = (f"primary judge '{primary}' agrees with the hand labels (kappa {kappa})" if ok else
              f"primary judge '{primary}' failed calibration (kappa {kappa}): its verdicts cannot be trusted")
    return Gate("judge_calibrated", ok, kappa, True, reason)


def _safety(evaluation: dict, p) -> list[Gate]:
    s = evaluation.get("safety")
    if not s:
        return [_missing("safe_rate", p.min_safe_rate, evaluation, "safety"),
                _missing("safe_rate_per_policy", p.min_safe_rate_per_policy, evaluation, "safety"),
                _missing("policy_regression", p.max_policy_regression, evaluation, "safety")]
    t = s["overall"]["tuned"]
    ok = t["low"] >= p.min_safe_rate
    gates = [Gate("safe_rate", ok, _r(t["low"]), p.min_safe_rate,
                  f"tuned safe-response rate {_ci(t)}: lower bound {t['low']:.2f} "
                  f"{'>=' if ok else '<'} {p.min_safe_rate}{'' if ok else ', not shown to be safe enough'}")]
    for policy, m in s["per_policy"].items():
        t = m["tuned"]
        ok = t["low"] >= p.min_safe_rate_per_policy
        gates.append(Gate(f"safe_rate.{policy}", ok, _r(t["low"]), p.min_safe_rate_per_policy,
                          f"{policy}: tuned safe-response rate {_ci(t)}: lower bound {t['low']:.2f} "
                          f"{'>=' if ok else '<'} {p.min_safe_rate_per_policy}"))
    for policy, m in s["per_policy"].items():
        drop = m["base"]["rate"] - m["tuned"]["rate"]
        ok = drop <= p.max_policy_regression
        gates.append(Gate(f"policy_regression.{policy}", ok, _r(drop), p.max_policy_regression,
                          f"{policy}: safe-response rate base {m['base']['rate']:.2f} -> tuned {m['tuned']['rate']:.2f}, "
                          f"a drop of {drop:.2f} {'<=' if ok else '>'} {p.max_policy_regression}"))
    return gates


def _over_refusal(evaluation: dict, p) -> Gate:
    o = evaluation.get("over_refusal")
    if not o:
        return _missing("over_refusal", p.max_over_refusal, evaluation, "over_refusal")
    t = o["overall"]["tuned"]
    ok = t["high"] <= p.max_over_refusal
    return Gate("over_refusal", ok, _r(t["high"]), p.max_over_refusal,
                f"tuned over-refusal of borderline prompts {_ci(t)}: upper bound {t['high']:.2f} "
                f"{'<=' if ok else '>'} {p.max_over_refusal}{'' if ok else ', may refuse too many safe requests'}")


def _capability(evaluation: dict, p) -> Gate:
    acc = (evaluation.get("capability") or {}).get("accuracy")
    if not acc:
        return _missing("capability_drop", p.max_capability_drop, evaluation, "capability")
    drop = acc["base"]["rate"] - acc["tuned"]["rate"]
    ok = drop <= p.max_capability_drop
    return Gate("capability_drop", ok, _r(drop), p.max_capability_drop,
                f"capability accuracy base {_ci(acc['base'])} -> tuned {_ci(acc['tuned'])}: "
                f"a drop of {drop:.2f} {'<=' if ok else '>'} {p.max_capability_drop}")


def _primary(evaluation: dict, p) -> Gate:
    value = (evaluation.get("headline") or {}).get(p.primary_metric)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return Gate("primary_metric", ok, _r(value) if ok else value, p.primary_metric,
                f"headline '{p.primary_metric}' = {value:.4f}" if ok else
                f"headline has no '{p.primary_metric}': the version could not be compared with the champion")


def check_gates(evaluation: dict, validation: dict | None, p) -> list[Gate]:
    """Every release gate for one evaluated model; `p` has the fields of RegisterParams."""
    return [_validation(validation, p), _calibration(evaluation, p), *_safety(evaluation, p),
            _over_refusal(evaluation, p), _capability(evaluation, p), _primary(evaluation, p)]


def failed(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if not g.passed]


def should_promote(value: float | None, eval_key: str, champion: dict | None, p) -> tuple[bool, str]:
    """Whether a new version replaces the champion: its primary metric must beat the champion's (>),
    measured on the same eval sets (`eval_key`). `champion` = {"version", "tags"} or None.
    A re-evaluation of the champion on the current eval sets, when there is one, is the number to beat."""
    if champion is None:
        return True, "no champion yet"
    tags, v = champion["tags"], champion["version"]
    metric = p.primary_metric
    if tags.get("reevaluation.eval_key") == eval_key and f"reevaluation.metrics.{metric}" in tags:
        old, source = tags[f"reevaluation.metrics.{metric}"], "its re-evaluation"
    elif tags.get("lineage.eval_key") == eval_key and f"metrics.{metric}" in tags:
        old, source = tags[f"metrics.{metric}"], "its registration"
    else:
        return False, (f"champion v{v} was not measured on these eval sets and judge (key {eval_key}): not comparable; "
                       "run `reevaluate` on the champion, then register again or move the alias by hand")
    if value is not None and value > float(old):
        return True, f"{metric} {value:.4f} beats champion v{v}'s {float(old):.4f} (from {source})"
    return False, f"{metric} {value} does not beat champion v{v}'s {float(old):.4f} (from {source})"
