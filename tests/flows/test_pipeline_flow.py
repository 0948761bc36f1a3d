"""The Prefect flows on a tiny DVC project, against a real temporary Prefect server (prefect_test_harness).

Stages here are a few lines of Python each (the real stages are covered by tests/test_pipeline.py); what is
tested is the orchestration: DVC's DAG order, DVC deciding what is stale, retries only for transient
failures, the DAG stopping at a failed stage, and the artifacts read back through the Prefect API.
"""

import importlib
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `flows` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

# One script for every stage: it appends its name to ran.log (not a DVC output) and does its step.
STEP = textwrap.dedent("""\
    import json, os, signal, sys
    from pathlib import Path

    name = sys.argv[1]
    with open("ran.log", "a") as f:
        f.write(name + "\\n")
    if name == "prepare":
        Path("prepared.txt").write_text(Path("raw.txt").read_text().upper())
    elif name == "validate":
        rows = Path("prepared.txt").read_text().split()
        if "BAD" in rows:  # like validate's critical expectation: fails the same way every time
            sys.exit("ERROR critical expectation failed: row 'BAD' in prepared.txt")
        Path("validate.json").write_text(json.dumps({"passed": True, "rows": len(rows)}))
    elif name == "train":
        if Path("kill-train-once").exists():  # like the OOM killer: the next attempt may well succeed
            Path("kill-train-once").unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        Path("model.txt").write_text("weights")
        Path("train.json").write_text(json.dumps({"train_loss_last": 0.25, "steps": 3}))
""")

# Listed out of DAG order on purpose: the flow must take its order from DVC's graph, not the file.
DVC_YAML = textwrap.dedent("""\
    stages:
      train:
        cmd: python step.py train
        deps: [prepared.txt, validate.json, step.py]
        outs: [model.txt]
        metrics:
          - train.json:
              cache: false
      validate:
        cmd: python step.py validate
        deps: [prepared.txt, step.py]
        metrics:
          - validate.json:
              cache: false
      prepare:
        cmd: python step.py prepare
        deps: [raw.txt, step.py]
        outs: [prepared.txt]
""")


def fastapi_accepts_body_extra() -> bool:
    """prefect 3.8's server declares `Body(..., min_items=1)`; fastapi 0.155 removed Body's **extra."""
    from fastapi import Body

    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(Body).parameters.values())


FASTAPI_PIN = ("prefect 3.8's server needs fastapi>=0.139,<0.151: from 0.151 its API rejects the null filters "
               "prefect's own clients send (422), and from 0.155 it does not start (Body(min_items=...))")


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    """flows.pipeline and flows.reevaluate, talking to a temporary Prefect server; nothing in ~/.prefect."""
    if not fastapi_accepts_body_extra():
        pytest.fail(f"the installed fastapi cannot start the Prefect server. {FASTAPI_PIN}")
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))  # read when prefect is first imported
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.setenv("PREFECT_SERVER_UI_ENABLED", "false")
        # Server loops these tests never need (schedules, automations, late runs...): a faster start on 2 cores.
        for service in ("SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP",
                        "TRIGGERS", "REPOSSESSOR", "CLEANUP_RECONCILER"):
            mp.setenv(f"PREFECT_SERVER_SERVICES_{service}_ENABLED", "false")
        for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
            mp.delenv(name, raising=False)
        from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        # In case prefect was imported before this fixture, the same settings again (the harness's
        # server subprocess inherits them); the harness puts its SQLite database in a temporary folder.
        with temporary_settings(updates={PREFECT_HOME: home, PREFECT_SERVER_ANALYTICS_ENABLED: False}):
            with prefect_test_harness(server_startup_timeout=120):  # 12-30 s on 2 busy cores
                yield importlib.import_module("flows.pipeline"), importlib.import_module("flows.reevaluate")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "step.py").write_text(STEP)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "raw.txt").write_text("alpha\nbeta\n")
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    return tmp_path


def ran(project: Path) -> list[str]:
    log = project / "ran.log"
    return log.read_text().split() if log.exists() else []


def run_flow(fn, **params):
    """(state, summary or the exception, flow_run_id) of one flow run."""
    state = fn(**params, return_state=True)
    return state, state.result(raise_on_failure=False), state.state_details.flow_run_id


