"""Hostile values: each is stored exactly, or refused with a clear error and nothing changed.

The classes of issue 24 ("What was seen" 9), each on both engines and through both APIs
(``AsyncClient`` and the blocking ``sqltrack.Client``), read back with a separate raw
driver connection (sqlite3 / psycopg), never through sqltrack:

* dicts whose keys collide once JSON makes them text (``1`` and ``"1"``): refused,
  naming both keys; on SQLite, metric names differing only in case (one column there);
* ints that do not fit 64 bits as metric values, steps and ids, and a ``progress`` too
  large for a float: ValueError naming the field and the value;
* JSON floats of 1e16 and more come back as floats on PostgreSQL too; ``-0.0`` is
  stored as ``0.0`` everywhere (metric values, progress, JSON), on both engines;
* a refusal leaves no metric column and no ``metric_names`` row behind;
* values of unsupported types (numpy datetime64 / timedelta64, objects) are refused
  with a message naming the value and its type;
* JSON nested deeper than ``MAX_JSON_DEPTH`` is refused; the deepest accepted value is
  shown by the web page.

``test_generated_values`` then feeds at least 10,000 generated inputs (hypothesis,
derandomized) through both engines and both APIs and checks each outcome the same way.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import psycopg
import pytest

import sqltrack
from sqltrack.checks import MAX_JSON_DEPTH

APIS = ("async", "sync")
JSON_COLUMNS = ("args", "env", "extras")


# -- one client of either API, driven from a plain (blocking) test ----------------------------
class Api:
    """A client, an experiment and a run of the async or the blocking API, called the same
    way: ``api.call(obj.method, *args)`` returns the result of either."""

    def __init__(self, kind: str, client_kwargs: dict[str, Any]) -> None:
        self.kind = kind
        self.kwargs = client_kwargs
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "sync":
            self.client: Any = sqltrack.Client(**client_kwargs)
            self.experiment: Any = sqltrack.Experiment(self.client, name="hostile")
            self.run: Any = self.experiment.get_run()
            self.other: Any = self.experiment.get_run()
        else:
            self.loop = asyncio.new_event_loop()
            self.client = sqltrack.AsyncClient(**client_kwargs)
            self.experiment = self.call(sqltrack.AsyncExperiment.create, self.client,
                                        name="hostile")
            self.run = self.call(self.experiment.get_run)
            self.other = self.call(self.experiment.get_run)

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        if self.loop is not None and asyncio.iscoroutine(result):
            return self.loop.run_until_complete(result)
        return result

    def experiment_by_id(self, experiment_id: Any) -> Any:
        if self.kind == "sync":
            return sqltrack.Experiment(self.client, experiment_id=experiment_id)
        return self.call(sqltrack.AsyncExperiment.create, self.client,
                         experiment_id=experiment_id)

    def run_by_id(self, run_id: Any) -> Any:
        return self.call(self.experiment.get_run, run_id)

    def close(self) -> None:
        if self.loop is None:
            self.client.close()
            return
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(params=APIS)
def api(request, client_kwargs) -> Iterator[Api]:
    made = Api(request.param, client_kwargs)
    yield made
    made.close()


class Raw:
    """A separate driver connection to the test's database (sqlite3 / psycopg), autocommit."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.engine = kwargs["engine"]
        if self.engine == "sqlite":
            self.conn: Any = sqlite3.connect(kwargs["dbpath"], timeout=60,
                                             isolation_level=None)
        else:
            params = {k: v for k, v in kwargs.items() if k not in ("engine", "schema")}
            self.conn = psycopg.connect(**params, autocommit=True,
                                        options=f"-c search_path={kwargs['schema']}")

    def rows(self, sql: str, params: Any = ()) -> list[tuple]:
        if self.engine == "sqlite":
            sql = sql.replace("%s", "?")
        return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]

    def json(self, column: str, run_id: int) -> Any:
        (value,) = self.rows(f"SELECT {column} FROM runs WHERE id = %s", [run_id])[0]
        return json.loads(value) if isinstance(value, str) else value

    def columns(self) -> list[tuple]:
        """The metric table's columns and their types, and the registered long names."""
        if self.engine == "sqlite":
            found = [r[1:3] for r in self.rows("PRAGMA table_info(metrics)")]
        else:
            found = self.rows("SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_schema = current_schema() AND table_name = 'metrics' "
                              "ORDER BY ordinal_position")
        return found + self.rows("SELECT name, kind FROM metric_names ORDER BY name")

    def metric_rows(self, run_id: int) -> list[tuple]:
        return self.rows("SELECT * FROM metrics WHERE run_id = %s ORDER BY step, progress",
                         [run_id])

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def raw(api) -> Iterator[Raw]:
    made = Raw(api.kwargs)
    yield made
    made.close()


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types (an int is not a float) and the same sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a)
                                                     == math.copysign(1, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


def refused(api: Api, call: Any, *args: Any, **kwargs: Any) -> BaseException:
    """The error a call raises (it must raise ValueError or TypeError)."""
    with pytest.raises((ValueError, TypeError)) as caught:
        api.call(call, *args, **kwargs)
    return caught.value


# -- 1. colliding keys ---------------------------------------------------------------------------
COLLIDING = [
    ({1: "a", "1": "b"}, "1"),
    ({True: "a", "true": "b"}, "true"),
    ({None: "a", "null": "b"}, "null"),
    ({2.5: "a", "2.5": "b"}, "2.5"),
    ({"outer": {7: "x", "7": "y"}}, "7"),
    ({"list": [{False: 1, "false": 2}]}, "false"),
]


@pytest.mark.parametrize("column", JSON_COLUMNS)
def test_json_keys_colliding_as_text_are_refused(api, raw, column):
    run = api.run
    api.call(getattr(run, f"set_{column}"), {"kept": 1})
    for value, key in COLLIDING:
        for how in ("set", "add"):
            error = refused(api, getattr(run, f"{how}_{column}"), value)
            assert f"'{key}'" in str(error) and column in str(error), error
            assert raw.json(column, run.id) == {"kept": 1}
    # keys that do not collide are stored as their JSON text, as json.dumps writes them
    api.call(getattr(run, f"set_{column}"), {1: "int", None: "none", 2.5: "float", True: "t"})
    assert raw.json(column, run.id) == {"1": "t", "null": "none", "2.5": "float"}


def test_metric_names_colliding_on_the_engine(api, raw):
    before = raw.columns()
    if api.kwargs["engine"] == "sqlite":  # one column for both spellings: refused up front
        error = refused(api, api.run.add_metrics, {"Loss": 1.0, "LOSS": 2.0}, step=1)
        assert "'Loss'" in str(error) and "'LOSS'" in str(error), error
        assert raw.columns() == before
        assert raw.metric_rows(api.run.id) == []
    else:  # quoted identifiers: two columns, both values kept
        api.call(api.run.add_metrics, {"Loss": 1.0, "LOSS": 2.0}, step=1)
        assert raw.rows('SELECT "Loss", "LOSS" FROM metrics WHERE run_id = %s',
                        [api.run.id]) == [(1.0, 2.0)]


# -- 2. ints that do not fit, progress too large ------------------------------------------------
TOO_BIG = [2**63, -(2**63) - 1, 10**30, np.uint64(2**64 - 1)]


def test_ints_out_of_range_are_refused_naming_field_and_value(api, raw):
    run = api.run
    before = raw.columns()
    for step, value in enumerate(TOO_BIG):
        error = refused(api, run.add_metrics, {f"big_{step}": value}, step=step)
        assert f"big_{step}" in str(error) and str(int(value)) in str(error), error
        error = refused(api, run.add_metrics, {"ok": 1.0}, step=int(value))
        assert "step" in str(error) and str(int(value)) in str(error), error
    huge = 10**400
    error = refused(api, run.add_metrics, {"ok": 1.0}, step=1, progress=huge)
    assert "progress" in str(error) and repr(huge)[:40] in str(error), error
    error = refused(api, run.add_metrics, {"ok": Fraction(huge)}, step=1)
    assert "'ok'" in str(error), error
    assert raw.columns() == before and raw.metric_rows(run.id) == []
    # the limits themselves are stored exactly
    api.call(run.add_metrics, {"edge": 2**63 - 1}, step=2**63 - 1)
    api.call(run.add_metrics, {"edge": -(2**63)}, step=-(2**63))
    assert raw.rows("SELECT step, edge FROM metrics WHERE run_id = %s ORDER BY step",
                    [run.id]) == [(-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1)]


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64])
def test_ids_out_of_range_are_refused(api, raw, value):
    runs_before = raw.rows("SELECT id FROM runs ORDER BY id")
    for what, call, args in (
        ("experiment_id", api.experiment_by_id, (value,)),
        ("run_id", api.run_by_id, (value,)),
        ("to_id", api.run.add_link, ("next", value)),
    ):
        error = refused(api, call, *args)
        assert what in str(error) and str(value) in str(error), error
    assert raw.rows("SELECT id FROM runs ORDER BY id") == runs_before
    assert raw.rows("SELECT * FROM run_links") == []


