"""Team-scale metric storage: columns up to the budget, the long table past it, one view.

Both engines. The column budget (``metric_columns``) makes routing cheap to test: a
budget of 2 or 0 sends every further name to ``metric_values``. The many-names cases
run 20,000 names in CI; ``SQLTRACK_TEST_METRIC_NAMES=100000`` runs the issue's
figure.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import psycopg
import pytest
from support.helpers import ROOT, read_raw

import sqltrack
from sqltrack.errors import MetricTypeError
from sqltrack.read import analysis, queries

#: Distinct names of the many-names test (``SQLTRACK_TEST_METRIC_NAMES``).
METRIC_NAMES = int(os.environ.get("SQLTRACK_TEST_METRIC_NAMES", "20000"))


async def make_run(kwargs, **settings):
    client = sqltrack.AsyncClient(**kwargs, **settings)
    experiment = await sqltrack.AsyncExperiment.create(client, name="storage")
    return client, await experiment.get_run()


async def view_values(client, run_id: int, name: str) -> list[tuple]:
    rows = await client.query(
        "SELECT step, value, value_int, value_bool, value_text, value_time "
        "FROM metric_values_all WHERE run_id = %s AND name = %s ORDER BY step", [run_id, name])
    return [tuple(r) for r in rows]


# -- routing by the budget -------------------------------------------------------------------
async def test_budget_routes_names_past_it_to_the_long_table(client_kwargs):
    client, run = await make_run(client_kwargs, metric_columns=2)
    try:
        when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
        await run.add_metrics({"loss": 0.5, "acc": 1, "lr": 0.1, "ok": True, "note": "hi",
                               "at": when, "bad": float("nan")}, step=0)
        await run.add_metrics({"loss": 0.25, "lr": 2}, step=1)  # an int into a float
        columns = await queries.metric_columns(client)
        assert set(columns) == {"loss", "acc"}
        assert await client.query("SELECT name, kind FROM metric_names ORDER BY name") == [
            ("at", "datetime"), ("bad", "float"), ("lr", "float"), ("note", "str"),
            ("ok", "bool")]
        # the columns as before; the rest through the view, typed
        assert await client.query("SELECT step, loss FROM metrics WHERE run_id = %s "
                                  "ORDER BY step", [run.id]) == [(0, 0.5), (1, 0.25)]
        lr = await view_values(client, run.id, "lr")
        assert [(s, v) for s, v, *_ in lr] == [(0, 0.1), (1, 2.0)]
        acc = await view_values(client, run.id, "acc")
        assert [(s, float(v), i) for s, v, i, *_ in acc] == [(0, 1.0, 1)]
        assert (await view_values(client, run.id, "note"))[0][4] == "hi"
        assert bool((await view_values(client, run.id, "ok"))[0][3]) is True
        # every read surface sees both places
        frame = await analysis.metrics_frame(client, run.id)
        assert list(frame.columns) == ["run_id", "step", "progress", "acc", "loss", "at", "bad",
                                       "lr", "note", "ok"]
        row0 = frame.iloc[0]
        assert (row0["loss"], row0["lr"], row0["note"], bool(row0["ok"])) == (0.5, 0.1, "hi", True)
        assert math.isnan(row0["bad"]) and row0["at"] == when
        assert frame.iloc[1]["lr"] == 2.0
        summary = {s["metric"]: s for s in await queries.metric_summary(client, run.id)}
        assert summary["lr"]["last"] == 2.0 and summary["lr"]["count"] == 2
        assert summary["loss"]["min"] == 0.25
        (listed,) = await queries.list_runs(client, metrics={"lr": "float", "loss": "float"})
        assert listed["metrics"] == {"lr": 2.0, "loss": 0.25}
    finally:
        await client.close()


async def test_budget_zero_and_blocking_and_buffered_paths(client_kwargs):
    """Every write path carries the long part: write-through (async and blocking, the
    SQLite thread writer), a user block, buffered batches (PostgreSQL: COPY)."""
    client = sqltrack.Client(**client_kwargs, metric_columns=0)
    try:
        run = sqltrack.Experiment(client, name="paths").get_run()
        for step in range(5):
            run.add_metrics({"a": step * 1.0, "b": step}, step=step)
        with client:
            run.add_metrics({"a": 9.0}, step=9)
        run.set_buffered(flush_rows=100)
        for step in range(10, 310):
            run.add_metrics({"a": step * 0.5, "c": step}, step=step)
        run.flush()
        run_id = run.id
    finally:
        client.close()
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM metrics") == [(0,)]
    assert read_raw(client_kwargs, "SELECT name, COUNT(*) FROM metric_values WHERE run_id = %s "
                    "GROUP BY name ORDER BY name", [run_id]) == [("a", 306), ("b", 5), ("c", 300)]
    assert read_raw(client_kwargs, "SELECT value FROM metric_values WHERE name = 'a' AND "
                    "step = 309") == [(154.5,)]


def add_column_by_hand(kwargs, name: str) -> None:
    """A column made outside this client (another process, a user's migration)."""
    if kwargs["engine"] == "sqlite":
        import sqlite3

        with sqlite3.connect(kwargs["dbpath"]) as conn:
            conn.execute(f'ALTER TABLE metrics ADD COLUMN "{name}" REAL')
        return
    conninfo = {k: v for k, v in kwargs.items() if k in ("host", "port", "user", "dbname")}
    with psycopg.connect(**conninfo, options=f"-c search_path={kwargs['schema']}",
                         autocommit=True) as conn:
        conn.execute(f'ALTER TABLE metrics ADD COLUMN "{name}" double precision')


async def test_a_name_in_both_places_is_read_from_both(client_kwargs):
    """A name stored long for one run whose column another process made later (the race
    of test_processes_create_the_same_new_names_at_once): every read surface gets the
    values of both places (the long-shape read took the column only)."""
    first, long_run = await make_run(client_kwargs, metric_columns=0)
    try:
        await long_run.add_metrics({"x": 1.5}, step=0)
        await long_run.add_metrics({"x": 2.5}, step=1)
    finally:
        await first.close()
    add_column_by_hand(client_kwargs, "x")
    client, column_run = await make_run(client_kwargs)
    try:
        await column_run.add_metrics({"x": 9.5}, step=0)
        assert "x" in await queries.metric_columns(client)
        ids = [long_run.id, column_run.id]
        rows = [row async for page in queries.metric_rows(client, ids, {"x": "float"})
                for row in page]
        assert rows == [(long_run.id, 0, 0.0, 1.5), (long_run.id, 1, 0.0, 2.5),
                        (column_run.id, 0, 0.0, 9.5)]
        assert await queries.metric_series(client, long_run.id, "x") == [
            (0, 0.0, 1.5), (1, 0.0, 2.5)]
        frame = await analysis.metrics_frame(client, ids)
        assert list(frame["x"]) == [1.5, 2.5, 9.5]
    finally:
        await client.close()


async def test_one_metric_by_name_wherever_stored(client_kwargs):
    """``queries.metric_series``: one run's values of one metric, read from where the name
    lives (column or long table), typed; a name in both places, the long value wins."""
    client, run = await make_run(client_kwargs, metric_columns=2)
    try:
        when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
        for step in range(4):
            await run.add_metrics({"loss": 1.0 / (step + 1), "seen": step * 10,
                                   "lr": step * 0.5, "ok": step % 2 == 0}, step=step)
        await run.add_metrics({"at": when, "note": "x"}, step=9, progress=0.5)
        await run.add_metrics({"lr": 3}, step=10)  # an int into a long float metric
        other = await (await sqltrack.AsyncExperiment.create(client, name="other")).get_run()
        await other.add_metrics({"loss": 7.0, "lr": 7.0}, step=0)
        assert set(await queries.metric_columns(client)) == {"loss", "seen"}
        assert await queries.metric_series(client, run.id, "loss") == [
            (0, 0.0, 1.0), (1, 0.0, 0.5), (2, 0.0, 1.0 / 3), (3, 0.0, 0.25)]
        assert await queries.metric_series(client, run.id, "seen") == [
            (0, 0.0, 0), (1, 0.0, 10), (2, 0.0, 20), (3, 0.0, 30)]
        lr = await queries.metric_series(client, run.id, "lr")
        assert lr == [(0, 0.0, 0.0), (1, 0.0, 0.5), (2, 0.0, 1.0), (3, 0.0, 1.5), (10, 0.0, 3.0)]
        assert all(type(v) is float for *_, v in lr)
        assert await queries.metric_series(client, run.id, "ok") == [
            (0, 0.0, True), (1, 0.0, False), (2, 0.0, True), (3, 0.0, False)]
        assert await queries.metric_series(client, run.id, "at") == [(9, 0.5, when)]
        assert await queries.metric_series(client, run.id, "note") == [(9, 0.5, "x")]
        assert await queries.metric_series(client, other.id, "lr") == [(0, 0.0, 7.0)]
        assert await queries.metric_series(client, run.id, "missing") == []
        assert await queries.metric_series(client, run.id, 'x"; DROP TABLE runs; --') == []
        # the same as the view, which names any metric in SQL
        for name in ("loss", "seen", "lr"):
            assert [(s, float(v)) for s, _, v in await queries.metric_series(
                client, run.id, name)] == [(s, v) for s, v, *_ in await view_values(
                    client, run.id, name)]
        # the same name in both places (two clients' race): the long value wins
        await client.query("INSERT INTO metric_names (name, kind) VALUES ('loss', 'float')")
        await client.query("INSERT INTO metric_values (run_id, step, progress, name, value) "
                           "VALUES (%s, 1, 0.0, 'loss', 5.5), (%s, 7, 0.0, 'loss', 6.5)",
                           [run.id, run.id])
        assert await queries.metric_series(client, run.id, "loss") == [
            (0, 0.0, 1.0), (1, 0.0, 5.5), (2, 0.0, 1.0 / 3), (3, 0.0, 0.25), (7, 0.0, 6.5)]
    finally:
        await client.close()


async def test_buffered_wide_rows_go_in_batches_of_bounded_values(client_kwargs):
    """A buffered batch is cut by values, not only by rows: 200 rows of 2,000 metrics
    (400,000 values, one batch of rows) go in several transactions of at most
    ``MAX_BATCH_VALUES`` values each, so no batch outlasts the write's time bound (a
    batch of 1,000 rows of 10,000 metrics took minutes and was taken for an outage).
    Every value is stored; on PostgreSQL each transaction's rows share their ``xmin``."""
    from sqltrack.metrics import buffer

    names = [f"w{i}" for i in range(2000)]
    client, run = await make_run(client_kwargs)
    try:
        await run.add_metrics(dict.fromkeys(names, 0.0), step=0)  # the places, untimed
        await run.set_buffered(flush_rows=1000, flush_interval=3600.0)
        for step in range(1, 201):
            await run.add_metrics({n: step + i / 10_000 for i, n in enumerate(names)}, step=step)
        await run.flush()
        columns = await queries.metric_columns(client)
        in_columns = [n for n in names if n in columns]
        assert 0 < len(in_columns) < len(names)  # both places written
        rows = [r async for page in queries.metric_rows(
            client, [run.id], {"w0": "float", "w1999": "float"}) for r in page]
        assert len(rows) == 201 and rows[-1][3:] == (200.0, 200 + 1999 / 10_000)
        long_count = await client.query(
            "SELECT COUNT(*) FROM metric_values WHERE run_id = %s AND step > 0", [run.id])
        assert long_count == [(200 * (len(names) - len(in_columns)),)]
        if client_kwargs["engine"] == "postgres":
            (transactions,) = await client.query(
                "SELECT COUNT(DISTINCT xmin::text) FROM (SELECT xmin FROM metrics WHERE "
                "run_id = %s AND step > 0 UNION ALL SELECT xmin FROM metric_values WHERE "
                "run_id = %s AND step > 0) AS x", [run.id, run.id])
            assert transactions[0] >= 200 * len(names) // buffer.MAX_BATCH_VALUES
    finally:
        await client.close()


async def test_buffered_long_values_of_every_kind(client_kwargs):
    """A buffered batch's long part (PostgreSQL: binary COPY per kind; an upsert when a
    key is stored already or repeated): every kind, NaN and infinities, the later row of
    a repeated key, a batch over steps written before."""
    client, run = await make_run(client_kwargs, metric_columns=0)
    try:
        when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
        await run.add_metrics({"f": 0.5, "i": 1, "b": True, "s": "x", "t": when}, step=0)
        await run.set_buffered(flush_rows=1000, flush_interval=3600.0)

        def values(step: int) -> dict:
            special = (math.nan, math.inf, -math.inf)
            return {"f": special[step % 3] if step % 10 == 0 else step / 4, "i": step * 2**40,
                    "b": step % 2 == 0, "s": f"é{step}", "t": when.replace(second=step % 60)}

        for step in range(1, 120):
            await run.add_metrics(values(step), step=step)
        await run.add_metrics({"f": -1.0, "s": "later"}, step=7)  # a repeated key
        await run.flush()
        for step in range(100, 160):  # again over stored steps: the upsert
            await run.add_metrics({**values(step), "f": step * 1.0}, step=step)
        await run.flush()
        frame = await analysis.metrics_frame(client, run.id)
        assert len(frame) == 160
        by_step = frame.set_index("step")
        for step in (1, 50, 99):
            want = values(step)
            got = by_step.loc[step]
            assert (got["i"], bool(got["b"]), got["s"], got["t"]) == (
                want["i"], want["b"], want["s"], want["t"])
            assert got["f"] == want["f"]
        assert math.isnan(by_step.loc[30]["f"]) and by_step.loc[10]["f"] == math.inf
        assert by_step.loc[20]["f"] == -math.inf
        assert (by_step.loc[7]["f"], by_step.loc[7]["s"], by_step.loc[7]["i"]) == (
            -1.0, "later", 7 * 2**40)
        assert by_step.loc[150]["f"] == 150.0 and by_step.loc[110]["f"] == 110.0
        assert await client.query("SELECT COUNT(*) FROM metric_values WHERE run_id = %s",
                                  [run.id]) == [(160 * 5,)]
    finally:
        await client.close()


# -- types and names, wherever the metric lives ---------------------------------------------------
async def test_type_conflicts_across_places(client_kwargs):
    client, run = await make_run(client_kwargs, metric_columns=1)
    try:
        await run.add_metrics({"col": 1.0, "long_f": 1.0, "long_i": 1, "long_s": "x"}, step=0)
        assert set(await queries.metric_columns(client)) == {"col"}
        for bad in ({"col": "text"}, {"long_f": "text"}, {"long_i": 1.5}, {"long_i": True},
                    {"long_s": 2.0}):
            with pytest.raises(MetricTypeError):
                await run.add_metrics(bad, step=1)
        # a second client (another process) knows the long kinds from the registry
        other, run2 = await make_run(client_kwargs, metric_columns=1)
        try:
            with pytest.raises(MetricTypeError):
                await sqltrack.run_add_metrics(other, run.id, {"long_i": 0.5}, step=2)
            await sqltrack.run_add_metrics(other, run.id, {"long_f": 7}, step=2)  # int fits
        finally:
            await other.close()
        assert [v for _, v, *_ in await view_values(client, run.id, "long_f")] == [1.0, 7.0]
        assert await client.query("SELECT COUNT(*) FROM metric_values WHERE step = 1") == [(0,)]
    finally:
        await client.close()


@pytest.mark.parametrize("name", ["bad name", 'x"; DROP TABLE runs; --', "run_id", "Step",
                                  "9lives", "a" * 64, "", "é"])
async def test_hostile_names_refused_for_long_names_too(client_kwargs, name):
    client, run = await make_run(client_kwargs, metric_columns=0)
    try:
        with pytest.raises(ValueError):
            await run.add_metrics({"fine": 1.0, name: 1.0}, step=0)
        assert await client.query("SELECT COUNT(*) FROM metric_names") == [(0,)]
        assert await client.query("SELECT COUNT(*) FROM metric_values") == [(0,)]
        assert await client.query("SELECT COUNT(*) FROM runs") == [(1,)]
    finally:
        await client.close()


# -- many names ------------------------------------------------------------------------------------
async def test_many_names_in_one_database(client_kwargs, record_property):
    """METRIC_NAMES distinct names, 50 new names a call (layer-wise statistics), over
    several runs: the first ones become columns up to the budget, the rest long."""
    client, run = await make_run(client_kwargs)
    experiment = await sqltrack.AsyncExperiment.create(client, name="many")
    try:
        started = time.perf_counter()
        runs = [await experiment.get_run() for _ in range(4)]
        for start in range(0, METRIC_NAMES, 50):
            target = runs[(start // 50) % len(runs)]
            await target.add_metrics({f"layer{i}_grad_norm": i * 0.5
                                      for i in range(start, min(start + 50, METRIC_NAMES))},
                                     step=0)
        record_property("many_names_seconds", round(time.perf_counter() - started, 1))
        kinds = await queries.metric_kinds(client)
        assert len(kinds) == METRIC_NAMES
        budget = 800 if client.engine == "postgres" else 1500
        assert len(await queries.metric_columns(client)) == budget
        last = f"layer{METRIC_NAMES - 1}_grad_norm"
        owner = runs[((METRIC_NAMES - 1) // 50) % len(runs)]
        assert [v for _, v, *_ in await view_values(client, owner.id, last)] == [
            (METRIC_NAMES - 1) * 0.5]
        assert [v for _, v, *_ in await view_values(client, runs[0].id, "layer7_grad_norm")] == [
            3.5]
    finally:
        await client.close()


async def test_ten_thousand_names_in_one_run_five_thousand_new_in_one_call(client_kwargs):
    client, run = await make_run(client_kwargs)
    try:
        first = {f"m{i}": float(i) for i in range(5000)}
        await run.add_metrics(first, step=0)  # one call, 5,000 new names
        await run.add_metrics({f"n{i}": i for i in range(5000)}, step=0)
        await run.add_metrics({**first, "m0": -1.0}, step=1)
        frame = await analysis.metrics_frame(client, run.id, shape="long")
        assert len(frame) == 15000
        assert len(set(frame["metric"])) == 10000
        wide = await analysis.metrics_frame(client, run.id, ["m0", "m4999", "n4999"])
        assert wide[["m0", "m4999"]].values.tolist() == [[0.0, 4999.0], [-1.0, 4999.0]]
        assert wide["n4999"].tolist()[0] == 4999 and wide["n4999"].isna().tolist()[1]
        summary = await queries.metric_summary(client, run.id)
        assert len(summary) == 10000
    finally:
        await client.close()


# -- no stall behind an open reader ----------------------------------------------------------------
READER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT * FROM metrics LIMIT 1").fetchall()
print("reading", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def test_open_reader_stalls_no_writer(client_kwargs, record_property):
    """A reader holds a transaction that read ``metrics`` for 10 s (PostgreSQL: another
    connection; SQLite: another process). Writer B logs known metrics all along; writer A
    logs new names three times. Nobody waits for the reader; every row is stored."""
    hold = 10.0
    a_client, a_run = await make_run(client_kwargs)
    b_client = sqltrack.AsyncClient(**client_kwargs)
    b_run = await sqltrack.AsyncRun.create(b_client, run_id=(await (
        await sqltrack.AsyncExperiment.create(b_client, name="b")).get_run()).id)
    await b_run.add_metrics({"loss": 1.0}, step=0)
    await a_run.add_metrics({"known": 1.0}, step=0)
    reader = None
    if client_kwargs["engine"] == "postgres":
        conninfo = {k: v for k, v in client_kwargs.items()
                    if k not in ("engine", "schema", "partitions")}
        reader = psycopg.connect(**conninfo, options=f"-c search_path={client_kwargs['schema']}")
        reader.execute("SELECT * FROM metrics LIMIT 1").fetchall()  # the transaction stays open
    else:
        reader = subprocess.Popen([sys.executable, "-c", READER, client_kwargs["dbpath"],
                                   str(hold)], stdout=subprocess.PIPE, text=True)
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
    started = time.monotonic()
    b_times: list[float] = []
    a_times: list[float] = []

    async def writer_b() -> None:
        step = 1
        while time.monotonic() - started < hold - 0.5:
            t0 = time.perf_counter()
            await b_run.add_metrics({"loss": 1.0 / step}, step=step)
            b_times.append(time.perf_counter() - t0)
            step += 1
            await asyncio.sleep(0.01)

    async def writer_a() -> None:
        for index in range(3):
            await asyncio.sleep(1.0 + index)
            t0 = time.perf_counter()
            await a_run.add_metrics({"known": 2.0, f"new{index}_a": 1.0 * index,
                                     f"new{index}_b": index}, step=index + 1)
            a_times.append(time.perf_counter() - t0)

    try:
        await asyncio.gather(writer_b(), writer_a())
    finally:
        if isinstance(reader, psycopg.Connection):
            reader.rollback()
            reader.close()
        else:
            reader.wait(30)
    record_property("b_slowest_seconds", round(max(b_times), 3))
    record_property("a_slowest_seconds", round(max(a_times), 3))
    print(f"B: {len(b_times)} calls, slowest {max(b_times):.3f} s; A: "
          f"{[round(t, 3) for t in a_times]} s")
    # A stall is the reader's 10 s; no stall is a lock bound of 0.2 s at most.
    assert max(b_times) < 2.0 and max(a_times) < 2.0
    try:
        frame = await analysis.metrics_frame(a_client, a_run.id)
        assert frame["new2_b"].tolist()[-1] == 2 and frame["new0_a"].tolist()[1] == 0.0
        rows = await b_client.query("SELECT COUNT(*) FROM metrics WHERE run_id = %s", [b_run.id])
        assert rows == [(len(b_times) + 1,)]
    finally:
        await a_client.close()
        await b_client.close()


# -- concurrent processes --------------------------------------------------------------------------
WRITER = r"""
import json, sys, time
import sqltrack
start_at, names = float(sys.argv[1]), int(sys.argv[2])
client = sqltrack.Client()
run = sqltrack.Experiment(client, name="concurrent").get_run()
while time.time() < start_at:
    time.sleep(0.001)
for step in range(3):
    run.add_metrics({f"shared_{i}": i * 1.0 + step for i in range(names)}, step=step)
client.close()
print(json.dumps(run.id))
"""


async def test_processes_create_the_same_new_names_at_once(client_kwargs):
    """Four processes log the same 300 new names at the same moment (a budget of 100:
    columns and long names both raced): no duplicate-column error, no lost value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLTRACK_DSN_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update({f"SQLTRACK_DSN_{k.upper()}": str(v) for k, v in client_kwargs.items()})
    env["SQLTRACK_DSN_METRIC_COLUMNS"] = "100"
    setup = sqltrack.AsyncClient(**client_kwargs)
    await sqltrack.AsyncExperiment.create(setup, name="concurrent")
    await setup.close()
    start_at = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(start_at), "300"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    run_ids = [json.loads(out) for out, _ in outputs]
    client = sqltrack.AsyncClient(**client_kwargs)
    try:
        frame = await analysis.metrics_frame(client, run_ids, shape="long")
        assert len(frame) == 4 * 3 * 300
        values = {(r, s, m): v for r, s, m, v in zip(frame["run_id"], frame["step"],
                                                    frame["metric"], frame["value"], strict=True)}
        assert all(values[(r, s, f"shared_{i}")] == i + s
                   for r in run_ids for s in range(3) for i in range(300))
    finally:
        await client.close()


# -- schema ----------------------------------------------------------------------------------------
async def test_database_of_the_build_before_is_upgraded(client_kwargs):
    """A database with the ``sqltrack:schema:2`` mark (no long table yet) gets it on open."""
    client, run = await make_run(client_kwargs)
    await run.add_metrics({"loss": 0.5}, step=0)
    for statement in ("DROP VIEW metric_values_all", "DROP TABLE metric_values",
                      "DROP TABLE metric_names",
                      "UPDATE applied_migrations SET name = 'sqltrack:schema:2' "
                      "WHERE name = 'sqltrack:schema:7'"):
        await client.execute(statement)
    await client.close()
    client = sqltrack.AsyncClient(**client_kwargs, metric_columns=1)
    try:
        await client.execute("SELECT 1")
        assert "metric_values" in (client.schema_outcome or "")
        await sqltrack.run_add_metrics(client, run.id, {"loss": 0.25, "extra": 3}, step=1)
        assert await view_values(client, run.id, "extra") == [(1, 3.0, 3, None, None, None)]
        assert [v for _, v, *_ in await view_values(client, run.id, "loss")] == [0.5, 0.25]
    finally:
        await client.close()


async def test_view_sees_columns_added_by_migrations(client_kwargs, tmp_path):
    client, run = await make_run(client_kwargs)
    try:
        script = tmp_path / "001_user.sql"
        script.write_text("ALTER TABLE metrics ADD COLUMN user_col REAL;\n")
        await sqltrack.setup(client, [script])
        await run.add_metrics({"user_col": 1.5}, step=3)
        assert [(s, v) for s, v, *_ in await view_values(client, run.id, "user_col")] == [
            (3, 1.5)]
    finally:
        await client.close()
