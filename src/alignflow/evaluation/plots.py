"""Evaluation plots (PNG, matplotlib Agg): per-policy safety with intervals; safety vs over-refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignflow.evaluation.metrics import MODELS

COLOURS = {"base": "#9e9e9e", "tuned": "#1565c0"}


def _err(stats: dict) -> tuple[float, list[float]]:
    return stats["rate"], [stats["rate"] - stats["low"], stats["high"] - stats["rate"]]


def policy_bars(grouped: dict, title: str, path: Path) -> None:
    """Bars per policy (plus overall), base vs tuned, with Wilson 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(grouped["per_policy"]) + ["overall"]
    stats = [grouped["per_policy"][n] for n in names[:-1]] + [grouped["overall"]]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    for k, m in enumerate(MODELS):
        rates, errs = zip(*(_err(s[m]) for s in stats))
        ax.bar(x + (k - 0.5) * 0.38, rates, 0.38, yerr=np.array(errs).T, capsize=3, label=m, color=COLOURS[m])
    ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% Wilson interval)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def safety_vs_over_refusal(safety: dict, over_refusal: dict, path: Path) -> None:
    """One point per model: safe-response rate on harmful prompts against over-refusal on borderline ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for m in MODELS:
        sx, ex = _err(over_refusal["overall"][m])
        sy, ey = _err(safety["overall"][m])
        ax.errorbar(sx, sy, xerr=np.array([ex]).T, yerr=np.array([ey]).T, fmt="o", capsize=4, color=COLOURS[m], label=m)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("over-refusal on borderline prompts (lower is better)")
    ax.set_ylabel("safe responses on harmful prompts (higher is better)")
    ax.set_title("Safety vs over-refusal (95% intervals)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