# -- 3. floats in JSON, negative zero ------------------------------------------------------------
BIG_FLOATS = {"f": 1e16, "g": -1.5e300, "h": 1.7976931348623157e308, "i": 5e-324,
              "j": 1.2345678901234567e16, "k": [1e22, {"l": 9007199254740993.0}], "m": 0.1}


@pytest.mark.parametrize("column", JSON_COLUMNS)
def test_json_floats_come_back_as_floats(api, raw, column):
    run = api.run
    api.call(getattr(run, f"set_{column}"), BIG_FLOATS)
    assert same(raw.json(column, run.id), BIG_FLOATS)
    api.call(getattr(run, f"add_{column}"), {"n": 3e20, "big_int": 2**70})
    assert same(raw.json(column, run.id), {**BIG_FLOATS, "n": 3e20, "big_int": 2**70})


def test_negative_zero_is_stored_as_zero(api, raw):
    run = api.run
    api.call(run.set_extras, {"z": -0.0, "list": [-0.0]})
    assert same(raw.json("extras", run.id), {"z": 0.0, "list": [0.0]})
    for step in range(3):  # the second and third call take the checked fast path
        api.call(run.add_metrics, {"zero": -0.0, "n": 1}, step=step, progress=-0.0)
    rows = raw.rows("SELECT progress, zero FROM metrics WHERE run_id = %s", [run.id])
    assert len(rows) == 3 and all(same(row, (0.0, 0.0)) for row in rows), rows


