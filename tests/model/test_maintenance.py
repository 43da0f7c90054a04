"""mark_stale_runs: RUNNING runs that stopped updating get a final status, on both engines."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import sqltrack
from sqltrack.model.maintenance import mark_stale_runs

HOURS_AGO = datetime.now(timezone.utc) - timedelta(hours=2)


async def statuses(client) -> dict[int, str]:
    return dict(await client.query("SELECT id, status FROM runs ORDER BY id"))


async def new_run(experiment, *, status="RUNNING", updated=None, started=None, created=None):
    """A run with the given status and times (None leaves a time NULL / at its default)."""
    run = await experiment.get_run()
    if status == "RUNNING":
        await run.start(started=None, updated=None)
    else:
        await run.set_status(status)
    if created is not None:
        await run.set_created(created)
    if started is not None:
        await run.set_started(started)
    if updated is not None:
        await run.set_updated(updated)
    return run.id


async def test_marks_only_running_runs_without_recent_update(client, experiment):
    now = datetime.now(timezone.utc)
    stale_updated = await new_run(experiment, updated=HOURS_AGO, started=HOURS_AGO)
    fresh = await new_run(experiment, updated=now, started=HOURS_AGO)
    stale_started = await new_run(experiment, started=HOURS_AGO)  # time_updated NULL
    stale_created = await new_run(experiment, created=HOURS_AGO)  # started and updated NULL
    fresh_created = await new_run(experiment)  # created just now, never started
    finished = await new_run(experiment, status="COMPLETED", updated=HOURS_AGO)
    pending = await new_run(experiment, status="PENDING", created=HOURS_AGO)

    marked = await mark_stale_runs(client, timedelta(hours=1))

    assert marked == [stale_updated, stale_started, stale_created]
    assert await statuses(client) == {
        stale_updated: "NODE_FAIL",
        fresh: "RUNNING",
        stale_started: "NODE_FAIL",
        stale_created: "NODE_FAIL",
        fresh_created: "RUNNING",
        finished: "COMPLETED",
        pending: "PENDING",
    }
    # The last sign of life is kept: time_updated is not touched.
    rows = await client.query("SELECT time_updated FROM runs WHERE id = %s", [stale_started])
    assert rows == [(None,)]
    assert await mark_stale_runs(client, timedelta(hours=1)) == []


async def test_seconds_status_and_experiment_filter(client, experiment):
    other = await sqltrack.AsyncExperiment.create(client, name="other-experiment")
    mine = await new_run(experiment, updated=HOURS_AGO)
    theirs = await new_run(other, updated=HOURS_AGO)

    marked = await mark_stale_runs(client, 3600.0, status="PREEMPTED", experiment_id=other.id)

    assert marked == [theirs]
    assert (await statuses(client))[mine] == "RUNNING"
    assert (await statuses(client))[theirs] == "PREEMPTED"
    assert await mark_stale_runs(client, 3600) == [mine]
    assert (await statuses(client))[mine] == "NODE_FAIL"


async def test_age_boundary(client, experiment):
    run_id = await new_run(experiment, updated=HOURS_AGO)
    assert await mark_stale_runs(client, timedelta(hours=3)) == []
    assert await mark_stale_runs(client, timedelta(days=365_000_000)) == []  # before year 1
    assert await mark_stale_runs(client, 0) == [run_id]


@pytest.mark.parametrize(
    ("older_than", "status", "error"),
    [
        (3600, "DEAD", ValueError),
        (3600, "running ", ValueError),
        (-1, "NODE_FAIL", ValueError),
        (float("nan"), "NODE_FAIL", ValueError),
        (timedelta(seconds=-5), "NODE_FAIL", ValueError),
        ("1h", "NODE_FAIL", TypeError),
        (True, "NODE_FAIL", TypeError),
    ],
)
async def test_bad_arguments_change_nothing(client, experiment, older_than, status, error):
    run_id = await new_run(experiment, updated=HOURS_AGO)
    with pytest.raises(error):
        await mark_stale_runs(client, older_than, status=status)
    assert (await statuses(client))[run_id] == "RUNNING"


def test_exported_from_package():
    # sqltrack's functions serve both clients: given an AsyncClient they hand back the
    # core coroutine itself (forwarded, not copied).
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=":memory:")
    coroutine = sqltrack.mark_stale_runs(client, 3600)
    try:
        assert coroutine.cr_code is mark_stale_runs.__code__
    finally:
        coroutine.close()
    assert "mark_stale_runs" in sqltrack.__all__
