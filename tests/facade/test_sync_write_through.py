"""The blocking API's write-through ``add_metrics``, on both engines.

On SQLite it writes in the calling thread, on that thread's own connection, when
nothing needs the event loop (``AsyncRun.add_metrics_nowait``); otherwise, and
on PostgreSQL, it goes through the loop. Either way: committed when the call
returns (``runs.time_updated`` included), inside ``with client:`` part of that
block's transaction, a missing run raises RunNotFound, a closed client
ClientClosed, and many threads at once lose nothing.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from support.helpers import read_raw

import sqltrack
import sqltrack_sync

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def sync_client(client_kwargs):
    client = sqltrack_sync.Client(**client_kwargs)
    yield client
    client.close()


def as_datetime(value) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def test_each_call_is_committed_with_the_run_touch(sync_client, client_kwargs) -> None:
    run = sqltrack_sync.Experiment(sync_client, name="w").get_run()
    for step in range(5):
        updated = T0 + timedelta(seconds=step)
        run.add_metrics({"loss": step / 4, "acc": 1.0}, step=step, updated=updated)
        # read at once, from outside sqltrack: the row and the touch are there
        assert read_raw(client_kwargs, "SELECT loss FROM metrics WHERE run_id = %s AND step = %s",
                        (run.id, step)) == [(step / 4,)]
        (touched,), = read_raw(client_kwargs, "SELECT time_updated FROM runs WHERE id = %s",
                               (run.id,))
        assert as_datetime(touched) == updated
    run.add_metrics({"loss": float("nan"), "note": "x", "when": T0}, step=9)
    (loss, note, when), = read_raw(client_kwargs,
                                   "SELECT loss, note, \"when\" FROM metrics WHERE run_id = %s "
                                   "AND step = 9", (run.id,))
    assert str(float(loss)) == "nan" and note == "x" and as_datetime(when) == T0


def test_inside_a_block_the_write_is_part_of_its_transaction(sync_client, client_kwargs) -> None:
    run = sqltrack_sync.Experiment(sync_client, name="b").get_run()
    run.add_metrics({"loss": 1.0}, step=0)
    with pytest.raises(RuntimeError), sync_client:
        run.add_metrics({"loss": 2.0}, step=1)
        raise RuntimeError("roll back")
    assert read_raw(client_kwargs, "SELECT step FROM metrics WHERE run_id = %s",
                    (run.id,)) == [(0,)]


def test_missing_run_and_closed_client(client_kwargs) -> None:
    client = sqltrack_sync.Client(**client_kwargs)
    run = sqltrack_sync.Experiment(client, name="m").get_run()
    run.add_metrics({"loss": 1.0}, step=0)
    p = "?" if client.engine == "sqlite" else "%s"
    client.execute(f"DELETE FROM metrics WHERE run_id = {p}", [run.id])
    client.execute(f"DELETE FROM runs WHERE id = {p}", [run.id])
    with pytest.raises(sqltrack.RunNotFound):
        run.add_metrics({"loss": 2.0}, step=1)
    client.close()
    with pytest.raises(sqltrack.ClientClosed):
        run.add_metrics({"loss": 3.0}, step=2)


def test_threads_write_through_at_once(sync_client, client_kwargs) -> None:
    experiment = sqltrack_sync.Experiment(sync_client, name="t")
    runs = [experiment.get_run() for _ in range(6)]
    runs[0].add_metrics({"loss": 0.0}, step=0)
    errors: list[BaseException] = []

    def write(run) -> None:
        try:
            for step in range(1, 101):
                run.add_metrics({"loss": float(step)}, step=step)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    for run in runs:
        (count,), = read_raw(client_kwargs,
                             "SELECT count(*) FROM metrics WHERE run_id = %s AND step > 0",
                             (run.id,))
        assert count == 100


async def test_nowait_never_blocks_an_event_loop(client, client_kwargs) -> None:
    """On a running loop, write-through ``add_metrics_nowait`` does nothing (False)."""
    run = await (await sqltrack.AsyncExperiment.create(client, name="n")).get_run()
    await run.add_metrics({"loss": 1.0}, step=0)
    assert run.add_metrics_nowait({"loss": 2.0}, step=1) is False
    assert read_raw(client_kwargs, "SELECT step FROM metrics WHERE run_id = %s",
                    (run.id,)) == [(0,)]
