"""Synthetic SFT corpora for the curate benchmark, with injected duplicates and their ground truth.

A corpus is a folder holding what the curate stage reads plus the truth the benchmark scores against:

    raw/bench.jsonl        SFT rows in the data contract (docs/DATA_CONTRACTS.md), one per line
    eval/<set>.jsonl       a small held-out set (harmful, borderline, capability, calibration)
    truth.json             every injected row: kind, source id, true Jaccard with its source

Base rows are ~20-word prompts and ~40-word responses drawn from a Zipf-distributed vocabulary of
20,000 pseudo-words (plus English function words), so two unrelated rows share almost no word 3-grams.
Injected after their source (the stage keeps the first occurrence, so the copy is the one to drop):
- exact duplicates: the same words (sometimes recased or re-spaced, which the stage's keys ignore);
- near duplicates: 1-3 word edits (substitute, insert, delete, swap), at least one in the prompt so
  exact dedup cannot catch them. Their true Jaccard is computed with the stage's shingling (case-folded
  `\\w+` words, word 3-grams of prompt + "\\n" + response) on exact string sets, not hashes; only pairs
  at or above the threshold are positives, the rest are hard negatives that must be kept;
- contaminated rows: a held-out prompt, verbatim or inside a longer prompt (10-gram overlap);
- a few malformed lines and a few rows with PII (emails, phones, cards, IPs), never used as sources.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_SIZE = 20_000
FUNCTION_WORDS = (
    "the of and to a in is it you that he was for on are with as i his they be at one have this from or had by "
    "not word but what some we can out other were all there when up use your how said an each she which do "
    "their time if will way about many then them write would like so these her long make thing see him two"
).split()
_WORD = re.compile(r"\w+")  # the stage's word definition (alignflow.data.text.words), re-stated on purpose


def true_shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """Exact word n-gram set with the stage's rules (short texts give one gram of all their words)."""
    toks = _WORD.findall(text.casefold())
    if len(toks) < n:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def true_jaccard(a: str, b: str, n: int = 3) -> float:
    sa, sb = true_shingles(a, n), true_shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


@dataclass(frozen=True)
class Mix:
    """Shares of injected rows, as fractions of all rows (the issue's example: 10% exact, 10% near)."""

    exact: float = 0.10
    near: float = 0.10
    contaminated: float = 0.005
    malformed: float = 0.001
    pii: float = 0.02
    eval_prompts: int = 300


