"""Reading raw SFT JSON Lines: every line becomes a row or a quarantine record naming file, line and field."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from alignflow.data.policies import BENIGN, Policies

log = logging.getLogger(__name__)

FIELDS: dict[str, type] = {
    "id": str,
    "messages": list,
    "policy": str,
    "use_case": str,
    "adversarial": bool,
    "source": str,
}
OPTIONAL_FIELDS: dict[str, type] = {"formulation": str}
FORMULATIONS = ("direct", "role_play", "hypothetical", "step_by_step", "polite_pretext", "code_request")


@dataclass(frozen=True)
class Dropped:
    """One quarantined row: where it came from, which filter dropped it and why."""

    file: str
    line: int
    reason: str
    filter: str
    detail: str
    raw: str
    id: str | None = None
    field: str | None = None

    def where(self) -> str:
        at = f"{self.file}:{self.line}"
        return f"{at}: field '{self.field}': {self.detail}" if self.field else f"{at}: {self.detail}"

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def check_row(obj: Any, policies: Policies) -> tuple[str, str | None, str] | None:
    """None if the row meets the SFT contract, else (reason, field, detail) of the first problem."""
    if not isinstance(obj, dict):
        return "malformed_json", None, f"expected a JSON object, got {type(obj).__name__}"
    for name, tp in FIELDS.items():
        if name not in obj:
            return "schema", name, f"missing field '{name}'"
        if not isinstance(obj[name], tp) or (tp is not bool and isinstance(obj[name], bool)):
            return "schema", name, f"expected {tp.__name__}, got {type(obj[name]).__name__} {obj[name]!r:.40}"
    for name, tp in OPTIONAL_FIELDS.items():
        if obj.get(name) is not None and not isinstance(obj[name], tp):
            return "schema", name, f"expected {tp.__name__}, got {type(obj[name]).__name__}"
    unknown = sorted(set(obj) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        return "schema", unknown[0], f"unknown field '{unknown[0]}'"
    if not obj["id"].strip():
        return "schema", "id", "empty id"
    messages = obj["messages"]
    if len(messages) < 2:
        return "schema", "messages", f"expected at least a user and an assistant message, got {len(messages)}"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            return "schema", f"messages[{i}]", "expected an object with exactly 'role' and 'content'"
        if m["role"] not in ("system", "user", "assistant"):
            return "schema", f"messages[{i}].role", f"unknown role {m['role']!r:.30}"
        if not isinstance(m["content"], str):
            return "schema", f"messages[{i}].content", f"expected str, got {type(m['content']).__name__}"
        if not m["content"].strip():
            return "empty_content", f"messages[{i}].content", "empty content"
    if messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        return "schema", "messages", "must end with a user message followed by an assistant message"
    if obj["policy"] not in policies.labels:
        return "unknown_policy", "policy", f"unknown policy {obj['policy']!r:.40}"
    if obj["use_case"] not in policies.use_cases:
        return "unknown_use_case", "use_case", f"unknown use case {obj['use_case']!r:.40}"
    if obj["adversarial"] and obj["policy"] == BENIGN:
        return "schema", "policy", f"an adversarial row needs a policy other than '{BENIGN}'"
    if obj.get("formulation") is not None and obj["formulation"] not in FORMULATIONS:
        return "schema", "formulation", f"unknown formulation {obj['formulation']!r:.30}"
    return None


def read_jsonl(
    files: Iterable[Path], policies: Policies, root: Path | None = None
) -> tuple[list[dict], list[Dropped], int]:
    """Parse and check every non-blank line; returns (rows, dropped, rows_in).

    Rows carry `_file` and `_line` for later reports. Duplicate ids keep the first occurrence.
    """
    rows: list[dict] = []
    dropped: list[Dropped] = []
    seen: dict[str, str] = {}
    rows_in = 0
    for path in files:
        name = str(path.relative_to(root)) if root else str(path)
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                rows_in += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    dropped.append(Dropped(name, lineno, "invalid_utf8", "load", f"invalid UTF-8 at byte {exc.start}",
                                           raw.decode("utf-8", errors="replace").rstrip("\n")))
                    continue
                text = text.rstrip("\r\n")
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    dropped.append(Dropped(name, lineno, "malformed_json", "load", f"invalid JSON: {exc.msg} (column {exc.colno})", text))
                    continue
                rid = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
                problem = check_row(obj, policies)
                if problem:
                    reason, field, detail = problem
                    dropped.append(Dropped(name, lineno, reason, "load", detail, text, rid, field))
                    continue
                if rid in seen:
                    dropped.append(Dropped(name, lineno, "duplicate_id", "load", f"id '{rid}' already used at {seen[rid]}", text, rid, "id"))
                    continue
                seen[rid] = f"{name}:{lineno}"
                rows.append({**obj, "formulation": obj.get("formulation"), "_file": name, "_line": lineno, "_raw": text})
    for d in dropped[:20]:
        log.warning("quarantined %s", d.where())
    if len(dropped) > 20:
        log.warning("... and %d more quarantined rows (see the quarantine output)", len(dropped) - 20)
    return rows, dropped, rows_in
