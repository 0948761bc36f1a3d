"""Prefect flows that run alignflow's DVC stages on a schedule (no stage logic lives here)."""

import os

# The ephemeral server's telemetry heartbeat needs the internet and logs an ERROR without it (alignflow
# runs offline by default). Set PREFECT_SERVER_ANALYTICS_ENABLED=true to send it.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
