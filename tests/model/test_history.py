"""Rewind and fork (``run_rewind`` / ``run_fork``, ``AsyncRun.rewind/fork``, ``Run.rewind/fork``)
and steps logged out of order, on both engines, read back with the raw driver."""

from __future__ import annotations

import json

import pytest
from support.helpers import json_value, read_raw

import sqltrack
from sqltrack import AsyncRun

pytestmark = pytest.mark.usefixtures("clean_env")


def history(kw, run_id: int) -> list[tuple]:
    """Every metric row of a run, as (step, progress, <each metric column>)."""
    return [tuple(r[1:]) for r in read_raw(
        kw, "SELECT * FROM metrics WHERE run_id = %s ORDER BY step, progress", [run_id])]


def links(kw) -> set[tuple]:
    return {tuple(r) for r in read_raw(kw, "SELECT from_id, kind, to_id FROM run_links")}


def run_row(kw, run_id: int) -> tuple:
    (row,) = read_raw(kw, "SELECT experiment_id, status, args, extras FROM runs WHERE id = %s",
                      [run_id])
    return row[0], row[1], json_value(row[2]), json_value(row[3])


async def log_attempt(run: AsyncRun, steps, scale: float = 1.0) -> None:
    """Training rows, an evaluation every 4 steps (acc), a note and a progress row at 6."""
    for step in steps:
        await run.add_metrics({"loss": scale / (step + 1)}, step=step)
        if step % 4 == 0:
            await run.add_metrics({"acc": scale * step / 10}, step=step)
        if step == 6:
            await run.add_metrics({"note": "half", "loss": scale}, step=6, progress=0.5)


async def test_rewind_moves_rows_past_step_to_a_linked_run(client, client_kwargs, run):
    kw = client_kwargs
    await run.set_args({"lr": 0.1})
    await log_attempt(run, range(10))
    before = history(kw, run.id)

    new_id = await sqltrack.run_rewind(client, run.id, 5)

    assert history(kw, run.id) == [r for r in before if r[0] <= 5]
    moved = [r for r in before if r[0] > 5]
    assert len(moved) == 5  # 6, 6 @ 0.5, 7, 8, 9
    assert history(kw, new_id) == moved
    assert links(kw) == {(new_id, "rewound_from", run.id)}
    exp, status, args, extras = run_row(kw, new_id)
    assert (exp, status, args) == (run.experiment_id, "CANCELLED", {"lr": 0.1})
    assert extras["rewound_from"]["step"] == 5
    _, _, _, extras = run_row(kw, run.id)
    (entry,) = extras["rewinds"]
    assert (entry["step"], entry["rows"]) == (5, 5)
    assert entry["time"] == extras["rewinds"][0]["time"]


async def test_restart_from_checkpoint_equals_an_uninterrupted_run(client, client_kwargs,
                                                                    experiment):
    """Crash at step 14 after a checkpoint at 8; the first attempt logged an evaluation
    (step 10, progress 0.9) the restart does not: after the rewind no stale point stays."""
    kw = client_kwargs
    plain = await experiment.get_run()
    await log_attempt(plain, range(20))

    resumed = await experiment.get_run()
    await log_attempt(resumed, range(15), scale=3.0)  # the first attempt, its own values
    await resumed.add_metrics({"acc": 0.99}, step=10, progress=0.9)
    await resumed.rewind(8)
    await log_attempt(resumed, range(9, 20))  # the second attempt from the checkpoint
    # Past the checkpoint the history is the uninterrupted run's; up to it, the same rows
    # with the first attempt's values (training up to the checkpoint happened once).
    after = [r for r in history(kw, resumed.id) if r[0] > 8]
    assert after == [r for r in history(kw, plain.id) if r[0] > 8]
    assert [r[:2] for r in history(kw, resumed.id)] == [r[:2] for r in history(kw, plain.id)]
    ((branch, kind, to),) = links(kw)
    assert (kind, to) == ("rewound_from", resumed.id)
    assert [r[0] for r in history(kw, branch)] == [9, 10, 10, 11, 12, 13, 14]


