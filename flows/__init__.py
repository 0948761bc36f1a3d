"""Prefect flows that run alignflow's DVC stages on a schedule (no stage logic lives here)."""
