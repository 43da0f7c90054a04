"""``sqltrack sync`` of rewound and forked runs: a node's SQLite file to a server (and to
another file), before and after the first sync; the target equals the source, links and
rows, and keeps no row a rewind moved away."""

from __future__ import annotations

import pytest
from support.helpers import read_raw
from support.transfer_helpers import differences, run_map, sync_databases

import sqltrack


async def _log(run: sqltrack.AsyncRun, steps, scale: float) -> None:
    for step in steps:
        await run.add_metrics({"loss": scale / (step + 1), "lr": 0.1}, step=step)
        if step % 5 == 0:
            await run.add_metrics({"acc": scale * step}, step=step, progress=0.5)


def steps_of(kw, run_id: int) -> list[int]:
    return [r[0] for r in read_raw(kw, "SELECT step FROM metrics WHERE run_id = %s "
                                       "ORDER BY step, progress", [run_id])]


@pytest.mark.parametrize("target_engine", ["postgres", "sqlite"])
async def test_rewound_and_forked_runs_sync_with_links_and_rows(database, target_engine):
    node, server = database("sqlite"), database(target_engine)
    client = sqltrack.AsyncClient(**node)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="preempted")
        run = await exp.get_run()
        await run.set_args({"lr": 0.1})
        await _log(run, range(16), 1.0)
        # Offline before any sync: a rewind, the restart, a fork.
        await run.rewind(10)
        await _log(run, range(11, 20), 2.0)
        child = await run.fork(12)
    finally:
        await client.close()
    first = await sync_databases(node, server)
    assert differences(node, server) == []
    assert first.runs_created == 3 and first.rows_rewound == 0

    client = sqltrack.AsyncClient(**node)
    try:
        run = await sqltrack.AsyncRun.create(client, run_id=run.id)
        # After the first sync: rewound again, below rows the server already has.
        await run.rewind(14)
        await _log(run, range(15, 18), 3.0)  # the restart stops at 17: 18, 19 must go
        await (await sqltrack.AsyncRun.create(client, run_id=child.id)).rewind(11)
    finally:
        await client.close()
    second = await sync_databases(node, server)
    assert differences(node, server) == []
    mapping = run_map(node, server)
    assert steps_of(server, mapping[run.id])[-1] == 17
    assert second.rows_rewound == 6 + 1  # the run: 15, 15 @ 0.5, 16..19; the fork: 12
    kinds = {(r[1]) for r in read_raw(server, "SELECT from_id, kind, to_id FROM run_links")}
    assert kinds == {"rewound_from", "forked_from"}
    assert len(read_raw(server, "SELECT * FROM run_links")) == 4

    # Nothing new: a third sync changes nothing and removes nothing.
    third = await sync_databases(node, server)
    assert (third.rows_rewound, third.metric_rows, third.runs_created) == (0, 0, 0)
    assert differences(node, server) == []
