"""``sqltrack.sync``: any engine to any engine, exact copies, incremental and idempotent re-syncs.

Each test fills a source through the API, syncs, and compares the two databases row
by row with the raw drivers after id remapping (``transfer_helpers.differences``).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import shlex
import sqlite3
from datetime import datetime
from typing import Any

import pytest
from support.helpers import read_raw
from support.transfer_helpers import (
    differences,
    fill_metrics,
    metric_row_count,
    populate,
    run_map,
    sync_databases,
)

import sqltrack
import sqltrack.copy.transfer
import sqltrack_sync
from sqltrack.cli import main
from sqltrack.cli.transfer import ProgressBar
from sqltrack.copy.transfer import SyncProgress

PAIRS = [("sqlite", "sqlite"), ("sqlite", "postgres"), ("postgres", "sqlite"),
         ("postgres", "postgres")]


async def _filled(kw: dict, **options: Any) -> list[int]:
    client = sqltrack.AsyncClient(**kw)
    try:
        return await populate(client, **options)
    finally:
        await client.close()


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS)
async def test_sync_copies_everything_exactly(database, source_engine, target_engine):
    source_kw, target_kw = database(source_engine), database(target_engine)
    await _filled(source_kw, runs=4)
    seen: list[SyncProgress] = []
    summary = await sync_databases(source_kw, target_kw, progress=seen.append)
    assert differences(source_kw, target_kw) == []
    assert (summary.experiments_created, summary.runs_created, summary.runs_updated) == (3, 4, 0)
    assert summary.metric_rows == metric_row_count(source_kw) == metric_row_count(target_kw)
    assert summary.links_added == 2
    assert seen[-1].runs_done == seen[-1].runs_total == 4
    assert seen[-1].rows_done == seen[-1].rows_total == summary.metric_rows
    assert "copied 3 new and 0 changed experiments, 4 new" in str(summary)


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS[:3])
async def test_resync_copies_only_what_changed(database, source_engine, target_engine):
    source_kw, target_kw = database(source_engine), database(target_engine)
    ids = await _filled(source_kw, runs=3, steps=40)
    await sync_databases(source_kw, target_kw)
    again = await sync_databases(source_kw, target_kw)
    assert (again.runs_created, again.runs_updated, again.runs_unchanged) == (0, 0, 3)
    assert (again.metric_rows, again.links_added, again.experiments_created) == (0, 0, 0)
    assert again.experiments_updated == 0

    client = sqltrack.AsyncClient(**source_kw)
    try:
        run = await sqltrack.AsyncRun.create(client, run_id=ids[0])
        await fill_metrics(run, 40, 45)  # 5 rows appended
        await run.add_metrics({"val": 0.25}, step=3)  # merged into an old row
        await run.add_metrics({"loss": 2.0}, step=-1)  # inserted before every row
        await run.add_tags("late")
        await run.remove_args("name")
        await run.set_status("COMPLETED")
        other = await sqltrack.AsyncRun.create(client, run_id=ids[1])
        await other.add_metrics({"loss": 9.5}, step=10, updated=None)  # overwritten in place
        await sqltrack.experiment_add_tags(client, other.experiment_id, "hard")
        await sqltrack.run_add_link(client, ids[1], "compares", ids[2])
    finally:
        await client.close()
    changed = await sync_databases(source_kw, target_kw)
    assert differences(source_kw, target_kw) == []
    assert (changed.runs_created, changed.runs_updated, changed.runs_unchanged) == (0, 2, 1)
    assert changed.metric_rows == 5 + 1 + 1 + 1
    assert (changed.links_added, changed.experiments_updated) == (1, 1)
    assert (await sync_databases(source_kw, target_kw)).metric_rows == 0


@pytest.mark.parametrize("target_engine", ["sqlite", "postgres"])
async def test_sync_while_the_source_run_is_still_logging(database, target_engine):
    source_kw, target_kw = database("sqlite"), database(target_engine)
    client = sqltrack.AsyncClient(**source_kw)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="live")
        run = await experiment.get_run()
        await run.start()
        done = asyncio.Event()
        started = [0]

        async def log() -> None:
            for step in range(3000):
                await run.add_metrics({"loss": 1.0 / (step + 1), "seen": step}, step=step)
                if step % 100 == 0:
                    await run.add_metrics({"val": step / 3000}, step=step // 2)  # older rows
                    while started[0] < step // 600:  # each 600 steps: another sync under way
                        await asyncio.sleep(0.001)
            await run.stop()
            done.set()

        task = asyncio.create_task(log())
        while not done.is_set():
            started[0] += 1
            await sync_databases(source_kw, target_kw)
        await task
    finally:
        await client.close()
    await sync_databases(source_kw, target_kw)
    syncs = started[0]
    assert syncs >= 4  # the logger waited for them
    assert differences(source_kw, target_kw) == []


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS[:3])
async def test_dry_run_counts_and_writes_nothing(database, source_engine, target_engine):
    source_kw, target_kw = database(source_engine), database(target_engine)
    ids = await _filled(source_kw, runs=3)
    dry = await sync_databases(source_kw, target_kw, dry_run=True)
    assert read_raw(target_kw, "SELECT COUNT(*) FROM runs") == [(0,)]
    assert not read_raw(source_kw, "SELECT 1 FROM runs WHERE id < 0")  # still readable
    tables = ("SELECT name FROM sqlite_master WHERE type = 'table'" if source_engine == "sqlite"
              else "SELECT table_name FROM information_schema.tables "
              "WHERE table_schema = current_schema()")
    assert ("sync_source",) not in read_raw(source_kw, tables)
    real = await sync_databases(source_kw, target_kw)
    assert (dry.runs_created, dry.metric_rows, dry.links_added, dry.experiments_created) == (
        real.runs_created, real.metric_rows, real.links_added, real.experiments_created)
    assert dry.dry_run and "would copy" in str(dry)

    client = sqltrack.AsyncClient(**source_kw)
    try:
        run = await sqltrack.AsyncRun.create(client, run_id=ids[2])
        await fill_metrics(run, 100, 107)
    finally:
        await client.close()
    before = metric_row_count(target_kw)
    dry = await sync_databases(source_kw, target_kw, dry_run=True)
    assert (dry.metric_rows, dry.runs_updated, dry.runs_created) == (7, 1, 0)
    assert metric_row_count(target_kw) == before


@pytest.mark.parametrize("target_engine", ["sqlite", "postgres"])
async def test_two_sources_into_one_target_and_target_edits_kept(database, target_engine):
    first_kw, second_kw, target_kw = database("sqlite"), database("sqlite"), database(target_engine)
    await _filled(first_kw, runs=2)
    await _filled(second_kw, runs=3)  # the same experiment names: matched by name
    await asyncio.gather(sync_databases(first_kw, target_kw), sync_databases(second_kw, target_kw))
    first, second = run_map(first_kw, target_kw), run_map(second_kw, target_kw)
    assert len(set(first.values()) | set(second.values())) == 5
    assert read_raw(target_kw, "SELECT COUNT(*) FROM experiments") == [(3,)]
    target = sqltrack.AsyncClient(**target_kw)
    try:  # an edit on the server survives a re-sync that has nothing new for it
        await sqltrack.run_add_tags(target, first[1], "best")
    finally:
        await target.close()
    await sync_databases(first_kw, target_kw)
    tags = read_raw(target_kw, "SELECT tags FROM runs WHERE id = %s", [first[1]])[0][0]
    assert "best" in (tags if isinstance(tags, dict) else json.loads(tags))


#: Edits of old rows that keep every column's count and sum (what the old digest compared).
SUM_PRESERVING_EDITS = {
    "swapped floats": [(5, {"loss": 1.0 / 7}), (6, {"loss": 1.0 / 6})],
    "+x and -x": [(12, {"seen": 12 * 32 + 7}), (13, {"seen": 13 * 32 - 7})],
    "a change too small to move the sum": [(7, {"loss": math.nextafter(1.0 / 8, 1.0)})],
    "swapped booleans": [(7, {"best": False}), (8, {"best": True})],
    "same-length text": [(2, {"phase": "tests"})],
}


@pytest.mark.parametrize("edit", sorted(SUM_PRESERVING_EDITS))
@pytest.mark.parametrize("source_engine", ["sqlite", "postgres"])
async def test_a_resync_copies_every_changed_value(database, source_engine, edit):
    """Changes that leave counts and sums alone, in place, time_updated untouched."""
    source_kw, target_kw = database(source_engine), database("sqlite")
    ids = await _filled(source_kw, runs=1)
    await sync_databases(source_kw, target_kw)
    assert differences(source_kw, target_kw) == []
    client = sqltrack.AsyncClient(**source_kw)
    try:
        for step, values in SUM_PRESERVING_EDITS[edit]:
            await sqltrack.run_add_metrics(client, ids[0], values, step=step, updated=None)
    finally:
        await client.close()
    assert differences(source_kw, target_kw) != []
    summary = await sync_databases(source_kw, target_kw)
    assert summary.metric_rows == len(SUM_PRESERVING_EDITS[edit]), summary
    assert differences(source_kw, target_kw) == []
    assert (await sync_databases(source_kw, target_kw)).metric_rows == 0


async def test_a_new_metric_column_at_an_old_or_a_new_step(database):
    """A column the run starts using: at a new step only the new row is read and
    written; put into an old step, the digest over the old columns no longer holds."""
    source_kw, target_kw = database("sqlite"), database("sqlite")
    ids = await _filled(source_kw, runs=1)
    await sync_databases(source_kw, target_kw)
    client = sqltrack.AsyncClient(**source_kw)
    try:
        await sqltrack.run_add_metrics(client, ids[0], {"lr": 0.1}, step=1000, updated=None)
        new = await sync_databases(source_kw, target_kw)
        await sqltrack.run_add_metrics(client, ids[0], {"lr": 0.2}, step=3, updated=None)
        old = await sync_databases(source_kw, target_kw)
    finally:
        await client.close()
    assert (new.metric_rows, old.metric_rows) == (1, 1)
    assert differences(source_kw, target_kw) == []
    assert (await sync_databases(source_kw, target_kw)).metric_rows == 0


async def test_the_comparison_sees_every_kind_of_difference(database):
    """The checker the other tests rely on: each change to the target is reported."""
    source_kw, target_kw = database("sqlite"), database("sqlite")
    await _filled(source_kw, runs=2)
    await sync_databases(source_kw, target_kw)
    target = run_map(source_kw, target_kw)
    changes = [
        "UPDATE metrics SET loss = 0.5 WHERE run_id = {run} AND step = 7",
        "DELETE FROM metrics WHERE run_id = {run} AND step = 8",
        "UPDATE runs SET status = 'FAILED' WHERE id = {run}",
        "UPDATE runs SET args = '{{}}' WHERE id = {run}",
        "DELETE FROM run_links",
        "UPDATE experiments SET comment = 'x' WHERE name = 'mnist'",
    ]
    for change in changes:
        copy = dict(target_kw, dbpath=target_kw["dbpath"] + ".copy")
        with sqlite3.connect(target_kw["dbpath"]) as conn:
            conn.execute("VACUUM INTO ?", [copy["dbpath"]])
        with sqlite3.connect(copy["dbpath"]) as conn:
            conn.execute(change.format(run=target[1]))
        assert differences(source_kw, copy), change
        os.remove(copy["dbpath"])


async def test_a_database_is_never_synced_into_itself(database):
    kw = database("sqlite")
    await _filled(kw, runs=1)
    with pytest.raises(sqltrack.copy.transfer.SyncError, match="same database"):
        await sync_databases(kw, dict(kw))
    assert read_raw(kw, "SELECT COUNT(*) FROM runs") == [(1,)]


async def test_experiment_already_on_the_target_keeps_its_comment(database):
    source_kw, target_kw = database("sqlite"), database("postgres")
    await _filled(source_kw, runs=1)  # made first: its time_created is the earlier
    target = sqltrack.AsyncClient(**target_kw)
    try:
        experiment = await sqltrack.AsyncExperiment.create(target, name="mnist")
        await experiment.set_comment("the server's words")
        await experiment.add_tags("server")
    finally:
        await target.close()
    summary = await sync_databases(source_kw, target_kw)
    ((comment, tags, created),) = read_raw(
        target_kw, "SELECT comment, tags, time_created FROM experiments WHERE name = 'mnist'")
    assert comment == "the server's words"
    assert set(tags) == {"server", "vision", "small"}
    ((source_created,),) = read_raw(
        source_kw, "SELECT time_created FROM experiments WHERE name = 'mnist'")
    assert created == datetime.fromisoformat(source_created)  # the earlier of the two
    assert (summary.experiments_created, summary.experiments_updated) == (2, 1)


async def test_a_run_deleted_on_the_target_is_copied_again(database):
    source_kw, target_kw = database("sqlite"), database("sqlite")
    await _filled(source_kw, runs=2)
    await sync_databases(source_kw, target_kw)
    gone = run_map(source_kw, target_kw)[1]
    with sqlite3.connect(target_kw["dbpath"]) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("DELETE FROM runs WHERE id = ?", [gone])
    summary = await sync_databases(source_kw, target_kw)
    assert (summary.runs_created, summary.runs_unchanged) == (1, 1)
    assert differences(source_kw, target_kw) == []


@pytest.mark.parametrize("target_engine", ["sqlite", "postgres"])
async def test_a_column_of_a_type_sqltrack_does_not_manage(database, target_engine):
    source_kw, target_kw = database("sqlite"), database(target_engine)
    ids = await _filled(source_kw, runs=1)
    with sqlite3.connect(source_kw["dbpath"]) as conn:
        conn.execute("ALTER TABLE metrics ADD COLUMN weights BLOB")
        conn.execute("UPDATE metrics SET weights = x'00ff' WHERE run_id = ? AND step = 1", ids)
    with pytest.raises(sqltrack.copy.transfer.SyncError, match="weights"):
        await sync_databases(source_kw, target_kw)


@pytest.mark.parametrize("target_engine", ["sqlite", "postgres"])
async def test_two_syncs_at_once_while_the_source_logs(database, target_engine):
    source_kw, target_kw = database("sqlite"), database(target_engine)
    client = sqltrack.AsyncClient(**source_kw)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="live")
        runs = [await experiment.get_run() for _ in range(2)]
        done = asyncio.Event()
        started = [0, 0]  # syncs begun by each of the two syncing tasks

        async def log() -> None:
            for step in range(1500):
                for number, run in enumerate(runs):
                    await run.add_metrics({"loss": step + number / 10}, step=step, updated=None)
                    if step % 50 == 7:  # out of order: a value merged into an older row
                        await run.add_metrics({"val": float(step)}, step=step // 3, updated=None)
                while min(started) < step // 300:  # both syncs keep overlapping the logging
                    await asyncio.sleep(0.001)
            done.set()

        async def keep_syncing(me: int) -> int:
            while not done.is_set():
                started[me] += 1
                await sync_databases(source_kw, target_kw, page_rows=97)
            return started[me]

        results = await asyncio.gather(log(), keep_syncing(0), keep_syncing(1))
    finally:
        await client.close()
    await sync_databases(source_kw, target_kw)
    assert min(results[1:]) >= 4, results  # the logger waited for them
    assert differences(source_kw, target_kw) == []
    assert read_raw(target_kw, "SELECT COUNT(*) FROM runs") == [(2,)]


# -- the command and the blocking twin ---------------------------------------------
def _settings(kw: dict[str, Any]) -> str:
    """``--from`` / ``--to`` text for client keyword arguments."""
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in kw.items())


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS[:3])
def test_sqltrack_sync_command(database, source_engine, target_engine, capsys, clean_env):
    source_kw, target_kw = database(source_engine), database(target_engine)
    asyncio.run(_filled(source_kw, runs=2))
    argv = ["sync", "--from", _settings(source_kw), "--to", _settings(target_kw)]
    assert main([*argv, "--dry-run"]) == 0
    assert "would copy 3 new and 0 changed experiments, 2 new" in capsys.readouterr().out
    assert read_raw(target_kw, "SELECT COUNT(*) FROM runs") == [(0,)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "copied 3 new and 0 changed experiments, 2 new and 0 changed runs" in out
    assert "sqltrack: sync from: " in err and "sqltrack: sync to: " in err
    assert differences(source_kw, target_kw) == []
    assert main([*argv, "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["runs_unchanged"], summary["metric_rows"]) == (2, 0)


def test_sqltrack_sync_from_a_file_into_the_usual_database(database, capsys, clean_env):
    source_kw, target_kw = database("sqlite"), database("sqlite")
    asyncio.run(_filled(source_kw, runs=1))
    argv = ["--engine", "sqlite", "--dbpath", target_kw["dbpath"], "sync", "--from",
            source_kw["dbpath"], "--page-rows", "7"]
    assert main(argv) == 0
    assert differences(source_kw, target_kw) == []
    capsys.readouterr()
    assert main(["sync", "--from", "missing.db", "--to", target_kw["dbpath"]]) == 1
    assert "'missing.db' is no file" in capsys.readouterr().err
    assert main(["--engine", "sqlite", "--dbpath", target_kw["dbpath"], "sync"]) == 1
    assert "sync needs --from SOURCE" in capsys.readouterr().err


def test_progress_bar_on_a_terminal_and_in_a_log():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen, log = Terminal(), io.StringIO()
    for out in (screen, log):
        bar = ProgressBar(out, interval=0.0)
        bar(SyncProgress(1, 4, 250, 1000))
        bar(SyncProgress(4, 4, 1000, 1000))
        bar.close()
    assert screen.getvalue().startswith("\rsqltrack sync: [#######.......")
    assert screen.getvalue().endswith("100% 1,000/1,000 rows, run 4/4\n")
    assert log.getvalue().splitlines()[0].endswith(" 25% 250/1,000 rows, run 1/4")


@pytest.mark.parametrize("target_engine", ["sqlite", "postgres"])
def test_blocking_sync(database, target_engine):
    source_kw, target_kw = database("sqlite"), database(target_engine)
    asyncio.run(_filled(source_kw, runs=2))
    source, target = sqltrack.Client(**source_kw), sqltrack.Client(**target_kw)
    try:
        summary = sqltrack.sync(source, target)  # the dual function, given blocking clients
        again = sqltrack_sync.sync(source, target, dry_run=True)
        with pytest.raises(TypeError, match="target must be a blocking Client"):
            sqltrack.sync(source, sqltrack.AsyncClient(**target_kw))
    finally:
        source.close()
        target.close()
    assert (summary.runs_created, again.runs_unchanged, again.metric_rows) == (2, 2, 0)
    assert differences(source_kw, target_kw) == []