def api_records(flow_run_id):
    """Task runs, markdown artifacts and log messages of a flow run, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.objects import Artifact
    from prefect.client.schemas.sorting import LogSort, TaskRunSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs are shipped in batches
    runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=runs, sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=50)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                limit=200, offset=0, sort=LogSort.TIMESTAMP_ASC)
        # read_artifacts() sends null for every filter not given, which the server rejects with fastapi>=0.151.
        response = client.request("POST", "/artifacts/filter",
                                  json={"flow_runs": runs.model_dump(mode="json", exclude_unset=True), "limit": 50})
        response.raise_for_status()
    artifacts = Artifact.model_validate_list(response.json())
    stage_runs = {t.name: t for t in tasks if t.task_key.startswith("run_stage")}
    markdown = {a.key: a.data for a in artifacts if a.type == "markdown"}
    return stage_runs, markdown, [entry.message for entry in logs]


def test_runs_stale_stages_in_dag_order_retrying_a_killed_one_then_is_up_to_date(flows, project):
    pipeline, _ = flows
    (project / "kill-train-once").touch()
    state, summary, run_id = run_flow(pipeline.alignflow_pipeline, repo=str(project), retry_delay_seconds=0.1)
    assert state.is_completed(), summary
    assert summary["dag"] == ["prepare", "validate", "train"]
    assert ran(project) == ["prepare", "validate", "train", "train"]  # train killed once, retried once
    assert [s["outcome"] for s in summary["stages"]] == ["ran", "ran", "ran"]
    assert (project / "dvc.lock").exists() and (project / "model.txt").read_text() == "weights"
    stage_runs, markdown, _ = api_records(run_id)
    assert {name: t.run_count for name, t in stage_runs.items()} == {"prepare": 1, "validate": 1, "train": 2}
    assert all(t.state_type.value == "COMPLETED" for t in stage_runs.values())
    md = markdown[pipeline.ARTIFACT_KEY]
    assert "# alignflow pipeline: succeeded" in md and "| train_loss_last | 0.25 |" in md and "| passed | yes |" in md

    state, summary, run_id = run_flow(pipeline.alignflow_pipeline, repo=str(project))
    assert state.is_completed() and summary["status"] == "up to date" and summary["stages"] == []
    assert len(ran(project)) == 4  # no stage ran again
    stage_runs, markdown, messages = api_records(run_id)
    assert stage_runs == {}
    assert any("up to date" in m for m in messages)
    assert "nothing ran" in markdown[pipeline.ARTIFACT_KEY]  # the summary is still published

    (project / "raw.txt").write_text("alpha\nbeta\ngamma\n")
    state, summary, _ = run_flow(pipeline.alignflow_pipeline, repo=str(project), stages=["prepare"])
    assert state.is_completed() and summary["run"] == ["prepare"]
    assert ran(project)[4:] == ["prepare"]  # validate and train are downstream of the target: not selected


def test_deterministic_failure_stops_the_dag_without_retry(flows, project):
    pipeline, _ = flows
    state, exc, run_id = run_flow(pipeline.alignflow_pipeline, repo=str(project), stages=["nope"])
    assert state.is_failed() and isinstance(exc, pipeline.PipelineFailed) and "unknown stage" in str(exc)
    assert "FAILED before any stage" in api_records(run_id)[1][pipeline.ARTIFACT_KEY] and ran(project) == []

    (project / "raw.txt").write_text("alpha\nbad\n")
    state, exc, run_id = run_flow(pipeline.alignflow_pipeline, repo=str(project), stages=["train"],
                                  retry_delay_seconds=0.1)  # the target and everything upstream of it
    assert state.is_failed() and isinstance(exc, pipeline.PipelineFailed)
    assert ran(project) == ["prepare", "validate"]  # validate ran once; train never started
    assert exc.summary["failed"]["stage"] == "validate" and exc.summary["failed"]["transient"] is False
    assert exc.summary["not_run"] == ["train"]
    stage_runs, markdown, messages = api_records(run_id)
    assert stage_runs["validate"].run_count == 1 and "train" not in stage_runs
    assert any("critical expectation failed" in m for m in messages)  # the stage's output is in the run log
    assert "FAILED at `validate`" in markdown[pipeline.ARTIFACT_KEY]


def test_reevaluate_publishes_the_report_and_fails_on_regression(flows, tmp_path):
    _, reevaluate = flows

    def stand_in(report: dict) -> list[str]:  # in place of `alignflow reevaluate`: writes the report
        return [sys.executable, "-c", f"import json; json.dump({report!r}, open('reevaluate.json', 'w'))"]

    gate = {"name": "safe_response_rate", "observed": 0.9, "threshold": 0.8, "reason": ""}
    report = {"model_name": "alignflow-smollm2", "version": 3, "gates": [{**gate, "passed": True}]}
    state, summary, run_id = run_flow(reevaluate.alignflow_reevaluate, repo=str(tmp_path),
                                      command=stand_in(report), report="reevaluate.json")
    assert state.is_completed() and summary["still_passes"] is True
    _, markdown, _ = api_records(run_id)
    assert "champion still passes" in markdown[reevaluate.ARTIFACT_KEY]

    report["gates"] = [{**gate, "observed": 0.5, "passed": False, "reason": "below threshold"}]
    state, exc, run_id = run_flow(reevaluate.alignflow_reevaluate, repo=str(tmp_path),
                                  command=stand_in(report), report="reevaluate.json")
    assert state.is_failed() and isinstance(exc, reevaluate.ChampionRegressed)
    _, markdown, _ = api_records(run_id)
    assert "| safe_response_rate | FAIL | 0.5 | 0.8 | below threshold |" in markdown[reevaluate.ARTIFACT_KEY]

    broken = [sys.executable, "-c", "import sys; sys.exit('alignflow: error: no champion')"]
    state, exc, run_id = run_flow(reevaluate.alignflow_reevaluate, repo=str(tmp_path), command=broken,
                                  report="reevaluate.json", retry_delay_seconds=0.1)
    assert state.is_failed() and exc.transient is False and "no champion" in str(exc)
    assert "FAILED" in api_records(run_id)[1][reevaluate.ARTIFACT_KEY]


def test_deployments_carry_the_cron_schedules(flows):
    deploy = importlib.import_module("flows.deploy")
    deployments = deploy.build_deployments(repo=str(REPO), pipeline_cron="0 2 * * *", reevaluate_cron="0 3 * * 1")
    crons = {d.name: [s.schedule.cron for s in d.schedules] for d in deployments}
    assert crons == {"nightly": ["0 2 * * *"], "weekly": ["0 3 * * 1"]}
    assert all(d.parameters["repo"] == str(REPO) for d in deployments)
    assert [d.entrypoint for d in deployments] == ["flows.pipeline.alignflow_pipeline",
                                                   "flows.reevaluate.alignflow_reevaluate"]
