"""Reading raw SFT JSON Lines: every line becomes a row or a quarantine record naming file, line and field."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal, NamedTuple, Optional, Sequence

import msgspec
import numpy as np
import pyarrow as pa

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
_KNOWN_FIELDS = frozenset(FIELDS) | frozenset(OPTIONAL_FIELDS)
_MESSAGE_KEYS = frozenset(("role", "content"))


class Dropped(NamedTuple):
    """One quarantined row: where it came from, which filter dropped it and why. A NamedTuple: a run
    can drop tens of thousands of rows, and a tuple is built ~3x faster than a frozen dataclass."""

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
        return self._asdict()


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
    unknown = sorted(obj.keys() - _KNOWN_FIELDS)
    if unknown:
        return "schema", unknown[0], f"unknown field '{unknown[0]}'"
    if not obj["id"].strip():
        return "schema", "id", "empty id"
    messages = obj["messages"]
    if len(messages) < 2:
        return "schema", "messages", f"expected at least a user and an assistant message, got {len(messages)}"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.keys() != _MESSAGE_KEYS:
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


class Message(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant"]
    content: str


def row_type(policies: Policies) -> type:
    """The contract's row as a msgspec Struct: exact JSON types, no unknown fields, policy and use case
    among the policies file's. What types cannot say (non-blank id and contents, the last two roles,
    adversarial rows not benign) `_meets_contract` checks."""
    return _row_type(tuple(policies.labels), tuple(policies.use_cases))


@lru_cache(maxsize=16)
def _row_type(labels: tuple[str, ...], use_cases: tuple[str, ...]) -> type:
    fields = [("id", str), ("messages", list[Message]), ("policy", Literal[labels]), ("use_case", Literal[use_cases]),
              ("adversarial", bool), ("source", str), ("formulation", Optional[Literal[FORMULATIONS]], None)]
    return msgspec.defstruct("Row", fields, forbid_unknown_fields=True, module=__name__)


def parse_line(raw: bytes, policies: Policies) -> tuple[Any, str | None, tuple[str, str | None, str] | None]:
    """One non-blank raw line -> (row, id, problem).

    `row` is the parsed row (a `row_type` Struct) when it meets the contract (else None), `id` its id
    when readable, and `problem` (reason, field, detail) why it does not. Duplicate ids need the whole
    file: see read_jsonl.
    """
    return line_parser(policies)(raw)


def line_parser(policies: Policies):
    """`parse_line` for many lines. A row that plainly meets the contract takes the fast path: msgspec
    decodes it straight into the typed Struct (checking every type in C; ~3x faster than json.loads
    plus checks in Python). Anything else, invalid UTF-8 included, goes the exact slow path (json and
    `check_row`), which names the problem."""
    row = row_type(policies)
    decode = msgspec.json.Decoder(row).decode

    def parse(raw: bytes) -> tuple[Any, str | None, tuple[str, str | None, str] | None]:
        try:
            obj = decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
            obj = None
        if obj is not None and _meets_contract(obj):
            return obj, obj.id, None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, None, ("invalid_utf8", None, f"invalid UTF-8 at byte {exc.start}")
        try:
            obj = json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            return None, None, ("malformed_json", None, f"invalid JSON: {exc.msg} (column {exc.colno})")
        rid = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
        problem = check_row(obj, policies)
        # A row only json parses (json and msgspec differ on lone surrogates) still meets the contract.
        return (None if problem else msgspec.convert(obj, row)), rid, problem

    return parse


def _meets_contract(row: Any) -> bool:
    """The contract's checks beyond a `row_type` Struct's types: True only if `check_row` finds no
    problem in the row (False: let check_row say which)."""
    messages = row.messages
    if len(messages) < 2 or not row.id.strip() or (row.adversarial and row.policy == BENIGN):
        return False
    for m in messages:
        if not m.content.strip():
            return False
    return messages[-1].role == "assistant" and messages[-2].role == "user"


def raw_text(raw: bytes) -> str:
    """What quarantine keeps of a raw line: the decoded text without its line ending."""
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace").rstrip("\n")


def log_dropped(dropped: list[Dropped]) -> None:
    for d in dropped[:20]:
        log.warning("quarantined %s", d.where())
    if len(dropped) > 20:
        log.warning("... and %d more quarantined rows (see the quarantine output)", len(dropped) - 20)


def read_jsonl(
    files: Iterable[Path], policies: Policies, root: Path | None = None
) -> tuple[list[dict], list[Dropped], int]:
    """Parse and check every non-blank line; returns (rows, dropped, rows_in).

    Rows carry `_file` and `_line` for later reports. Duplicate ids keep the first occurrence.
    The curate stage reads through `read_lines` and checks rows in parallel (alignflow.data.curation);
    this is the same contract, one row at a time.
    """
    rows: list[dict] = []
    dropped: list[Dropped] = []
    seen: dict[str, str] = {}
    rows_in = 0
    parse = line_parser(policies)
    for path in files:
        name = str(path.relative_to(root)) if root else str(path)
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                rows_in += 1
                obj, rid, problem = parse(raw)
                if problem:
                    reason, field, detail = problem
                    dropped.append(Dropped(name, lineno, reason, "load", detail, raw_text(raw), rid, field))
                    continue
                if rid in seen:
                    dropped.append(Dropped(name, lineno, "duplicate_id", "load", f"id '{rid}' already used at {seen[rid]}",
                                           raw_text(raw), rid, "id"))
                    continue
                seen[rid] = f"{name}:{lineno}"
                rows.append({**msgspec.to_builtins(obj), "_file": name, "_line": lineno, "_raw": raw_text(raw)})
    log_dropped(dropped)
    return rows, dropped, rows_in


# bytes.strip() removes exactly these; a line made only of them is blank (not a row).
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[list(b" \t\n\r\x0b\x0c")] = True


def read_lines(files: Sequence[Path], root: Path | None = None) -> tuple[pa.Table, list[str]]:
    """Every non-blank line of `files` as a table, for parsing in parallel: `file` (index into the
    returned names), `line` (1-based number) and `raw` (the line's bytes, newline included).

    Lines are found with numpy on each file's bytes, without a Python object per line.
    """
    names, parts = [], []
    for k, path in enumerate(files):
        names.append(str(path.relative_to(root)) if root else str(path))
        data = Path(path).read_bytes()
        buf = np.frombuffer(data, dtype=np.uint8)
        starts = np.concatenate([[0], np.flatnonzero(buf == 10) + 1])  # 10 = b"\n"
        bounds = np.concatenate([starts, [len(buf)]]) if starts[-1] < len(buf) else starts
        # A line is blank when it has no byte outside bytes.strip()'s set (the newline is in the set).
        # Only lines that start with such a byte can be blank: check those (few) byte by byte.
        solid = ~_ASCII_SPACE[buf[bounds[:-1]]]
        for i in np.flatnonzero(~solid):
            solid[i] = bool(data[bounds[i]:bounds[i + 1]].strip())
        keep = np.flatnonzero(solid)
        lines = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(bounds) - 1,
                                                 [None, pa.py_buffer(bounds.astype(np.int64)), pa.py_buffer(data)])
        if len(keep) < len(lines):  # else zero-copy: the rows are views of `data`
            lines = lines.take(pa.array(keep))
        parts.append(pa.table({"file": pa.array(np.full(len(keep), k, dtype=np.int32)),
                               "line": pa.array(keep + 1, type=pa.int64()), "raw": lines}))
    schema = pa.schema([("file", pa.int32()), ("line", pa.int64()), ("raw", pa.large_binary())])
    return (pa.concat_tables(parts) if parts else schema.empty_table()), names
