"""Policies and use cases, read once from the policies file; every other place asks this module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

BENIGN = "none"  # the policy label of benign rows


class PoliciesError(ValueError):
    """The policies file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class Policies:
    """Policy keys with their definitions, use-case keys, and the safe-response style."""

    definitions: dict[str, str]
    use_cases: dict[str, str]
    titles: dict[str, str]
    safe_response_style: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.definitions)

    @property
    def labels(self) -> tuple[str, ...]:
        """Valid `policy` values of a row: every policy plus 'none'."""
        return (*self.definitions, BENIGN)

    @property
    def cells(self) -> list[tuple[str, str]]:
        """Every policy x use case cell that tuning data must cover."""
        return [(p, u) for p in self.definitions for u in self.use_cases]


def load_policies(path: str | Path) -> Policies:
    """Read and check the policies file (policies: {key: {definition, title}}, use_cases: {key: ...})."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PoliciesError(f"{path}: cannot read policies file: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("policies"), dict) or not isinstance(raw.get("use_cases"), dict):
        raise PoliciesError(f"{path}: expected mappings 'policies' and 'use_cases'")
    definitions, titles = {}, {}
    for key, spec in raw["policies"].items():
        if key == BENIGN:
            raise PoliciesError(f"{path}: policy key '{BENIGN}' is reserved for benign rows")
        if not isinstance(spec, dict) or not str(spec.get("definition", "")).strip():
            raise PoliciesError(f"{path}: policy '{key}' needs a non-empty 'definition'")
        definitions[key] = " ".join(str(spec["definition"]).split())
        titles[key] = str(spec.get("title", key))
    use_cases = {}
    for key, spec in raw["use_cases"].items():
        text = spec.get("definition", "") if isinstance(spec, dict) else spec
        use_cases[key] = " ".join(str(text or "").split())
    if not definitions or not use_cases:
        raise PoliciesError(f"{path}: at least one policy and one use case are required")
    return Policies(definitions, use_cases, titles, " ".join(str(raw.get("safe_response_style", "")).split()))
