"""Serve alignflow's two flows on cron schedules from this repository: `python -m flows.deploy`.

Deployments `alignflow-pipeline/nightly` and `alignflow-reevaluate/weekly` are registered with the
Prefect API (PREFECT_API_URL) and this long-running process runs their scheduled runs itself, one at a
time, in this environment (`prefect serve`-style; see docs/ORCHESTRATION.md for the work pool + worker
alternative). Stopping it pauses the schedules; starting it again resumes them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIPELINE_CRON = "0 2 * * *"  # every night at 02:00
REEVALUATE_CRON = "0 3 * * 1"  # Mondays at 03:00, after that night's pipeline run


def build_deployments(repo: str, pipeline_cron: str, reevaluate_cron: str, timezone: str = "UTC") -> list:
    """The two RunnerDeployments (flows referenced by module path, `flows.pipeline...`, from the checkout root)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.pipeline import alignflow_pipeline
    from flows.reevaluate import alignflow_reevaluate

    # paused=False: (re)starting the serve process resumes schedules that stopping it paused.
    common = {"entrypoint_type": EntrypointType.MODULE_PATH, "parameters": {"repo": repo}, "tags": ["alignflow"],
              "paused": False}
    return [
        alignflow_pipeline.to_deployment(
            "nightly", schedule=Cron(pipeline_cron, timezone=timezone),
            description="dvc repro of the stale alignflow stages, in DAG order, with a summary artifact.", **common),
        alignflow_reevaluate.to_deployment(
            "weekly", schedule=Cron(reevaluate_cron, timezone=timezone),
            description="Re-evaluate the champion model on the current eval sets.", **common),
    ]


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.splitlines()[0])
    p.add_argument("--pipeline-cron", default=env("ALIGNFLOW_PIPELINE_CRON", PIPELINE_CRON),
                   help="cron of the pipeline run (env ALIGNFLOW_PIPELINE_CRON; default: %(default)r)")
    p.add_argument("--reevaluate-cron", default=env("ALIGNFLOW_REEVALUATE_CRON", REEVALUATE_CRON),
                   help="cron of the champion re-evaluation (env ALIGNFLOW_REEVALUATE_CRON; default: %(default)r)")
    p.add_argument("--timezone", default=env("ALIGNFLOW_SCHEDULE_TIMEZONE", "UTC"),
                   help="IANA time zone of both crons (env ALIGNFLOW_SCHEDULE_TIMEZONE; default: %(default)s)")
    p.add_argument("--repo", default=env("ALIGNFLOW_REPO", str(REPO)),
                   help="the DVC project the runs work in (env ALIGNFLOW_REPO; default: this checkout)")
    p.add_argument("--dry-run", action="store_true", help="print the deployments and exit without serving")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    repo = str(Path(args.repo).resolve())
    deployments = build_deployments(repo, args.pipeline_cron, args.reevaluate_cron, args.timezone)
    if args.dry_run:
        for d in deployments:
            print(f"{d.flow_name}/{d.name}: {d.entrypoint} cron {d.schedules[0].schedule.cron!r} "
                  f"({args.timezone}) parameters {d.parameters}")
        return
    from prefect import serve

    serve(*deployments, limit=1)  # one run at a time: both flows write the same repository and MLflow store


if __name__ == "__main__":
    main()
