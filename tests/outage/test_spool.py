"""The local spool (sqltrack.outage.spool): rows and run updates kept on disk, replayed in order.

Both engines as targets; the spool itself is always a SQLite file. Checked: every
kind of value comes back as logged, replay is in order (the later value of a
``(step, progress)`` wins, columns merge), replaying twice changes nothing, an
entry the target refuses is kept with its error, two targets in one file stay
apart, and ``sqltrack sync --spool PATH`` replays into the targets the file names
or into the database given (``--dry-run`` writes nothing). (Outages themselves:
tests/faults/test_faults_outage.py.)
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from datetime import datetime, timezone

import pytest

import sqltrack
from sqltrack.metrics import layout
from sqltrack.outage.replay import apply_run_update, replay
from sqltrack.outage.spool import Spool, target_key

WHEN = datetime(2026, 5, 4, 3, 2, 1, tzinfo=timezone.utc)


def row(names, values, kinds, step, progress=0.0, updated=WHEN) -> tuple:
    """A checked metric row; ``append_rows(run_id, rows)`` names the run (0 here)."""
    return layout.make(tuple(names), tuple(kinds), updated, 0, step, progress, values)


def as_dt(value):
    return datetime.fromisoformat(value) if isinstance(value, str) else value


async def test_replay_writes_every_kind_of_value_in_order_once(client, run, tmp_path):
    spool = Spool.for_settings(client.settings, tmp_path / "spool.db")
    assert spool.target == target_key(client.settings)
    assert not spool.exists() and spool.pending() == 0  # nothing made before first use
    spool.append_rows(run.id, [
        row(["loss", "ok", "n", "phase", "at"], [0.5, True, 7, "warm", WHEN],
            ["float", "bool", "int", "str", "datetime"], 0),
        row(["loss"], [math.nan], ["float"], 1, 0.5),
        row(["loss", "n"], [1.0, None], ["float", None], 2),
        row(["loss"], [0.25], ["float"], 0),  # the same key again: the later value wins
        row(["n"], [2**40], ["int"], 2),  # another column of an existing key: merged
    ])
    spool.append_run_update(run.id, status="COMPLETED", time_updated=WHEN)
    assert spool.pending() == 6 and spool.pending(run.id) == 6
    result = await replay(spool, client)
    assert (result.rows, result.run_updates, result.refused, result.left) == (5, 1, 0, 0)
    assert spool.pending() == 0 and spool.integrity_check() == "ok"
    rows = await client.query(
        "SELECT step, progress, loss, ok, n, phase, at FROM metrics WHERE run_id = %s "
        "ORDER BY step, progress", [run.id])
    assert [r[:2] for r in rows] == [(0, 0.0), (1, 0.5), (2, 0.0)]
    assert rows[0][2] == 0.25 and bool(rows[0][3]) is True and rows[0][4] == 7
    assert rows[0][5] == "warm" and as_dt(rows[0][6]) == WHEN
    assert math.isnan(float(rows[1][2]))  # SQLite keeps NaN as the text "NaN"
    assert rows[2][2:5] == (1.0, None, 2**40)
    status, updated = (await client.query(
        "SELECT status, time_updated FROM runs WHERE id = %s", [run.id]))[0]
    assert status == "COMPLETED" and as_dt(updated) == WHEN
    again = await replay(spool, client)
    assert (again.rows, again.run_updates) == (0, 0)


async def test_refused_entries_are_kept_with_their_error(client, experiment, tmp_path):
    kept = await experiment.get_run()
    gone = await experiment.get_run()
    spool = Spool.for_settings(client.settings, tmp_path / "spool.db")
    spool.append_rows(gone.id, [row(["loss"], [1.0], ["float"], 0)])
    spool.append_rows(kept.id, [row(["loss"], [2.0], ["float"], 0)])
    await client.query("DELETE FROM runs WHERE id = %s", [gone.id])
    result = await replay(spool, client)
    assert (result.rows, result.refused) == (1, 1), result
    assert str(gone.id) in result.errors[0]
    assert [(seq_run, "does not exist" in error) for _, seq_run, error in spool.refused()] == [
        (gone.id, True)]
    assert spool.pending() == 0  # refused entries are out of later replays, not deleted
    assert await client.query("SELECT loss FROM metrics WHERE run_id = %s", [kept.id]) == [
        (2.0,)]


async def test_two_targets_share_a_file_and_stay_apart(client, run, tmp_path):
    path = tmp_path / "spool.db"
    mine = Spool.for_settings(client.settings, path)
    other = Spool(path, "sqlite:/elsewhere.db", "sqlite", {"dbpath": "/elsewhere.db"})
    other.append_rows(run.id, [row(["loss"], [9.0], ["float"], 5)])
    mine.append_rows(run.id, [row(["loss"], [1.0], ["float"], 1)])
    assert (await replay(mine, client)).rows == 1
    assert other.pending() == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM spool_entries").fetchone() == (1,)


async def test_run_update_of_a_missing_run_is_refused(client):
    with pytest.raises(sqltrack.RunNotFound):
        await apply_run_update(client, 424242, {"status": "COMPLETED"})


def test_sqltrack_sync_spool_replays_into_each_target_or_the_one_given(
    client_kwargs, tmp_path, capsys, clean_env
):
    """``sqltrack sync --spool PATH``: its own targets, ``--dry-run``, connection options."""
    from sqltrack import cli
    from sqltrack.config import resolve

    async def new_run() -> int:
        client = sqltrack.AsyncClient(**client_kwargs)
        try:
            experiment = await sqltrack.AsyncExperiment.create(client, name="cli")
            return (await experiment.get_run()).id
        finally:
            await client.close()

    async def stored(run_id: int) -> tuple[list[tuple], str]:
        client = sqltrack.AsyncClient(**client_kwargs)
        try:
            rows = await client.query("SELECT step, loss FROM metrics WHERE run_id = %s "
                                      "ORDER BY step", [run_id])
            status = await client.query("SELECT status FROM runs WHERE id = %s", [run_id])
            return [tuple(r) for r in rows], status[0][0]
        finally:
            await client.close()

    run_id = asyncio.run(new_run())
    path = tmp_path / "spool.db"
    spool = Spool.for_settings(resolve(**client_kwargs), path)
    spool.append_rows(run_id, [row(["loss"], [float(s)], ["float"], s) for s in range(3)])
    spool.append_run_update(run_id, status="COMPLETED", time_updated=WHEN)
    spool.close()
    assert cli.main(["sync", "--spool", str(path), "--dry-run"]) == 0
    assert "4 spooled entries" in capsys.readouterr().out
    async def untouched() -> list[tuple]:
        client = sqltrack.AsyncClient(**client_kwargs)
        try:
            return await client.query("SELECT (SELECT count(*) FROM metrics), status FROM "
                                      "runs WHERE id = %s", [run_id])
        finally:
            await client.close()

    assert [tuple(r) for r in asyncio.run(untouched())] == [(0, "PENDING")]  # a dry run
    assert cli.main(["sync", "--spool", str(path)]) == 0  # the target the spool names
    out = capsys.readouterr().out
    assert "3 metric rows and 1 run updates" in out and "0 left" in out, out
    assert asyncio.run(stored(run_id)) == ([(0, 0.0), (1, 1.0), (2, 2.0)], "COMPLETED")
    spool.append_rows(run_id, [row(["loss"], [9.0], ["float"], 3)])
    spool.close()
    options = (["--engine", "sqlite", "--dbpath", client_kwargs["dbpath"]]
               if client_kwargs["engine"] == "sqlite" else
               ["--engine", "postgres", "--schema", client_kwargs["schema"],
                *[f"-o{k}={v}" for k, v in client_kwargs.items() if k not in ("engine",
                                                                              "schema")]])
    assert cli.main([*options, "sync", "--spool", str(path)]) == 0  # the database given
    assert asyncio.run(stored(run_id))[0][-1] == (3, 9.0)
    capsys.readouterr()
    assert cli.main(["sync", "--spool", str(path), "--from", "x.db"]) != 0
    assert "not both" in capsys.readouterr().err