async def test_rewind_twice_and_with_nothing_past(client, client_kwargs, run):
    kw = client_kwargs
    await log_attempt(run, range(4))
    assert await sqltrack.run_rewind(client, run.id, 10) is None
    first = await sqltrack.run_rewind(client, run.id, 2)
    await log_attempt(run, range(3, 6))
    second = await sqltrack.run_rewind(client, run.id, 1)
    assert first != second and None not in (first, second)
    assert [r[0] for r in history(kw, run.id)] == [0, 1]
    assert [r[0] for r in history(kw, second)] == [2, 3, 4, 5]
    rewinds = run_row(kw, run.id)[3]["rewinds"]
    assert [(e["step"], e["rows"]) for e in rewinds] == [(10, 0), (2, 1), (1, 4)]
    assert links(kw) == {(first, "rewound_from", run.id), (second, "rewound_from", run.id)}


async def test_rewind_keeps_other_extras_and_is_one_transaction(client, client_kwargs, run):
    kw = client_kwargs
    await run.set_extras({"keep": 1})
    await log_attempt(run, range(6))
    before = history(kw, run.id)
    runs_before = read_raw(kw, "SELECT COUNT(*) FROM runs")
    with pytest.raises(RuntimeError, match="after the rewind"):
        async with client:
            await run.rewind(2)
            raise RuntimeError("after the rewind")
    assert history(kw, run.id) == before
    assert read_raw(kw, "SELECT COUNT(*) FROM runs") == runs_before
    assert links(kw) == set()
    assert run_row(kw, run.id)[3] == {"keep": 1}
    await run.rewind(2)
    assert run_row(kw, run.id)[3]["keep"] == 1


async def test_rewind_and_fork_of_a_missing_run_raise(client, client_kwargs, run):
    with pytest.raises(sqltrack.RunNotFound):
        await sqltrack.run_rewind(client, run.id + 100, 1)
    with pytest.raises(sqltrack.RunNotFound):
        await sqltrack.run_fork(client, run.id + 100, 1)
    with pytest.raises(TypeError):
        await sqltrack.run_rewind(client, run.id, "3")
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM runs") == [(1,)]


async def test_fork_copies_history_up_to_step_and_args(client, client_kwargs, run):
    kw = client_kwargs
    await run.set_args({"lr": 0.1, "layers": [1, 2]})
    await run.set_tags("parent-only")
    await log_attempt(run, range(10))
    before = history(kw, run.id)

    child = await run.fork(6)
    assert isinstance(child, AsyncRun) and child.id != run.id
    assert child.experiment_id == run.experiment_id
    assert history(kw, child.id) == [r for r in before if r[0] <= 6]
    assert history(kw, run.id) == before
    exp, status, args, extras = run_row(kw, child.id)
    assert (exp, status, args) == (run.experiment_id, "PENDING", {"lr": 0.1, "layers": [1, 2]})
    assert extras["forked_from"]["step"] == 6
    assert read_raw(kw, "SELECT tags FROM runs WHERE id = %s", [child.id]) == [(None,)]
    assert links(kw) == {(child.id, "forked_from", run.id)}

    # The fork goes on with its own history; the parent is untouched.
    await child.add_metrics({"loss": 42.0}, step=7)
    assert history(kw, child.id)[-1] == (7, 0.0, 42.0, None, None)
    assert history(kw, run.id) == before

    whole = await sqltrack.run_fork(client, run.id)
    assert history(kw, whole.id) == before
    assert run_row(kw, whole.id)[3]["forked_from"]["step"] == 9
    empty = await (await AsyncRun.create(client, run.experiment_id)).fork()
    assert history(kw, empty.id) == []
    assert run_row(kw, empty.id)[3]["forked_from"]["step"] is None


async def test_fork_is_one_transaction(client, client_kwargs, run):
    kw = client_kwargs
    await log_attempt(run, range(5))
    with pytest.raises(RuntimeError):
        async with client:
            child = await run.fork(3)
            assert len(history(kw, run.id)) == len(history(kw, run.id))
            raise RuntimeError(child.id)
    assert read_raw(kw, "SELECT COUNT(*) FROM runs") == [(1,)]
    assert read_raw(kw, "SELECT COUNT(*) FROM metrics WHERE run_id <> %s", [run.id]) == [(0,)]
    assert links(kw) == set()


