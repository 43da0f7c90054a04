"""Metrics: upserts, column creation and typing, NaN/inf, name validation, type conflicts."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest

import sqltrack

SQLITE_TYPES = {"float": "REAL", "int": "INTEGER", "bool": "BOOLEAN", "str": "TEXT",
                "datetime": "TIMESTAMP"}
POSTGRES_TYPES = {"float": "double precision", "int": "bigint", "bool": "boolean",
                  "str": "text", "datetime": "timestamp with time zone"}


async def metric_columns(client) -> dict[str, str]:
    """Column name -> declared type of the metrics table, read from the catalog."""
    if client.engine == "sqlite":
        rows = await client.execute("PRAGMA table_info(metrics)")
        return {r[1]: r[2] for r in rows}
    rows = await client.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'metrics'"
    )
    return dict(rows)


def expected_type(client, kind: str) -> str:
    return (SQLITE_TYPES if client.engine == "sqlite" else POSTGRES_TYPES)[kind]


async def metric_rows(client, run_id: int, *names: str) -> list[tuple]:
    cols = ", ".join(["step", "progress", *names])
    rows = await client.query(
        f"SELECT {cols} FROM metrics WHERE run_id = %s ORDER BY step, progress", [run_id]
    )
    return [tuple(r) for r in rows]


def as_dt(value):
    return datetime.fromisoformat(value) if isinstance(value, str) else value


# -- upserts -----------------------------------------------------------------------------------
async def test_add_metrics_rows(client, run):
    assert await run.add_metrics({"loss": 0.5, "acc": 0.1}, step=1, progress=0.1) is run
    await run.add_metrics({"loss": 0.4, "acc": 0.2}, step=2, progress=0.2)
    await sqltrack.run_add_metrics(client, run.id, {"loss": 0.3}, step=3, progress=0.3)
    assert await metric_rows(client, run.id, "loss", "acc") == [
        (1, 0.1, 0.5, 0.1),
        (2, 0.2, 0.4, 0.2),
        (3, 0.3, 0.3, None),
    ]


async def test_same_step_and_progress_upserts(client, run):
    await run.add_metrics({"loss": 1.0, "acc": 0.5}, step=7, progress=0.25)
    await run.add_metrics({"loss": 2.0}, step=7, progress=0.25)
    await run.add_metrics({"lr": 0.01}, step=7, progress=0.25)
    assert await metric_rows(client, run.id, "loss", "acc", "lr") == [(7, 0.25, 2.0, 0.5, 0.01)]
    # a different progress with the same step is another row
    await run.add_metrics({"loss": 3.0}, step=7, progress=0.5)
    assert await metric_rows(client, run.id, "loss", "acc") == [
        (7, 0.25, 2.0, 0.5),
        (7, 0.5, 3.0, None),
    ]


async def test_default_step_and_progress(client, run):
    await run.add_metrics({"final": 1.0})
    await run.add_metrics({"final": 2.0})
    assert await metric_rows(client, run.id, "final") == [(0, 0.0, 2.0)]


async def test_step_and_progress_conversions(client, run):
    await run.add_metrics({"v": 1.0}, step=2, progress=1)  # an int progress is a float
    await run.add_metrics({"v": 2.0}, step=2**40, progress=Fraction(1, 2))
    assert await metric_rows(client, run.id, "v") == [(2, 1.0, 1.0), (2**40, 0.5, 2.0)]
    rows = await client.query("SELECT progress FROM metrics WHERE run_id = %s", [run.id])
    assert all(type(r[0]) is float for r in rows)


async def test_metrics_of_different_runs_are_separate(client, experiment, run):
    other = await experiment.get_run()
    await run.add_metrics({"loss": 1.0}, step=1)
    await other.add_metrics({"loss": 9.0}, step=1)
    assert await metric_rows(client, run.id, "loss") == [(1, 0.0, 1.0)]
    assert await metric_rows(client, other.id, "loss") == [(1, 0.0, 9.0)]


async def test_empty_metrics_writes_bare_row(client, run):
    await run.add_metrics({}, step=3, progress=0.5)
    await run.add_metrics({}, step=3, progress=0.5)
    assert await metric_rows(client, run.id) == [(3, 0.5)]


async def test_none_value_for_existing_column_writes_null(client, run):
    await run.add_metrics({"loss": 1.0}, step=1)
    await run.add_metrics({"loss": None}, step=2)
    await run.add_metrics({"loss": 1.0}, step=3)
    await run.add_metrics({"loss": None}, step=3)
    assert await metric_rows(client, run.id, "loss") == [(1, 0.0, 1.0), (2, 0.0, None),
                                                         (3, 0.0, None)]


async def test_none_value_for_new_column_raises_and_writes_nothing(client, run):
    before = await metric_columns(client)
    with pytest.raises(ValueError, match="brand_new"):
        await run.add_metrics({"other_new": 1.0, "brand_new": None}, step=1)
    assert await metric_columns(client) == before
    assert await metric_rows(client, run.id) == []


# -- column creation and typing ----------------------------------------------------------------
async def test_new_columns_typed_from_values(client, run):
    dt = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=-5)))
    await run.add_metrics(
        {"m_float": 1.5, "m_int": 3, "m_bool": True, "m_str": "hello", "m_dt": dt}, step=1
    )
    columns = await metric_columns(client)
    for name, kind in [("m_float", "float"), ("m_int", "int"), ("m_bool", "bool"),
                       ("m_str", "str"), ("m_dt", "datetime")]:
        assert columns[name] == expected_type(client, kind), name
    rows = await metric_rows(client, run.id, "m_float", "m_int", "m_bool", "m_str", "m_dt")
    assert len(rows) == 1
    _, _, f, i, b, s, d = rows[0]
    assert (f, i, s) == (1.5, 3, "hello")
    assert type(i) is int
    assert bool(b) is True and b in (True, 1)
    assert as_dt(d) == dt
    await run.add_metrics({"m_bool": False}, step=2)
    assert (await metric_rows(client, run.id, "m_bool"))[1][2] in (False, 0)


async def test_base_columns_untouched_by_metric_columns(client, run):
    await run.add_metrics({"x": 1.0}, step=1)
    columns = await metric_columns(client)
    assert {"run_id", "step", "progress", "x"} == set(columns)


async def test_int_fits_float_column(client, run):
    await run.add_metrics({"lossy": 0.5}, step=1)
    await run.add_metrics({"lossy": 2}, step=2)
    assert await metric_rows(client, run.id, "lossy") == [(1, 0.0, 0.5), (2, 0.0, 2.0)]
    assert (await metric_columns(client))["lossy"] == expected_type(client, "float")


async def test_numbers_and_item_values(client, run):
    class Scalar:  # like a 0-d numpy array or a torch tensor
        def __init__(self, value):
            self.value = value

        def item(self):
            return self.value

    await run.add_metrics({"frac": Fraction(1, 4), "tensorish": Scalar(0.75),
                           "tensor_int": Scalar(5)}, step=1)
    columns = await metric_columns(client)
    assert columns["frac"] == expected_type(client, "float")
    assert columns["tensorish"] == expected_type(client, "float")
    assert columns["tensor_int"] == expected_type(client, "int")
    assert await metric_rows(client, run.id, "frac", "tensorish", "tensor_int") == [
        (1, 0.0, 0.25, 0.75, 5)
    ]


async def test_unsupported_value_raises_and_writes_nothing(client, run):
    before = await metric_columns(client)
    with pytest.raises(sqltrack.MetricTypeError):
        await run.add_metrics({"ok_value": 1.0, "weird": object()}, step=1)
    with pytest.raises(sqltrack.MetricTypeError):
        await run.add_metrics({"listy": [1, 2]}, step=1)
    assert await metric_columns(client) == before
    assert await metric_rows(client, run.id) == []


async def test_bad_values_raise(client, run):
    with pytest.raises(ValueError):
        await run.add_metrics({"naive_time": datetime(2024, 1, 1)}, step=1)
    with pytest.raises(ValueError):
        await run.add_metrics({"nul_text": "a\x00b"}, step=1)
    with pytest.raises(TypeError):
        await run.add_metrics([("loss", 1.0)], step=1)
    with pytest.raises(TypeError):
        await run.add_metrics({"loss": 1.0}, step="one")
    with pytest.raises(TypeError):
        await run.add_metrics({"loss": 1.0}, step=1.5)
    with pytest.raises(ValueError):
        await run.add_metrics({"loss": 1.0}, step=1, progress=float("nan"))
    with pytest.raises(ValueError):
        await run.add_metrics({"loss": 1.0}, step=1, updated=datetime(2024, 1, 1))
    assert await metric_rows(client, run.id) == []
    assert set(await metric_columns(client)) == {"run_id", "step", "progress"}


# -- NaN and infinities ---------------------------------------------------------------------------
async def test_nan_and_infinities_round_trip(client, run):
    await run.add_metrics({"v": float("nan")}, step=1)  # NaN first: creates a float column
    await run.add_metrics({"v": float("inf")}, step=2)
    await run.add_metrics({"v": float("-inf")}, step=3)
    await run.add_metrics({"v": 1.25}, step=4)
    await run.add_metrics({"v": -0.0}, step=5)
    assert (await metric_columns(client))["v"] == expected_type(client, "float")
    rows = await metric_rows(client, run.id, "v")
    values = [float(r[2]) for r in rows]
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert math.isnan(values[0])
    assert values[1] == math.inf
    assert values[2] == -math.inf
    assert values[3] == 1.25
    assert values[4] == 0.0
    assert rows[0][2] is not None  # NaN is not stored as NULL


async def test_nan_in_existing_column_and_upsert(client, run):
    await run.add_metrics({"a": 1.0, "b": 2.0}, step=1)
    await run.add_metrics({"a": float("nan")}, step=1)
    rows = await metric_rows(client, run.id, "a", "b")
    assert len(rows) == 1
    assert math.isnan(float(rows[0][2]))
    assert rows[0][3] == 2.0


# -- metric names ---------------------------------------------------------------------------------
HOSTILE_NAMES = [
    'quo"te',
    "sin'gle",
    "semi;colon",
    '"; DROP TABLE runs; --',
    "x); DROP TABLE runs; --",
    "with space",
    " leading",
    "trailing ",
    "1leading_digit",
    "9",
    "",
    "a" * 64,
    "run_id",
    "step",
    "progress",
    "RUN_ID",
    "Step",
    "dash-name",
    "dot.name",
    "ünïcode",
    "tab\tname",
    "new\nline",
    "nul\x00",
    "paren(",
    "star*",
    "back`tick",
    "brack[et]",
]


async def test_hostile_names_raise_and_leave_columns_unchanged(client, run):
    await run.add_metrics({"existing": 1.0}, step=1)
    before = await metric_columns(client)
    for name in HOSTILE_NAMES:
        with pytest.raises(ValueError):
            await run.add_metrics({name: 1.0}, step=2)
        with pytest.raises(ValueError):
            await sqltrack.run_add_metrics(client, run.id, {"fine_name": 1.0, name: 2.0}, step=3)
    assert await metric_columns(client) == before
    assert await metric_rows(client, run.id, "existing") == [(1, 0.0, 1.0)]
    # the base tables are all still there
    assert await client.query("SELECT count(*) FROM runs") == [(1,)]


async def test_non_str_names_raise(client, run):
    before = await metric_columns(client)
    for name in [1, None, 1.5, b"bytes", ("t",)]:
        with pytest.raises(ValueError):
            await run.add_metrics({name: 1.0}, step=1)
    assert await metric_columns(client) == before
    assert await metric_rows(client, run.id) == []


async def test_valid_names(client, run):
    names = {"a" * 63: 1.0, "_private": 2.0, "CamelCase": 3.0, "x1_2": 4.0, "select": 5.0,
             "table": 6.0, "order": 7.0}
    await run.add_metrics(names, step=1)
    columns = await metric_columns(client)
    assert set(names) <= set(columns)
    rows = await client.query(
        'SELECT "select", "table", "order", "CamelCase" FROM metrics WHERE run_id = %s',
        [run.id],
    )
    assert rows == [(5.0, 6.0, 7.0, 3.0)]


async def test_names_differing_only_in_case(client, run):
    await run.add_metrics({"Loss": 1.0}, step=1)
    if client.engine == "postgres":  # quoted identifiers: two distinct columns
        await run.add_metrics({"loss": "text"}, step=2)
        columns = await metric_columns(client)
        assert columns["Loss"] == "double precision" and columns["loss"] == "text"
        rows = await client.query(
            'SELECT step, "Loss", "loss" FROM metrics WHERE run_id = %s ORDER BY step', [run.id]
        )
        assert rows == [(1, 1.0, None), (2, None, "text")]
    else:  # SQLite: one column; a second spelling must not bypass the type check
        before = await metric_columns(client)
        for value in ("text", 2.0):
            with pytest.raises(ValueError, match="Loss"):
                await run.add_metrics({"loss": value}, step=2)
        assert await metric_columns(client) == before
        assert await metric_rows(client, run.id, "Loss") == [(1, 0.0, 1.0)]


async def test_validation_happens_before_any_column_is_added(client, run):
    before = await metric_columns(client)
    with pytest.raises(ValueError):
        await run.add_metrics({"good_new_a": 1.0, "good_new_b": 2, "bad name": 3.0}, step=1)
    assert await metric_columns(client) == before


# -- type conflicts -----------------------------------------------------------------------------
TYPE_CONFLICTS = [
    (1.5, "text"),
    (1.5, True),
    (1.5, datetime(2024, 1, 1, tzinfo=timezone.utc)),
    (3, 2.5),
    (3, "3"),
    (3, False),
    (True, 1),
    ("text", 1.0),
    (datetime(2024, 1, 1, tzinfo=timezone.utc), "2024-01-01"),
]


async def test_type_mismatch_raises_and_writes_nothing(client, run):
    for index, (first, second) in enumerate(TYPE_CONFLICTS):
        name = f"typed_{index}"
        await run.add_metrics({name: first, "other": 1.0}, step=index * 10 + 1)
        before = await metric_columns(client)
        with pytest.raises(sqltrack.MetricTypeError) as info:
            await run.add_metrics({"other": 2.0, name: second, f"new_{index}": 1.0},
                                  step=index * 10 + 2)
        assert name in str(info.value)
        assert isinstance(info.value, TypeError)
        with pytest.raises(sqltrack.MetricTypeError):  # no partial upsert either
            await run.add_metrics({"other": 5.0, name: second}, step=index * 10 + 1)
        assert await metric_columns(client) == before, (first, second)
    rows = await metric_rows(client, run.id, "other")
    assert rows == [(i * 10 + 1, 0.0, 1.0) for i in range(len(TYPE_CONFLICTS))]


async def test_type_mismatch_detected_with_stale_cache(client_kwargs, client, run):
    """Another client created the column with another type after our cache was filled."""
    await run.add_metrics({"seed": 1.0}, step=1)  # fills `client`'s column cache
    other = sqltrack.AsyncClient(**client_kwargs)
    try:
        await sqltrack.run_add_metrics(other, run.id, {"shared": "text"}, step=2)
    finally:
        await other.close()
    with pytest.raises(sqltrack.MetricTypeError):
        await run.add_metrics({"shared": 1.0}, step=3)
    assert await metric_rows(client, run.id, "shared") == [(1, 0.0, None), (2, 0.0, "text")]


# -- unknown run ------------------------------------------------------------------------------
async def test_unknown_run_raises(client, run):
    await run.add_metrics({"loss": 1.0}, step=1)
    with pytest.raises(sqltrack.RunNotFound) as info:
        await sqltrack.run_add_metrics(client, 123456789, {"loss": 1.0}, step=1)
    assert info.value.run_id == 123456789
    with pytest.raises(sqltrack.RunNotFound):
        await sqltrack.run_add_metrics(client, 123456789, {"loss": 1.0}, step=1, updated=None)
    with pytest.raises(sqltrack.RunNotFound):
        await sqltrack.run_add_metrics(client, 123456789, {}, step=1)
    assert await client.query("SELECT run_id FROM metrics") == [(run.id,)]


async def test_unknown_run_inside_block(client, run):
    await run.add_metrics({"loss": 0.0}, step=0)
    with pytest.raises(sqltrack.RunNotFound):
        async with client:
            await run.add_metrics({"loss": 1.0}, step=1)
            await sqltrack.run_add_metrics(client, 123456789, {"loss": 1.0}, step=1)
    assert await metric_rows(client, run.id, "loss") == [(0, 0.0, 0.0)]
    await run.add_metrics({"loss": 2.0}, step=2)  # the client still works
    assert await metric_rows(client, run.id, "loss") == [(0, 0.0, 0.0), (2, 0.0, 2.0)]


# -- time_updated --------------------------------------------------------------------------
async def time_updated(client, run_id):
    rows = await client.query("SELECT time_updated FROM runs WHERE id = %s", [run_id])
    return as_dt(rows[0][0])


async def test_add_metrics_updates_time_updated(client, run):
    assert await time_updated(client, run.id) is None
    before = datetime.now(timezone.utc)
    await run.add_metrics({"loss": 1.0}, step=1)
    after = datetime.now(timezone.utc)
    stamp = await time_updated(client, run.id)
    assert before <= stamp <= after
    fixed = datetime(2030, 6, 7, 8, 9, 10, tzinfo=timezone.utc)
    await run.add_metrics({"loss": 2.0}, step=2, updated=fixed)
    assert await time_updated(client, run.id) == fixed
    await run.add_metrics({"loss": 3.0}, step=3, updated=None)
    await sqltrack.run_add_metrics(client, run.id, {"loss": 4.0}, step=4, updated=None)
    assert await time_updated(client, run.id) == fixed
    assert len(await metric_rows(client, run.id, "loss")) == 4


async def test_add_metrics_updated_none_leaves_null(client, run):
    await run.add_metrics({"loss": 1.0}, step=1, updated=None)
    assert await time_updated(client, run.id) is None
    assert await metric_rows(client, run.id, "loss") == [(1, 0.0, 1.0)]


async def test_add_metrics_touches_only_its_run(client, experiment, run):
    other = await experiment.get_run()
    await run.add_metrics({"loss": 1.0}, step=1)
    assert await time_updated(client, other.id) is None


# -- transactions ------------------------------------------------------------------------------
async def test_add_metrics_in_block_rolled_back(client, run):
    await run.add_metrics({"loss": 1.0}, step=1)
    with pytest.raises(RuntimeError):
        async with client:
            await run.add_metrics({"loss": 2.0}, step=2)
            await run.add_metrics({"loss": 9.0}, step=1)
            raise RuntimeError
    assert await metric_rows(client, run.id, "loss") == [(1, 0.0, 1.0)]


async def test_new_column_in_rolled_back_block(client, run):
    """A column created in a block that rolls back is gone; the next write recreates it."""
    with pytest.raises(RuntimeError):
        async with client:
            await run.add_metrics({"loss": 1.0}, step=1)
            await run.add_metrics({"born_in_block": 1.0}, step=2)
            raise RuntimeError
    await run.add_metrics({"born_in_block": 2.0}, step=3)
    assert await metric_rows(client, run.id, "born_in_block") == [(3, 0.0, 2.0)]


async def test_new_column_then_explicit_rollback(client, run):
    async with client:
        await run.add_metrics({"loss": 1.0}, step=1)
        await run.add_metrics({"made_then_undone": 1.0}, step=2)
        await client.rollback()
        await run.add_metrics({"made_then_undone": 2.0}, step=3)
    assert await metric_rows(client, run.id, "made_then_undone") == [(3, 0.0, 2.0)]


async def test_add_metrics_in_committed_block(client, run):
    async with client:
        for step in range(5):
            await run.add_metrics({"loss": float(step), "fresh_col": step}, step=step)
    rows = await metric_rows(client, run.id, "loss", "fresh_col")
    assert rows == [(s, 0.0, float(s), s) for s in range(5)]


# -- concurrency --------------------------------------------------------------------------------
async def test_two_clients_add_same_new_column_concurrently(client_kwargs, client, run):
    a = sqltrack.AsyncClient(**client_kwargs)
    b = sqltrack.AsyncClient(**client_kwargs)
    try:
        await a.execute("SELECT 1")
        await b.execute("SELECT 1")
        for attempt in range(4):
            name = f"race_{attempt}"
            await asyncio.gather(
                sqltrack.run_add_metrics(a, run.id, {name: 1.0}, step=attempt * 10 + 1),
                sqltrack.run_add_metrics(b, run.id, {name: 2.0}, step=attempt * 10 + 2),
            )
            assert (await metric_columns(client))[name] == expected_type(client, "float")
            rows = [r for r in await metric_rows(client, run.id, name) if r[2] is not None]
            assert rows == [(attempt * 10 + 1, 0.0, 1.0), (attempt * 10 + 2, 0.0, 2.0)]
    finally:
        await a.close()
        await b.close()


async def test_tasks_add_same_new_column_concurrently(client, run):
    await asyncio.gather(
        *(run.add_metrics({"shared_new": float(i), f"own_{i}": i}, step=i) for i in range(8))
    )
    columns = await metric_columns(client)
    assert {"shared_new", *(f"own_{i}" for i in range(8))} <= set(columns)
    rows = await metric_rows(client, run.id, "shared_new")
    assert rows == [(i, 0.0, float(i)) for i in range(8)]


async def test_concurrent_writers_lose_nothing(client_kwargs, client, experiment):
    runs = [await experiment.get_run() for _ in range(3)]
    clients = [sqltrack.AsyncClient(**client_kwargs) for _ in range(3)]

    async def writer(c, run_id):
        for step in range(30):
            await sqltrack.run_add_metrics(c, run_id, {"loss": step / 10, "step_no": step},
                                           step=step)

    try:
        await asyncio.gather(*(writer(c, r.id) for c, r in zip(clients, runs, strict=True)))
    finally:
        for c in clients:
            await c.close()
    for r in runs:
        rows = await metric_rows(client, r.id, "loss", "step_no")
        assert rows == [(s, 0.0, s / 10, s) for s in range(30)]
