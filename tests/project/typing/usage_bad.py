"""Deliberate misuses of the public API: mypy --strict must report each marked line.

tests/project/test_typing.py checks that every line ending in ``# E: <code>`` is reported
with that error code, so the typed-API check can fail.
"""

from __future__ import annotations

import sqltrack


async def misuses() -> None:
    client = sqltrack.Client(engine="sqlite", dbpath="runs.db")
    run = sqltrack.Run(client, experiment_id=1)
    sqltrack.run_add_tags(client, run.id, "best")
    ids = sqltrack.mark_stale_runs(client, 3600)
    ids.append("three")  # E: arg-type
    run.add_metrics("not a dict")  # E: arg-type
    name: str = run.id  # E: assignment
    await sqltrack.run_add_tags(client, run.id, "best")  # E: misc
    async_client = sqltrack.AsyncClient(engine="sqlite", dbpath="runs.db")
    sqltrack.run_add_tags(async_client, run.id, "best")  # E: unused-coroutine
    sqltrack.run_add_tags(client, "not an id", "best")  # E: call-overload
    sqltrack.Experiment(client, name=3)  # E: arg-type
    del name
