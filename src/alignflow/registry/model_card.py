"""A markdown model card for one registration decision: use, policies, data, evaluation, judges, gates, limits.

Pure: reports in, text out. Every number comes from the curate, validate and evaluate reports, so the
card of a version says what was measured, with its 95% Wilson intervals, and nothing more.
"""

from __future__ import annotations

from alignflow.data.policies import Policies
from alignflow.registry.gates import Gate

INTENDED_USE = (
    "A chat assistant fine-tuned (LoRA SFT) to decline requests that violate the policies below while still "
    "answering benign and borderline requests. It is meant for evaluating and demonstrating policy alignment, and "
    "as an assistant whose answers a person reads. It is not a content-moderation classifier, gives no guarantee "
    "that a harmful answer cannot be produced, and must not be the only safeguard of a product."
)
LIMITS = (
    "Metrics come from one greedy answer per held-out prompt; intervals are 95% Wilson intervals and are wide "
    "when n is small (per policy especially).",
    "A response counts as safe when the primary judge reads it as a refusal: judges measure stance, not harm, "
    "and an automatic judge misreads some answers (see its agreement with hand labels above).",
    "The 'safe alternative' after a refusal is not judged: a small model's alternative can be off-topic, "
    "incoherent or even re-offer what it just declined (\"I won't help build a phishing page ... I can help "
    "you write a phishing page for a real bank account\"). Read the sample responses before trusting the rate.",
    "Eval prompts are hand-written and English; other languages, long conversations and adaptive jailbreaks "
    "are not measured.",
    "Capability is checked on short reference questions only; it is a guard against damage, not a benchmark.",
)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rate(m: dict | None) -> str:
    return "n/a" if not m else f"{m['rate']:.2f} [{m['low']:.2f}, {m['high']:.2f}] ({m['k']}/{m['n']})"


def _delta(d: dict | None) -> str:
    if not d:
        return "n/a"
    p = f", McNemar p {d['mcnemar_p']:.3f}" if "mcnemar_p" in d else ""
    return f"{d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]{p}"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _evaluation(ev: dict) -> list[str]:
    out = [f"Primary judge: `{ev.get('primary_judge')}`. Cells: rate [95% interval] (k/n); change = tuned - base.", ""]
    rows = []
    for key, label in (("safety", "Safe responses to harmful prompts"), ("over_refusal", "Over-refusal of borderline prompts")):
        o = (ev.get(key) or {}).get("overall") or {}
        rows.append([label, _rate(o.get("base")), _rate(o.get("tuned")), _delta(o.get("delta"))])
    acc = (ev.get("capability") or {}).get("accuracy") or {}
    rows.append(["Capability accuracy", _rate(acc.get("base")), _rate(acc.get("tuned")), _delta(acc.get("delta"))])
    ll = (ev.get("capability") or {}).get("loglik")
    if ll:
        rows.append(["Reference log-likelihood (mean)", f"{ll['base']:.3f}", f"{ll['tuned']:.3f}", f"{ll['delta']:+.3f}"])
    out += _table(["metric", "base", "tuned", "change"], rows)
    if not ev.get("safety"):
        out += ["", "**Safety and over-refusal metrics were not published: the primary judge failed calibration.**"]
        return out
    out += ["", "### Per policy", ""]
    over = (ev.get("over_refusal") or {}).get("per_policy") or {}
    rows = [[p, _rate(m["base"]), _rate(m["tuned"]), _delta(m.get("delta")), _rate((over.get(p) or {}).get("tuned"))]
            for p, m in ev["safety"]["per_policy"].items()]
    return out + _table(["policy", "safe (base)", "safe (tuned)", "change", "over-refusal (tuned)"], rows)


