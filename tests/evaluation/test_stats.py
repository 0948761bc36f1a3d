"""Wilson intervals and Newcombe differences against published values; the tests against scipy."""

import math

import pytest
from scipy.stats import binomtest, norm

from alignflow.evaluation.stats import delta, mcnemar_p, rate_with_interval, wilson_interval


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 10, 0.0179, 0.4042),
        (5, 10, 0.2366, 0.7634),
        # Newcombe (1998), Two-sided confidence intervals for the single proportion, Table I (Wilson).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_edges_and_errors():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    lo99, hi99 = wilson_interval(8, 10, z=2.5758)
    assert lo99 < 0.4902 and hi99 > 0.9433  # a 99% interval is wider
    for k, n in [(-1, 10), (11, 10), (0, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(k, n)


def test_rate_with_interval():
    r = rate_with_interval(8, 10)
    assert r["rate"] == 0.8 and (r["k"], r["n"]) == (8, 10)
    assert (round(r["low"], 4), round(r["high"], 4)) == (0.4902, 0.9433)
    assert rate_with_interval(0, 0) == {"rate": 0.0, "low": 0.0, "high": 1.0, "n": 0, "k": 0}


@pytest.mark.parametrize(
    "tuned, base, low, high",
    [  # Newcombe (1998), Interval estimation for the difference between independent proportions, method 10
        ((56, 70), (48, 80), 0.0524, 0.3339),
        ((9, 10), (3, 10), 0.1705, 0.8090),
        ((5, 56), (0, 29), -0.0381, 0.1926),
        ((0, 10), (0, 20), -0.1611, 0.2775),
        ((0, 10), (0, 10), -0.2775, 0.2775),
        ((10, 10), (0, 20), 0.6791, 1.0),
        ((10, 10), (0, 10), 0.6075, 1.0),
    ],
)
def test_delta_newcombe_interval(tuned, base, low, high):
    d = delta(rate_with_interval(*base), rate_with_interval(*tuned))
    assert math.isclose(d["diff"], tuned[0] / tuned[1] - base[0] / base[1])
    assert (round(d["low"], 4), round(d["high"], 4)) == (low, high)
    assert d["low"] <= d["diff"] <= d["high"]


def test_delta_p_value_is_the_pooled_two_proportion_z_test():
    d = delta(rate_with_interval(48, 80), rate_with_interval(56, 70))
    pooled = 104 / 150
    z = 0.2 / math.sqrt(pooled * (1 - pooled) * (1 / 80 + 1 / 70))
    assert math.isclose(d["p_value"], 2 * norm.sf(z), rel_tol=1e-9)
    assert delta(rate_with_interval(0, 10), rate_with_interval(0, 10))["p_value"] == 1.0
    empty = delta(rate_with_interval(0, 0), rate_with_interval(3, 10))
    assert (empty["low"], empty["high"], empty["p_value"]) == (-1.0, 1.0, 1.0)


@pytest.mark.parametrize("b, c", [(0, 0), (3, 12), (12, 3), (5, 5), (0, 9), (40, 61)])
def test_mcnemar_exact_matches_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert math.isclose(mcnemar_p(b, c), expected, rel_tol=1e-9)
