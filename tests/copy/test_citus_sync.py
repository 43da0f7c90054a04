"""``sqltrack sync`` into a Citus coordinator (marker ``citus``; see tests/schema/test_citus.py):
a node's SQLite file with runs, metrics (columns and, past the column budget, long rows),
links and rewound runs arrives equal; a re-sync copies what changed; sync's own tables
``sync_runs`` and ``sync_experiments`` stay on the coordinator without a foreign key to the
distributed ``runs`` (see the PostgreSQL dialect's ``side_table_steps``), and a run
deleted on the target is copied again."""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

import pytest
from support.citus import citus_tables, keys_to_runs, raw, rows_per_worker
from support.transfer_helpers import differences, populate, run_map, sync_databases

import sqltrack
from sqltrack.cli import main

pytestmark = pytest.mark.citus


def _settings(kw: dict[str, Any]) -> str:
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in kw.items())


async def _node_file(kw: dict[str, Any]) -> list[int]:
    """A node's file: 3 runs of every kind of metric (some long: a budget of 3 columns),
    links, a rewound run and its fork."""
    client = sqltrack.AsyncClient(**kw, metric_columns=3)
    try:
        ids = await populate(client, runs=3, steps=30)
        run = await sqltrack.AsyncRun.create(client, run_id=ids[0])
        await run.rewind(20)
        for step in range(21, 25):
            await run.add_metrics({"loss": 1.0 / step, "late": step}, step=step)
        await run.fork(22)
        return ids
    finally:
        await client.close()


def test_sync_from_a_file_into_the_coordinator(tmp_path, citus_kwargs, capsys, clean_env):
    node = {"engine": "sqlite", "dbpath": str(tmp_path / "node.db")}
    ids = asyncio.run(_node_file(node))
    assert main(["sync", "--from", node["dbpath"], "--to", _settings(citus_kwargs),
                 "--no-progress"]) == 0
    assert "copied 3 new and 0 changed experiments, 5 new and 0 changed runs" in \
        capsys.readouterr().out
    assert differences(node, citus_kwargs) == []
    tables = citus_tables(citus_kwargs)
    assert "sync_runs" not in tables and "sync_experiments" not in tables  # coordinator's
    assert tables["runs"][:2] == ("distributed", "id")
    assert keys_to_runs(citus_kwargs, "sync_runs") == []
    assert sum(rows_per_worker(citus_kwargs, "metrics").values()) == raw(
        citus_kwargs, "SELECT count(*) FROM metrics")[0][0] > 0

    # The node logs on, rewinds again; the re-sync copies that (and removes what the
    # rewind moved away), a third copies nothing.
    async def more() -> None:
        client = sqltrack.AsyncClient(**node, metric_columns=3)
        try:
            run = await sqltrack.AsyncRun.create(client, run_id=ids[1])
            await run.rewind(10)
            await run.add_metrics({"loss": 0.5, "extra_long": "x"}, step=11)
            await sqltrack.run_add_link(client, ids[1], "compares", ids[2])
        finally:
            await client.close()

    asyncio.run(more())
    again = asyncio.run(sync_databases(node, citus_kwargs))
    assert differences(node, citus_kwargs) == []
    assert again.rows_rewound > 0 and again.runs_updated == 1
    assert (again.runs_created, again.links_added) == (1, 2)  # the rewind's new run, its link
    third = asyncio.run(sync_databases(node, citus_kwargs))
    assert (third.metric_rows, third.runs_created, third.links_added) == (0, 0, 0)


async def test_a_run_deleted_on_the_coordinator_is_copied_again(tmp_path, citus_kwargs):
    node = {"engine": "sqlite", "dbpath": str(tmp_path / "node.db")}
    ids = await _node_file(node)
    await sync_databases(node, citus_kwargs)
    # A run no link points to (run_links.to_id has no foreign key on Citus: links to a
    # deleted run stay; README "Many machines").
    gone = run_map(node, citus_kwargs)[ids[1]]
    raw(citus_kwargs, "DELETE FROM runs WHERE id = %s", [gone])
    summary = await sync_databases(node, citus_kwargs)
    assert (summary.runs_created, summary.runs_unchanged) == (1, 4)
    assert gone not in run_map(node, citus_kwargs).values()
    assert differences(node, citus_kwargs) == []