def _data(curation: dict, validation: dict) -> list[str]:
    cov = curation.get("coverage") or {}
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted((curation.get("quarantined_by_reason") or {}).items())) or "none"
    return [
        f"- Rows: {curation.get('rows_in', '?')} raw -> {curation.get('rows_out', '?')} curated "
        f"({curation.get('adversarial_rows', '?')} adversarial, {curation.get('benign_rows', '?')} benign); "
        f"splits {curation.get('splits', {})}.",
        f"- Quarantined: {curation.get('rows_quarantined', '?')} ({reasons}).",
        f"- Coverage: {cov.get('cells', '?')} policy x use case cells, at least {cov.get('min_rows_per_cell', '?')} "
        f"rows each; empty cells: {', '.join(cov.get('empty_cells') or []) or 'none'}.",
        f"- Validation (Great Expectations): {'passed' if validation.get('passed') else 'FAILED'}"
        + (f"; failed: {', '.join(map(str, validation.get('failed')))}" if validation.get("failed") else "") + ".",
        "- Evaluation prompts are held out: curation removes tuning rows that overlap them.",
    ]


def render_card(name: str, decision: str, gates: list[Gate], evaluation: dict, curation: dict,
                validation: dict, policies: Policies, lineage: dict[str, str]) -> str:
    """The model card as markdown. `decision` is 'registered' or 'refused'; `lineage` the lineage tags."""
    failed = [g for g in gates if not g.passed]
    lines = [f"# Model card: {name}", "",
             f"**Decision: {decision}** ({len(gates) - len(failed)} of {len(gates)} release gates passed)."]
    lines += ([""] if failed else []) + [f"- refused because {g.reason}" for g in failed]
    lines += ["", "## Intended use", "", INTENDED_USE, "",
              f"Base model: `{lineage.get('lineage.base_model', '?')}` "
              f"(sha256 `{lineage.get('lineage.base_sha256', '?')[:16]}`).", "", "## Policies", ""]
    lines += _table(["policy", "title", "definition"], [[k, policies.titles.get(k, k), d] for k, d in policies.definitions.items()])
    lines += ["", f"Use cases: {', '.join(policies.use_cases)}.", "", "## Data", ""] + _data(curation, validation)
    lines += ["", "## Evaluation", ""] + _evaluation(evaluation)
    judges = [[n, "yes" if n == evaluation.get("primary_judge") else "", c.get("n"), c.get("accuracy"), c.get("kappa")]
              for n, c in (evaluation.get("judges") or {}).items()]
    lines += ["", "## Judge agreement with hand labels (calibration set)", ""]
    lines += _table(["judge", "primary", "n", "accuracy", "Cohen's kappa"], judges)
    lines += ["", "## Release gates", ""]
    lines += _table(["gate", "result", "observed", "threshold", "reason"],
                    [[g.name, "pass" if g.passed else "FAIL", g.observed, g.threshold, g.reason] for g in gates])
    lines += ["", "## Lineage", ""]
    lines += [f"- `{k}`: `{v}`" for k, v in sorted(lineage.items()) if k.startswith("lineage.")]
    lines += ["", "## Known limits", ""] + [f"- {t}" for t in LIMITS]
    return "\n".join(lines) + "\n"


def fit_sections(card: str, limit: int, first: tuple[str, ...] = ("Evaluation", "Intended use", "Data", "Judge")) -> str:
    """Whole sections of the card that fit in `limit` characters, for size-limited fields such as a model
    version description: the title and decision, then sections starting with `first` (in that order), then
    the others while they fit; printed in card order, with a pointer to the full card when any is left out."""
    note = "\n\n(Sections left out here are in the full model card, the model's `model_card` artifact.)"
    head, *sections = card.rstrip("\n").split("\n## ")
    order = sorted(range(len(sections)), key=lambda i: next((k for k, t in enumerate(first) if sections[i].startswith(t)), len(first)))
    kept, size = set(), len(head) + len(note)
    for i in order:
        if size + len(sections[i]) + 4 <= limit:
            kept.add(i)
            size += len(sections[i]) + 4
    text = "\n## ".join([head] + [sections[i] for i in sorted(kept)])
    return text + (note if len(kept) < len(sections) else "") + "\n"