# -- 4. refusals leave nothing behind ---------------------------------------------------------------
@pytest.mark.parametrize("budget", [800, 0])  # columns, or every name in metric_values
def test_refusal_leaves_no_column_or_registered_name(client_kwargs, budget):
    api = Api("sync", {**client_kwargs, "metric_columns": budget})
    raw = Raw(client_kwargs)
    try:
        before = raw.columns()
        for metrics in ({"fresh_a": 1.0, "fresh_b": 2**63},
                        {"fresh_c": 1.5, "fresh_d": np.timedelta64(3, "s")},
                        {"fresh_e": 2, "fresh_f": object()}):
            refused(api, api.run.add_metrics, metrics, step=1)
            assert raw.columns() == before, metrics
        assert raw.metric_rows(api.run.id) == []
    finally:
        raw.close()
        api.close()


# -- 5. unsupported types -------------------------------------------------------------------------
UNSUPPORTED_METRICS = [
    np.timedelta64(5, "ns"), np.timedelta64(5, "s"), np.datetime64("2020-01-01T00:00", "ns"),
    np.datetime64("NaT"), np.timedelta64("NaT"), object(), Decimal("1.5"), 1 + 2j,
    b"bytes", [1, 2], {"a": 1},
]


def test_unsupported_metric_values_are_named(api, raw):
    before = raw.columns()
    for index, value in enumerate(UNSUPPORTED_METRICS):
        error = refused(api, api.run.add_metrics, {f"odd_{index}": value}, step=index)
        message = str(error)
        assert f"odd_{index}" in message and type(value).__name__ in message, message
        assert repr(value)[:30] in message, message
    assert raw.columns() == before and raw.metric_rows(api.run.id) == []


UNSUPPORTED_JSON = [np.timedelta64(5, "ns"), object(), {1, 2}, b"bytes", np.int64(3),
                    Decimal("1.5"), float("nan"), float("inf")]


@pytest.mark.parametrize("column", JSON_COLUMNS)
def test_unsupported_json_values_are_named(api, raw, column):
    api.call(getattr(api.run, f"set_{column}"), {"kept": True})
    for value in UNSUPPORTED_JSON:
        error = refused(api, getattr(api.run, f"add_{column}"), {"a": [{"b": value}]})
        message = str(error)
        assert column in message and repr(value)[:30] in message, message
        assert type(value).__name__ in message, message
        assert raw.json(column, api.run.id) == {"kept": True}


# -- 6. nesting ------------------------------------------------------------------------------------
def nested(depth: int) -> dict[str, Any]:
    """A dict whose containers nest ``depth`` deep (the dict itself is level 1)."""
    value: Any = "leaf"
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return {"deep": value}


@pytest.mark.parametrize("column", JSON_COLUMNS)
def test_json_nesting_limit(api, raw, column):
    setter = getattr(api.run, f"set_{column}")
    api.call(setter, nested(MAX_JSON_DEPTH))
    assert raw.json(column, api.run.id) == nested(MAX_JSON_DEPTH)
    for depth in (MAX_JSON_DEPTH + 1, 5000):
        error = refused(api, getattr(api.run, f"add_{column}"), nested(depth))
        assert "nested" in str(error) and column in str(error), error
        assert str(MAX_JSON_DEPTH) in str(error), error
    selfish: dict[str, Any] = {}
    selfish["me"] = selfish
    assert "nested" in str(refused(api, setter, selfish))
    assert raw.json(column, api.run.id) == nested(MAX_JSON_DEPTH)