async def test_buffered_rows_are_written_before_a_rewind(client_kwargs, experiment):
    kw = client_kwargs
    client = sqltrack.AsyncClient(**kw, buffered=True, flush_interval=3600)
    try:
        run = await AsyncRun.create(client, experiment.id)
        await log_attempt(run, range(8))
        await run.rewind(3)
        assert [r[0] for r in history(kw, run.id)] == [0, 1, 2, 3]
        ((branch, _, _),) = links(kw)
        assert [r[0] for r in history(kw, branch)] == [4, 5, 6, 6, 7]
        fork = await run.fork()
        assert [r[0] for r in history(kw, fork.id)] == [0, 1, 2, 3]
    finally:
        await client.close()


async def test_steps_out_of_order_are_stored_and_the_later_value_wins(client, client_kwargs,
                                                                       run):
    """Unlike W&B, which drops a step lower than the last one it saw, every row is kept."""
    kw = client_kwargs
    for step, loss in ((10, 1.0), (3, 2.0), (7, 3.0), (3, 4.0), (0, 5.0), (10, 6.0)):
        await run.add_metrics({"loss": loss}, step=step)
    rows = read_raw(kw, "SELECT step, loss FROM metrics WHERE run_id = %s ORDER BY step",
                    [run.id])
    assert [tuple(r) for r in rows] == [(0, 5.0), (3, 4.0), (7, 3.0), (10, 6.0)]


# -- the blocking API ----------------------------------------------------------------------------
def test_blocking_rewind_and_fork(client_kwargs):
    kw = client_kwargs
    client = sqltrack.Client(**kw)
    try:
        exp = sqltrack.Experiment(client, name="blocking-history")
        run = sqltrack.Run(client, exp.id)
        run.set_args({"seed": 1})
        for step in range(6):
            run.add_metrics({"loss": float(step)}, step=step)
        assert run.rewind(3) is run
        ((branch, kind, to),) = links(kw)
        assert (kind, to) == ("rewound_from", run.id)
        assert [r[0] for r in read_raw(kw, "SELECT step FROM metrics WHERE run_id = %s "
                                       "ORDER BY step", [branch])] == [4, 5]
        child = run.fork(2)
        assert isinstance(child, sqltrack.Run) and child.id not in (run.id, branch)
        assert child.experiment_id == exp.id
        assert json_value(read_raw(kw, "SELECT args FROM runs WHERE id = %s",
                                   [child.id])[0][0]) == {"seed": 1}
        assert [r[0] for r in read_raw(kw, "SELECT step FROM metrics WHERE run_id = %s "
                                       "ORDER BY step", [child.id])] == [0, 1, 2]
        assert sqltrack.run_rewind(client, child.id, 0) is not None
        other = sqltrack.run_fork(client, run.id, 1)
        assert isinstance(other, sqltrack.Run)
        extras = json_value(read_raw(kw, "SELECT extras FROM runs WHERE id = %s",
                                     [run.id])[0][0])
        assert json.loads(json.dumps(extras))["rewinds"][0]["rows"] == 2
    finally:
        client.close()


def long_history(kw, run_id: int) -> list[tuple]:
    """Every long-stored value of a run (``metric_values``), as (step, progress, name, value)."""
    return [tuple(r) for r in read_raw(
        kw, "SELECT step, progress, name, value FROM metric_values WHERE run_id = %s "
        "ORDER BY step, progress, name", [run_id])]


async def test_rewind_and_fork_move_long_stored_metrics_too(client_kwargs):
    """With no column budget every metric lives in ``metric_values``: a rewind moves
    those values past the step, a fork copies those up to it."""
    kw = client_kwargs  # the raw reads' connection
    client = sqltrack.AsyncClient(**kw, metric_columns=0)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="long-history")
        run = await experiment.get_run()
        for step in range(6):
            await run.add_metrics({"grad_norm": step / 10}, step=step)
        assert history(kw, run.id) == []  # nothing in metrics: all long
        before = long_history(kw, run.id)
        assert len(before) == 6

        new_id = await sqltrack.run_rewind(client, run.id, 3)
        assert long_history(kw, run.id) == [r for r in before if r[0] <= 3]
        assert long_history(kw, new_id) == [r for r in before if r[0] > 3]
        _, _, _, extras = run_row(kw, run.id)
        assert extras["rewinds"][0]["rows"] == 2

        fork = await run.fork(step=1)
        assert long_history(kw, fork.id) == [r for r in before if r[0] <= 1]
        last = await run.fork()  # up to the run's last step, wherever it is stored
        _, _, _, extras = run_row(kw, last.id)
        assert extras["forked_from"]["step"] == 3
    finally:
        await client.close()