def _vocabulary(rng: np.random.Generator) -> np.ndarray:
    """Function words first (most frequent under Zipf), then unique pseudo-words of 2-4 syllables."""
    onsets = list("bcdfghjklmnprstvwz") + ["br", "ch", "cl", "dr", "gr", "pl", "sh", "st", "th", "tr"]
    syllables = [o + v for o in onsets for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words: dict[str, None] = dict.fromkeys(FUNCTION_WORDS)
    while len(words) < VOCAB_SIZE:
        k = int(rng.integers(2, 5))
        words["".join(syllables[int(i)] for i in rng.integers(0, len(syllables), k))] = None
    return np.array(list(words), dtype=object)


class _Words:
    """Draws word sequences with Zipf(1) frequencies, in big numpy batches (fast for 200k rows)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.vocab = _vocabulary(rng)
        p = 1.0 / np.arange(1, VOCAB_SIZE + 1)
        self.cdf = np.cumsum(p / p.sum())
        self.buf = np.zeros(0, dtype=np.int64)

    def draw(self, n: int) -> list[str]:
        if len(self.buf) < n:
            fresh = np.searchsorted(self.cdf, self.rng.random(1_000_000 + n), side="right")
            self.buf = np.concatenate([self.buf, np.minimum(fresh, VOCAB_SIZE - 1)])
        out, self.buf = self.buf[:n], self.buf[n:]
        return list(self.vocab[out])


def _sentence(words: list[str], end: str) -> str:
    return (words[0].capitalize() + " " + " ".join(words[1:]) + end) if words else ""


def _edit(prompt: list[str], response: list[str], k: int, rng: np.random.Generator, w: _Words):
    """k random word edits over prompt + response, the first one always in the prompt."""
    p, r = list(prompt), list(response)
    for e in range(k):
        seq = p if e == 0 or rng.random() < len(p) / (len(p) + len(r)) else r
        op = rng.choice(("sub", "sub", "ins", "del", "swap"))
        pos = int(rng.integers(0, len(seq)))
        if op == "sub":
            new = w.draw(1)[0]
            seq[pos] = new if new != seq[pos] else new + "x"
        elif op == "ins":
            seq.insert(pos, w.draw(1)[0])
        elif op == "del" and len(seq) > 3:
            del seq[pos]
        elif pos + 1 < len(seq) and seq[pos] != seq[pos + 1]:
            seq[pos], seq[pos + 1] = seq[pos + 1], seq[pos]
        else:  # a swap of equal words changes nothing: substitute instead
            seq[pos] = w.draw(1)[0] + "q"
    return p, r


_PII = (
    lambda rng: f"mail {['ana', 'li', 'sam'][int(rng.integers(3))]}.{int(rng.integers(1000))}@example.org",
    lambda rng: f"call +44 20 {int(rng.integers(1000, 9999))} {int(rng.integers(1000, 9999))}",
    lambda rng: "card 4111 1111 1111 1111",
    lambda rng: f"host 10.{int(rng.integers(256))}.{int(rng.integers(256))}.{int(rng.integers(1, 255))}",
)


def generate(folder: Path, rows: int, seed: int = 0, mix: Mix = Mix(), threshold: float = 0.8,
             policies: tuple[str, ...] = ("none",), use_cases: tuple[str, ...] = ("advice",)) -> dict:
    """Write a corpus of `rows` raw lines into `folder`; returns its summary (also in truth.json)."""
    rng = np.random.default_rng(seed)
    w = _Words(rng)
    n_exact, n_near = int(rows * mix.exact), int(rows * mix.near)
    n_contam, n_bad = int(rows * mix.contaminated), int(rows * mix.malformed)
    n_base = rows - n_exact - n_near - n_contam - n_bad

    eval_prompts = [w.draw(int(rng.integers(15, 26))) for _ in range(mix.eval_prompts)]
    base = [(w.draw(int(rng.integers(14, 27))), w.draw(int(rng.integers(30, 51)))) for _ in range(n_base)]
    # Sources are base rows without PII; PII goes to other base rows, so the truth needs no scrubbing.
    order = rng.permutation(n_base)
    n_pii = min(int(rows * mix.pii), n_base // 4)
    pii_rows = set(order[:n_pii].tolist())
    sources = order[n_pii:]

    def text(words: list[str], end: str, row: int | None = None) -> str:
        s = _sentence(words, end)
        if row is not None and row in pii_rows:
            s = s[:-1] + ", " + _PII[row % len(_PII)](rng) + end
        return s

    # (sort key, prompt, response, truth): a copy's key lies between its source and the end, so it follows it.
    items: list[tuple[float, str, str, dict | None]] = [
        (float(i), text(p, "?", i), text(r, ".", i), None) for i, (p, r) in enumerate(base)
    ]
    src_of_copy = rng.choice(sources, size=n_exact + n_near, replace=n_exact + n_near > len(sources))
    for c, s in enumerate(src_of_copy.tolist()):
        p, r = base[s]
        key = s + float(rng.uniform(0.001, n_base - s))
        sp, sr = items[s][1], items[s][2]
        if c < n_exact:
            variant = c % 3  # verbatim, upper-cased, extra spaces: all equal under the stage's key
            cp = sp if variant == 0 else sp.upper() if variant == 1 else sp.replace(" ", "  ", 2)
            items.append((key, cp, sr, {"kind": "exact", "src": s, "jaccard": 1.0}))
        else:
            k = int(rng.choice((1, 2, 3), p=(0.5, 0.4, 0.1)))
            ep, er = _edit(p, r, k, rng, w)
            cp, cr = _sentence(ep, "?"), _sentence(er, ".")
            j = round(true_jaccard(sp + "\n" + sr, cp + "\n" + cr), 4)
            items.append((key, cp, cr, {"kind": "near", "src": s, "jaccard": j, "edits": k}))
    for c in range(n_contam):
        e = int(rng.integers(len(eval_prompts)))
        words = eval_prompts[e] if c % 2 == 0 else ["for", "a", "story"] + eval_prompts[e] + w.draw(3)
        key = float(rng.uniform(0, n_base))
        items.append((key, _sentence(words, "?"), _sentence(w.draw(40), "."), {"kind": "contaminated", "eval": e}))
    items.sort(key=lambda t: t[0])
    bad_at = set(rng.choice(len(items) + n_bad, size=n_bad, replace=False).tolist())

    # base row index -> its position among the written rows (ids are positions), for the truth of copies
    base_id = {int(it[0]): n for n, it in enumerate(items) if it[3] is None}

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "raw").mkdir(exist_ok=True)
    labels = list(policies)
    truth_rows, line_no, idx = [], 0, 0
    with open(folder / "raw" / "bench.jsonl", "w", encoding="utf-8") as f:
        for n in range(len(items) + n_bad):
            line_no += 1
            if n in bad_at:
                f.write('{"id": "broken-%d", "messages": [\n' % n)
                truth_rows.append({"id": None, "line": line_no, "kind": "malformed"})
                continue
            _, prompt, response, truth = items[idx]
            policy = labels[int(rng.integers(len(labels)))]
            row = {"id": f"row-{idx:07d}", "messages": [{"role": "user", "content": prompt},
                                                        {"role": "assistant", "content": response}],
                   "policy": policy, "use_case": use_cases[int(rng.integers(len(use_cases)))],
                   "adversarial": policy != "none", "formulation": "direct", "source": "bench-synthetic"}
            f.write(json.dumps(row) + "\n")
            if truth is not None:
                t = {"id": row["id"], "line": line_no, **truth}
                if "src" in t:
                    t["src"] = f"row-{base_id[t.pop('src')]:07d}"
                truth_rows.append(t)
            idx += 1

    (folder / "eval").mkdir(exist_ok=True)
    sets = {"harmful": [], "borderline": [], "capability": [], "calibration": []}
    for e, words in enumerate(eval_prompts):
        name = ("harmful", "borderline", "capability", "calibration")[e % 4]
        row = {"id": f"eval-{e:04d}", "policy": "none", "prompt": _sentence(words, "?")}
        if name != "calibration":
            row["kind"] = name
        if name == "capability":
            row["reference"] = "yes"
        if name == "calibration":
            row.update(response="No.", label="refusal", note="")
        sets[name].append(row)
    for name, rs in sets.items():
        (folder / "eval" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))

    near = [t["jaccard"] for t in truth_rows if t["kind"] == "near"]
    summary = {
        "rows": line_no, "seed": seed, "threshold": threshold, "mix": mix.__dict__,
        "injected": {k: sum(t["kind"] == k for t in truth_rows) for k in ("exact", "near", "contaminated", "malformed")},
        "near_at_or_above_threshold": sum(j >= threshold for j in near),
        "near_jaccard_percentiles": dict(zip(("p0", "p10", "p50", "p90", "p100"),
                                             np.percentile(near, [0, 10, 50, 90, 100]).round(4).tolist()))
        if near else {},
        "pii_rows": n_pii,
    }
    (folder / "truth.json").write_text(json.dumps({"summary": summary, "injected": truth_rows}))
    return summary
