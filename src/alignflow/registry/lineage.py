"""Where a registered model came from, as flat string MLflow tags: DVC hashes, params, code, base model, judges.

dvc.lock is the record: after `dvc repro` it holds the md5 of every stage's deps and outs and the params
values each stage read. The register stage runs after its upstream stages were locked, so these hashes
describe exactly the files it registers. A value dvc.lock does not have is tagged "unknown", never guessed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

import yaml

log = logging.getLogger(__name__)
UNKNOWN = "unknown"


def read_lock(path: str | Path) -> dict:
    """dvc.lock as a dict ({} when there is none, e.g. a stage run outside DVC)."""
    path = Path(path)
    if not path.exists():
        log.warning("%s not found: lineage hashes are unknown (run the pipeline with `dvc repro`)", path)
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def path_md5(lock: dict, path: str) -> str:
    """The md5 dvc.lock records for `path` (an out of one stage, or a dep), or 'unknown'."""
    want = Path(path).as_posix().rstrip("/")
    found = UNKNOWN
    for stage in (lock.get("stages") or {}).values():
        for kind in ("outs", "deps"):
            for entry in stage.get(kind) or []:
                if Path(entry.get("path", "")).as_posix().rstrip("/") == want and entry.get("md5"):
                    if kind == "outs":  # the producing stage's record wins over a consumer's
                        return str(entry["md5"])
                    found = str(entry["md5"])
    return found


def params_digests(lock: dict) -> dict[str, str]:
    """sha256 of the params values each stage read, per stage (DVC records values, not hashes)."""
    out = {}
    for name, stage in (lock.get("stages") or {}).items():
        values = stage.get("params")
        if values:
            out[name] = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
    return out


def files_digest(folder: str | Path, pattern: str = "*.jsonl") -> str:
    """sha256 over the names and bytes of the files in a folder: what an eval-set comparison keys on."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob(pattern)):
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def eval_key(eval_dir: str | Path, primary_judge: str) -> str:
    """Metrics are comparable across versions only on the same eval sets judged by the same judge."""
    return f"{files_digest(eval_dir)[:16]}:{primary_judge}"


def git_commit(cwd: str | Path = ".") -> tuple[str, str]:
    """(HEAD commit, 'true'/'false' whether tracked files changed) or ('unknown', 'unknown') outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return UNKNOWN, UNKNOWN
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=30)
        return head.stdout.strip(), str(bool(dirty.stdout.strip())).lower() if dirty.returncode == 0 else UNKNOWN
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN, UNKNOWN


def lineage_tags(cfg, evaluation: dict, lock: dict) -> dict[str, str]:
    """Flat string tags: lineage.* (data, params, code, base model, judges) and metrics.* (headline)."""
    paths = cfg.paths
    tags = {f"lineage.{key}_md5": path_md5(lock, path) for key, path in (
        ("curated", paths.curated), ("eval", paths.eval_dir), ("policies", paths.policies), ("raw_sft", paths.raw_sft),
        ("tuned", paths.tuned), ("validate_report", paths.validate_report), ("evaluate_report", paths.evaluate_report))}
    tags.update({f"lineage.params.{stage}_sha256": d for stage, d in params_digests(lock).items()})
    tags["lineage.git_commit"], tags["lineage.git_dirty"] = git_commit()
    adapter = Path(paths.tuned) / "adapter" / "adapter.json"
    meta = json.loads(adapter.read_text()) if adapter.exists() else {}
    tags["lineage.base_model"] = str(meta.get("base", UNKNOWN))
    tags["lineage.base_sha256"] = str(meta.get("base_sha256", UNKNOWN))
    tags["lineage.tune_steps"] = str(meta.get("steps", UNKNOWN))
    judges = Path(paths.evaluate_dir) / "judges.json"
    for name, c in (json.loads(judges.read_text()) if judges.exists() else {}).items():
        tags[f"lineage.judge.{name}.version"] = str(c.get("version", UNKNOWN))
    primary = str(evaluation.get("primary_judge", UNKNOWN))
    tags["lineage.primary_judge"] = primary
    tags["lineage.eval_key"] = eval_key(paths.eval_dir, primary)
    tags.update({f"metrics.{k}": str(v) for k, v in (evaluation.get("headline") or {}).items()})
    return tags
