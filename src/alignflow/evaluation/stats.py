"""Rates with Wilson score intervals, and the base-vs-tuned difference of two rates.

Eval sets are small (tens to a few hundred prompts), so the normal-approximation interval p +- z*se is
wrong near 0% and 100% (it gives [0, 0] for 0/10). Wilson's score interval keeps its coverage there and
is the interval Newcombe's method for a difference is built from.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95%: the 0.975 quantile of the standard normal


def _check(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for successes/n; n = 0 gives the uninformative (0.0, 1.0)."""
    _check(successes, n)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # k = 0 and k = n make the bounds 0 and 1 exactly in theory; clamp away float dust.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def rate_with_interval(successes: int, n: int, z: float = Z95) -> dict:
    """{rate, low, high, n, k}; with n = 0 the rate is 0.0 and the interval (0, 1): read n first."""
    low, high = wilson_interval(successes, n, z)
    return {"rate": successes / n if n else 0.0, "low": low, "high": high, "n": n, "k": successes}


def delta(base: dict, tuned: dict, z: float = Z95) -> dict:
    """tuned rate - base rate, Newcombe's hybrid score interval and a two-proportion z-test p-value.

    base and tuned are rate_with_interval() dicts. Both methods treat the two samples as independent;
    when base and tuned answered the *same* prompts that is conservative (a positive correlation between
    the paired outcomes only narrows the true interval): use mcnemar_p on per-prompt outcomes for the
    paired test. Newcombe (1998), "Interval estimation for the difference between independent
    proportions", method 10; the z-test uses the pooled proportion.
    """
    kb, nb, kt, nt = base["k"], base["n"], tuned["k"], tuned["n"]
    _check(kb, nb)
    _check(kt, nt)
    pb, pt = (kb / nb if nb else 0.0), (kt / nt if nt else 0.0)
    lb, ub = wilson_interval(kb, nb, z)
    lt, ut = wilson_interval(kt, nt, z)
    diff = pt - pb
    low = diff - math.sqrt((pt - lt) ** 2 + (ub - pb) ** 2)
    high = diff + math.sqrt((ut - pt) ** 2 + (pb - lb) ** 2)
    if nb == 0 or nt == 0:
        low, high, p_value = -1.0, 1.0, 1.0
    else:
        pooled = (kb + kt) / (nb + nt)
        se = math.sqrt(pooled * (1 - pooled) * (1 / nb + 1 / nt))
        # Both rates 0% or both 100%: no evidence of any difference.
        p_value = 1.0 if se == 0 else math.erfc(abs(diff) / se / math.sqrt(2))
    return {
        "diff": diff,
        "low": max(-1.0, low),
        "high": min(1.0, high),
        "p_value": p_value,
        "method": "newcombe-hybrid-score; two-proportion z-test (pooled)",
    }


def mcnemar_p(base_only: int, tuned_only: int) -> float:
    """Exact two-sided McNemar p-value for paired outcomes on the same prompts.

    base_only: prompts where only the base model had the outcome (e.g. refused); tuned_only: where only
    the tuned model had it. Prompts where both or neither had it carry no information about the change.
    """
    if base_only < 0 or tuned_only < 0:
        raise ValueError("discordant counts must be non-negative")
    n = base_only + tuned_only
    if n == 0:
        return 1.0
    k = min(base_only, tuned_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # Binomial(n, 1/2) lower tail
    return min(1.0, 2 * tail)
