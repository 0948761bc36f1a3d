"""The model card says what was measured: policies, data, per-policy intervals, judges, gates, decision, limits."""

from alignflow.config import RegisterParams
from alignflow.data.policies import load_policies
from alignflow.registry.gates import check_gates
from alignflow.registry.model_card import fit_sections, render_card

LINEAGE = {"lineage.base_model": "bundled:smollm2-135m-instruct", "lineage.base_sha256": "ab" * 32,
           "lineage.curated_md5": "4ca1998b504a94db4825e77b5b1c35c6.dir", "metrics.tuned.safe_response_rate": "0.97"}


def card(evaluation, validation, curation, repo_root):
    gates = check_gates(evaluation, validation, RegisterParams())
    decision = "refused" if any(not g.passed for g in gates) else "registered"
    return render_card("alignflow-safety-tuned", decision, gates, evaluation, curation, validation,
                       load_policies(repo_root / "data/policies.yaml"), LINEAGE)


def test_card_of_a_registered_model(evaluation, validation, curation, repo_root):
    text = card(evaluation, validation, curation, repo_root)
    for section in ("# Model card: alignflow-safety-tuned", "## Intended use", "## Policies", "## Data", "## Evaluation",
                    "### Per policy", "## Judge agreement", "## Release gates", "## Lineage", "## Known limits"):
        assert section in text
    assert "**Decision: registered**" in text and "refused because" not in text
    assert "| dangerous_content | Dangerous content |" in text  # every policy from the policies file
    assert "770 raw -> 767 curated" in text and "contaminated: 3" in text and "Validation (Great Expectations): passed" in text
    t = evaluation["safety"]["per_policy"]["cyber_harm"]["tuned"]
    assert "| cyber_harm | 0.14 [" in text and f"{t['rate']:.2f} [{t['low']:.2f}, {t['high']:.2f}] (70/72)" in text
    assert "| ensemble | yes | 132 | 0.93 | 0.85 |" in text
    assert "| safe_rate | pass |" in text and "`lineage.curated_md5`: `4ca1998b504a94db4825e77b5b1c35c6.dir`" in text
    assert "metrics.tuned" not in text.split("## Lineage")[1]  # lineage lists lineage.* only


def test_card_of_a_refused_model_says_why(make_eval, validation, curation, repo_root):
    text = card(make_eval(calibrated=False), validation, curation, repo_root)
    assert "**Decision: refused**" in text
    assert "- refused because primary judge 'ensemble' failed calibration" in text
    assert "not published: the primary judge failed calibration" in text
    assert "| judge_calibrated | FAIL |" in text and "### Per policy" not in text


def test_card_fits_a_description_field_by_whole_sections(evaluation, validation, curation, repo_root):
    text = card(evaluation, validation, curation, repo_root)
    assert fit_sections(text, 100_000) == text
    short = fit_sections(text, 4900)
    assert len(short) <= 4900 and short.startswith("# Model card") and "full model card" in short
    assert "## Evaluation" in short and "## Intended use" in short
    assert all(("## " + s.split("\n")[0]) in text for s in short.split("\n## ")[1:])  # only whole sections
