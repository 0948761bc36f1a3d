"""Capability matching edge cases, and the reference log-likelihood on the tiny random model."""

import math

import numpy as np
import pytest

from alignflow.judge.capability import is_correct, normalise, reference_loglik
from alignflow.model.sft import TooLongError


@pytest.mark.parametrize(
    "answer, accept, expected",
    [
        ("Paris", ["Paris"], True),
        ("The capital of France is PARIS.", ["Paris"], True),
        ("It's paris!!", ["Paris"], True),
        ("Parisian", ["Paris"], False),  # a word, not a prefix
        ("The answer is 15.", ["5", "five"], False),  # "5" is not inside "15"
        ("9 - 4 = 5", ["5", "five"], True),
        ("fourteen", ["four"], False),
        ("It is 3.5 degrees", ["5"], False),  # a decimal stays one number
        ("Twenty-five", ["25", "twenty-five", "twenty five"], True),
        ("twenty five", ["twenty-five"], True),
        ("It makes 1,000 units", ["1000"], True),
        ("Plants take in CO₂", ["carbon dioxide", "CO2"], True),  # NFKC folds the subscript
        ("carbon  dioxide", ["carbon dioxide"], True),
        ("carbon monoxide", ["carbon dioxide"], False),
        ("", ["Paris"], False),
        ("Paris", [], False),
        ("Paris", ["", "  "], False),  # an empty accept string never matches everything
        ("False", ["False"], True),
        ("Roma", ["Rome", "Roma"], True),
    ],
)
def test_is_correct(answer, accept, expected):
    assert is_correct(answer, accept) is expected


def test_normalise():
    assert normalise("  Hello,\n  WORLD_wide! ") == "hello world wide"
    assert normalise("Pi is 3.14.") == "pi is 3.14"


PROMPTS = ["What is the capital of France?", "What is 7 + 5? Answer with a number.", "Say hello."]
REFERENCES = ["Paris", "12", "Hello there, friend!"]


@pytest.fixture(scope="module")
def tiny():
    from alignflow.model.base import build_tiny_model

    return build_tiny_model(seed=0)


def test_reference_loglik_is_finite_negative_and_deterministic(tiny):
    first = reference_loglik(tiny, PROMPTS, REFERENCES, batch_size=4, seq_len=64)
    again = reference_loglik(tiny, PROMPTS, REFERENCES, batch_size=4, seq_len=64)
    assert len(first) == 3 and first == again
    assert all(math.isfinite(x) and x < 0 for x in first)
    # a random model over ~49k tokens is near uniform: log(1/49152) = -10.8 per token
    assert all(-15 < x < -5 for x in first)


def test_batched_rows_equal_single_rows(tiny):
    batched = reference_loglik(tiny, PROMPTS, REFERENCES, batch_size=4, seq_len=64)
    single = [reference_loglik(tiny, [p], [r], batch_size=1, seq_len=64)[0] for p, r in zip(PROMPTS, REFERENCES)]
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-4)


def test_reference_loglik_errors(tiny):
    with pytest.raises(ValueError):
        reference_loglik(tiny, PROMPTS, REFERENCES[:2])
    with pytest.raises(TooLongError):
        reference_loglik(tiny, ["Q"], ["word " * 40], batch_size=1, seq_len=16)
    assert reference_loglik(tiny, [], [], batch_size=2, seq_len=16) == []
