"""The validate stage's Great Expectations suites: hand-written JSON in `paths.expectations`, filled at load.

Each file holds one suite in GX's own JSON shape (`name`, `meta`, `expectations` of `type`, `kwargs`,
`meta`, `notes`, `severity`), so the reviewed file is exactly what GX runs; nothing regenerates it.
Values owned by params.yaml (`validate:`) or the policies file are written as placeholders such as
"$use_cases" or "$min_rows_per_cell" and filled in here, so a bound lives in one place only.
Every suite names in `meta.frame` the frame it validates; every expectation carries a stable
`meta.name` (used in failure messages and the report) and an explicit `severity`, critical or warning,
because GX would silently default a missing one to critical.
The frames the suites name are built here too (`build_frames`), so the columns a suite refers to and the
code that derives them sit side by side.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd

from alignflow.config import ValidateParams
from alignflow.data.policies import Policies

PLACEHOLDER = re.compile(r"\$[a-z_]+")
SEVERITIES = ("critical", "warning")
FRAMES = ("curated", "coverage", "eval")  # what `meta.frame` may name: the keys of build_frames()


class SuiteError(ValueError):
    """A suite file is unreadable, malformed, or refers to an unknown placeholder."""


def read_suites(folder: str | Path) -> dict[str, dict]:
    """The raw suite JSON of every `*.json` in `folder`, by file name (sorted, so runs are reproducible)."""
    paths = sorted(Path(folder).glob("*.json"))
    if not paths:
        raise SuiteError(f"{folder}: no expectation suites (*.json)")
    suites = {}
    for path in paths:
        try:
            suites[path.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SuiteError(f"{path}: cannot read suite: {exc}") from exc
    return suites


def placeholder_values(p: ValidateParams, policies: Policies) -> dict[str, Any]:
    """What each "$name" stands for: every `validate:` param, and the policy and use-case sets."""
    values = {f"${k}": v for k, v in dataclasses.asdict(p).items()}
    values["$policies"] = list(policies.names)
    values["$policy_labels"] = list(policies.labels)  # the policies plus "none" (benign rows)
    values["$use_cases"] = list(policies.use_cases)
    return values


def fill(node: Any, values: dict[str, Any], where: str) -> Any:
    """`node` with every string that is exactly a placeholder replaced by its value."""
    if isinstance(node, dict):
        return {k: fill(v, values, where) for k, v in node.items()}
    if isinstance(node, list):
        return [fill(v, values, where) for v in node]
    if isinstance(node, str) and PLACEHOLDER.fullmatch(node):
        if node not in values:
            raise SuiteError(f"{where}: unknown placeholder {node} (known: {', '.join(sorted(values))})")
        return values[node]
    return node


def check_suite(raw: Any, where: str) -> None:
    """Raise SuiteError unless `raw` has a name, a known meta.frame, and named expectations with a severity."""
    if not isinstance(raw, dict) or not raw.get("name") or (raw.get("meta") or {}).get("frame") not in FRAMES:
        raise SuiteError(f"{where}: a suite needs 'name' and 'meta.frame' (one of {', '.join(FRAMES)})")
    names = [(e.get("meta") or {}).get("name") for e in raw.get("expectations", [])]
    for i, e in enumerate(raw.get("expectations", [])):
        if not names[i] or e.get("severity") not in SEVERITIES:
            raise SuiteError(f"{where}: expectation {i} ({e.get('type')}) needs meta.name and severity critical|warning")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SuiteError(f"{where}: duplicate expectation names {dup}")


def build_suites(raw_suites: dict[str, dict], p: ValidateParams, policies: Policies) -> list[gx.ExpectationSuite]:
    """GX suites from raw suite JSON, placeholders filled from `p` and `policies`."""
    values = placeholder_values(p, policies)
    suites = []
    for where, raw in raw_suites.items():
        check_suite(raw, where)
        try:
            suites.append(gx.ExpectationSuite(**fill(raw, values, where)))
        except (TypeError, ValueError) as exc:  # GX rejects unknown types and kwargs (pydantic errors)
            raise SuiteError(f"{where}: {exc}") from exc
    return suites


def normalise(text: object) -> str:
    """Lower-cased, whitespace collapsed: how prompts are compared for duplicates and eval overlap."""
    return " ".join(str(text).lower().split())


def column(df: pd.DataFrame, name: str) -> pd.Series:
    """`df[name]`, or all nulls when the column is missing (the schema expectation then reports it)."""
    return df[name] if name in df else pd.Series(None, index=df.index, dtype=object)


def build_frames(curated: pd.DataFrame, evals: pd.DataFrame, policies: Policies) -> dict[str, pd.DataFrame]:
    """The frames the suites validate (by `meta.frame`): curated rows + derived columns, coverage, eval rows."""
    curated = curated.copy()
    eval_norm = column(evals, "prompt").dropna().map(normalise)
    eval_ids = dict(zip(eval_norm, column(evals, "id")[eval_norm.index]))
    curated["prompt_norm"] = column(curated, "prompt").map(normalise, na_action="ignore")
    curated["eval_overlap"] = curated["prompt_norm"].map(eval_ids)  # the eval id it equals, else null
    adv = curated[column(curated, "adversarial").eq(True)]
    counts = adv.groupby([column(adv, "policy"), column(adv, "use_case")]).size().to_dict()
    cells = [{"id": f"{p} x {u}", "policy": p, "use_case": u, "rows": int(counts.get((p, u), 0))} for p, u in policies.cells]
    return {"curated": curated, "coverage": pd.DataFrame(cells), "eval": evals}
