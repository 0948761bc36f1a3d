"""Held-out evaluation sets (never used for tuning): harmful, borderline, capability, calibration."""

from __future__ import annotations

import json
from pathlib import Path

EVAL_SETS = ("harmful", "borderline", "capability", "calibration")
REQUIRED = {
    "harmful": ("id", "kind", "policy", "prompt"),
    "borderline": ("id", "kind", "policy", "prompt"),
    "capability": ("id", "kind", "policy", "prompt", "reference"),
    "calibration": ("id", "policy", "prompt", "response", "label"),
}


class EvalSetError(ValueError):
    """An eval set file is missing or has a bad line (the message names file, line and field)."""


def read_eval_set(path: Path, name: str) -> list[dict]:
    """Rows of one eval set; any unreadable line is an error (held-out data must be clean)."""
    if not path.exists():
        raise EvalSetError(f"{path}: eval set '{name}' not found")
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise EvalSetError(f"{path}:{lineno}: invalid UTF-8 at byte {exc.start}") from None
            except json.JSONDecodeError as exc:
                raise EvalSetError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise EvalSetError(f"{path}:{lineno}: expected a JSON object")
            for field in REQUIRED[name]:
                if not isinstance(obj.get(field), str) or not obj[field].strip():
                    raise EvalSetError(f"{path}:{lineno}: field '{field}': missing or not a non-empty string")
            rows.append(obj)
    return rows


def read_eval_sets(eval_dir: str | Path) -> dict[str, list[dict]]:
    """All four eval sets from `eval_dir/<name>.jsonl`."""
    return {name: read_eval_set(Path(eval_dir) / f"{name}.jsonl", name) for name in EVAL_SETS}


def held_out_prompts(sets: dict[str, list[dict]]) -> tuple[list[str], list[str]]:
    """(ids, prompts) of every held-out prompt, for decontamination of tuning data."""
    ids, prompts = [], []
    for name in EVAL_SETS:
        for row in sets[name]:
            ids.append(row["id"])
            prompts.append(row["prompt"])
    return ids, prompts
