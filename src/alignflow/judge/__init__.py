"""Judges for the evaluate stage: did a response refuse, and is a short answer correct.

Refusal judges share `base.RefusalJudge` (name, version, judge(prompts, responses) -> list[Verdict]):
lexical (regex cues), classifier (TF-IDF + logistic regression on the curated SFT responses), ensemble
(lexical where a cue fires, else classifier) and the opt-in LLM judges in `llm`. Modules import heavy
dependencies (scikit-learn, httpx, JAX) only when used.
"""

from alignflow.judge.base import COMPLIANCE, LABELS, REFUSAL, JudgeError, RefusalJudge, Verdict, calibrate

__all__ = ["COMPLIANCE", "LABELS", "REFUSAL", "JudgeError", "RefusalJudge", "Verdict", "calibrate"]
