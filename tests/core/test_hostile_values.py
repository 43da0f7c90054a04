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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
            found = self.rows("SELECT attname::text, format_type(atttypid, atttypmod) "
                              "FROM pg_attribute WHERE attrelid = 'metrics'::regclass "
                              "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")
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
    api.call(getattr(run, f"set_{column}"), {3: "int", None: "none", 2.5: "float", True: "t"})
    assert raw.json(column, run.id) == {"3": "int", "null": "none", "2.5": "float", "true": "t"}


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
def test_ids_out_of_range_are_refused(api, raw, value, monkeypatch):
    runs_before = raw.rows("SELECT id FROM runs ORDER BY id")
    monkeypatch.setenv("HOSTILE_JOB_ID", str(value))  # run_id="SLURM_JOB_ID" style
    for what, call, args in (
        ("experiment_id", api.experiment_by_id, (value,)),
        ("run_id", api.run_by_id, (value,)),
        ("HOSTILE_JOB_ID", api.run_by_id, ("HOSTILE_JOB_ID",)),
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


# -- 4. refusals leave nothing behind -----------------------------------------------------------
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




# -- 7. generated inputs, checked against a raw connection -------------------------------------
#: Generated examples per engine and API, each one input (a call): with both engines and both
#: APIs, 10,400 inputs in all. ``--fault-trials=N`` scales it by N / 20. (Lists of inputs per
#: example would cost less generating, but hypothesis repeats list elements: a fifth as many
#: distinct inputs.)
FUZZ_EXAMPLES = 2600
#: Inputs each engine-and-API pair must have tried (4 pairs: at least 10,000 in all).
FUZZ_INPUTS = 2500
INT64 = (-(2**63), 2**63 - 1)
#: The columns made before the fuzzing starts, and their kinds.
SEED_COLUMNS = {"f_float": 0.5, "i_int": 1, "b_bool": True, "s_str": "x"}
#: Metric names: the seeded columns, a pool of new ones, spellings differing in case only.
FUZZ_NAMES = [*SEED_COLUMNS, "F_FLOAT", "I_int", *(f"n{i}" for i in range(12)), "N0", "N1"]
#: The kind of a metric column's declared type, per engine.
COLUMN_KINDS = {"REAL": "float", "INTEGER": "int", "BOOLEAN": "bool", "TEXT": "str",
                "TIMESTAMP": "datetime", "double precision": "float", "bigint": "int",
                "boolean": "bool", "text": "str", "timestamp with time zone": "datetime"}
FITS = {"bool": ("bool",), "int": ("int", "float"), "float": ("float",), "str": ("str",)}


def odd(kind: str) -> Any:
    """A value of a type sqltrack cannot store as it is (made fresh for each example)."""
    return {
        "td_ns": lambda: np.timedelta64(5, "ns"), "td_s": lambda: np.timedelta64(7, "s"),
        "dt_ns": lambda: np.datetime64("2021-05-01T00:00", "ns"),
        "nat": lambda: np.datetime64("NaT"), "object": object,
        "decimal": lambda: Decimal("2.5"), "complex": lambda: 1 + 2j, "bytes": lambda: b"xy",
        "set": lambda: {1, 2}, "np_int64": lambda: np.int64(-3),
        "np_uint64": lambda: np.uint64(2**64 - 1), "np_float32": lambda: np.float32(0.25),
        "np_float64": lambda: np.float64(-0.0), "np_bool": lambda: np.bool_(True),
        "fraction": lambda: Fraction(1, 3), "huge_fraction": lambda: Fraction(10**400, 3),
    }[kind]()


ODD_KINDS = ["td_ns", "td_s", "dt_ns", "nat", "object", "decimal", "complex", "bytes", "set",
             "np_int64", "np_uint64", "np_float32", "np_float64", "np_bool", "fraction",
             "huge_fraction"]

edge_ints = st.sampled_from([0, 1, -1, 2**53 + 1, INT64[1], INT64[0], 2**63, -(2**63) - 1,
                             2**64, 10**30, -(10**30)])
any_ints = st.one_of(edge_ints, st.integers(-(2**66), 2**66), st.integers(-1000, 1000))
edge_floats = st.sampled_from([0.0, -0.0, 1e16, -1e16, 1.5e300, 1.7976931348623157e308,
                               5e-324, 1e-7, 0.1, 9007199254740993.0, 1.2345678901234567e16,
                               float("nan"), float("inf"), -float("inf")])
any_floats = st.one_of(edge_floats, st.floats(), st.floats(min_value=1e15, max_value=1e300))
odd_values = st.sampled_from(ODD_KINDS).map(odd)
texts = st.one_of(st.text(max_size=6), st.sampled_from(["a\x00b", "x\ud800", "é🚀", ""]))

json_keys = st.one_of(
    st.sampled_from(["1", "true", "false", "null", "2.5", "0", "-0.0", "1e+16", "a", "A"]),
    st.text(max_size=3), st.integers(-2, 2), st.booleans(), st.none(),
    st.sampled_from([2.5, -0.0, 1e16, float("inf")]),
    st.sampled_from([(1, 2), b"k", frozenset()]),
)
json_scalars = st.one_of(st.none(), st.booleans(), any_ints, any_floats, texts, odd_values)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(inner, max_size=2).map(tuple),
                            st.dictionaries(json_keys, inner, max_size=3)),
    max_leaves=4,
)
#: Values JSON holds (the numbers that need care: huge ints, floats of 1e16 and more, -0.0).
storable_scalars = st.one_of(st.none(), st.booleans(), any_ints, edge_floats.filter(math.isfinite),
                             st.floats(allow_nan=False, allow_infinity=False),
                             st.floats(min_value=1e15, max_value=1e300), st.text(
                                 st.characters(codec="utf-8", exclude_characters="\x00"),
                                 max_size=6))
storable_values = st.recursive(
    storable_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=5,
)
storable_objects = st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-3, 3)),
                                   storable_values, max_size=3)
json_objects = st.one_of(
    st.dictionaries(json_keys, json_values, max_size=3), storable_objects, storable_objects,
    st.sampled_from([MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1,
                     MAX_JSON_DEPTH + 4]).map(nested),
)
json_inputs = st.tuples(st.just("json"), st.sampled_from(JSON_COLUMNS),
                        st.sampled_from(["set", "add"]), json_objects)

metric_values = st.one_of(any_ints, any_floats, any_floats, st.booleans(), odd_values,
                          st.none(), st.sampled_from(["text", "é"]))
#: Values every fresh column takes: numbers at the edges (-0.0, 1e16, 2**63 - 1, NaN).
plain_values = st.one_of(st.integers(*INT64), st.integers(-5, 5), st.floats(), edge_floats,
                         st.booleans())
metric_inputs = st.tuples(
    st.just("metrics"),
    st.one_of(st.dictionaries(st.sampled_from(FUZZ_NAMES), metric_values, max_size=3),
              st.dictionaries(st.sampled_from(FUZZ_NAMES), plain_values, max_size=3)),
    st.one_of(st.integers(0, 40), st.integers(0, 40), st.integers(*INT64), edge_ints, any_ints,
              st.sampled_from(["1", 1.5, None]), st.sampled_from(["np_int64", "np_uint64"])
              .map(odd)),
    st.one_of(st.just(0.0), st.just(0.0), any_floats, st.integers(-5, 5),
              st.sampled_from([10**400, 2**63, -(10**400), 1.5]),
              st.sampled_from(["np_float32", "np_float64", "fraction", "huge_fraction"])
              .map(odd)),
)
id_inputs = st.tuples(st.just("ids"), st.sampled_from(["experiment", "run", "link"]),
                      st.one_of(edge_ints, st.integers(-3, 30), any_ints))
fuzz_inputs = st.one_of(json_inputs, metric_inputs, metric_inputs, id_inputs)


class Refused(Exception):
    """The oracle's verdict: the input must be refused. ``mentions``: each a tuple of words;
    the error's message must hold every word of at least one of them."""

    def __init__(self, *mentions: tuple[str, ...]) -> None:
        super().__init__(mentions)
        self.mentions = list(mentions)


def short(value: Any) -> str:
    """The beginning of a value's repr, as error messages show it."""
    try:
        return repr(value)[:30]
    except (ValueError, RecursionError):
        return type(value).__name__


def is_text_storable(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def json_expected(value: Any, column: str, level: int = 1) -> Any:
    """What a JSON column holds after storing ``value`` (as json.loads / psycopg read it), or
    Refused. Written from the documented rules, not from sqltrack's code: keys become the
    text json.dumps writes for them, -0.0 is 0.0, tuples are lists."""
    if isinstance(value, str):
        if not is_text_storable(value):
            raise Refused((column, short(value)))
        return value
    if value is None or value is True or value is False:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused((column, repr(value), "float"))
        return float(value) + 0.0
    if isinstance(value, (dict, list, tuple)) and level > MAX_JSON_DEPTH:
        raise Refused((column, "nested", str(MAX_JSON_DEPTH)))
    if isinstance(value, (list, tuple)):
        return [json_expected(item, column, level + 1) for item in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                if not is_text_storable(key):
                    raise Refused((column, short(key)))
                text = key
            elif key is None or key is True or key is False:
                text = json.dumps(key)
            elif isinstance(key, int):
                text = str(key)
            elif isinstance(key, float) and math.isfinite(key):
                text = repr(key)
            else:
                raise Refused((column, short(key), type(key).__name__))
            if text in out:
                raise Refused((column, repr(key), repr(text)))
            out[text] = json_expected(item, column, level + 1)
        return out
    raise Refused((column, short(value), type(value).__name__))


def metric_value_expected(name: str, value: Any) -> tuple[Any, str | None]:
    """The value a metric stores and its kind, or Refused (the documented rules)."""
    if value is None:
        return None, None
    if isinstance(value, (bool, np.bool_)):
        return bool(value), "bool"
    if isinstance(value, (np.timedelta64, np.datetime64)):
        raise Refused((repr(name), type(value).__name__))
    if isinstance(value, (int, np.integer)):
        if not INT64[0] <= int(value) <= INT64[1]:
            raise Refused((repr(name), str(int(value))))
        return int(value), "int"
    if isinstance(value, (float, np.floating, Fraction)):
        try:
            return float(value) + 0.0, "float"
        except OverflowError:
            raise Refused((repr(name), "too large")) from None
    if isinstance(value, str):
        return value, "str"
    raise Refused((repr(name), type(value).__name__))


def key_expected(step: Any, progress: Any) -> tuple[int, float]:
    """The stored (step, progress) of an add_metrics call, or Refused."""
    if isinstance(step, (bool, float, str)) or step is None:
        raise Refused(("step", short(step)))
    step = int(step)
    if not INT64[0] <= step <= INT64[1]:
        raise Refused(("step", str(step)))
    try:
        number = float(progress)
    except OverflowError:
        raise Refused(("progress", repr(progress)[:40])) from None
    if math.isnan(number):
        raise Refused(("progress", "NaN"))
    return step, number + 0.0


def raw_form(value: Any, kind: str | None, column_kind: str, engine: str) -> Any:
    """A stored metric value as the raw driver reads it back."""
    if value is None:
        return None
    if column_kind == "float":
        value = float(value)
        if math.isnan(value) and engine == "sqlite":
            return "NaN"  # SQLite stores NaN as NULL: sqltrack keeps it as the text 'NaN'
        return value
    if column_kind == "bool" and engine == "sqlite":
        return int(value)
    return value


class Fuzz:
    """Runs generated inputs through one client and checks each against a raw connection.

    What the database holds is tracked here (the JSON columns, the metric layout, the
    metric rows' keys, runs, links) and compared with a raw read after every input: a
    stored value is read back, a refusal must leave the database as tracked.
    """

    def __init__(self, api: Api, raw: Raw) -> None:
        self.api = api
        self.raw = raw
        self.engine = api.kwargs["engine"]
        self.counts: dict[str, int] = {}
        run = api.run.id
        self.json_now = {column: raw.json(column, run) for column in JSON_COLUMNS}
        self.layout = raw.columns()
        self.keys = {row[:2] for row in raw.rows(
            "SELECT step, progress FROM metrics WHERE run_id = %s", [run])}
        self.runs = self.run_ids()
        self.links = self.run_links()

    def run_ids(self) -> set[int]:
        return {row[0] for row in self.raw.rows("SELECT id FROM runs")}

    def run_links(self) -> list[tuple]:
        return self.raw.rows("SELECT * FROM run_links ORDER BY to_id, kind")

    def metric_count(self) -> int:
        return self.raw.rows("SELECT count(*) FROM metrics WHERE run_id = %s",
                             [self.api.run.id])[0][0]

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def attempt(self, kind: str, call: Any, verdict: Any, changed: Any, check: Any) -> None:
        """``call()``; then, as the oracle's ``verdict`` (a value, or Refused) says, the
        stored value equals it (``check``) or the call was refused with an error naming
        what the oracle names and ``changed()`` reports nothing."""
        try:
            self.api.call(call)
        except Exception as error:  # noqa: BLE001 - checked here
            message = str(error)
            assert isinstance(error, (ValueError, TypeError, LookupError)), (
                f"{kind}: {type(error).__name__}: {message}")
            assert not changed(), f"{kind}: refused ({message}) but the database changed"
            if isinstance(error, LookupError):  # an id in range that does not exist
                assert verdict == "missing", f"{kind}: {message}"
                self.count(f"{kind} not found")
                return
            assert isinstance(verdict, Refused), f"{kind}: refused a storable input: {message}"
            assert any(all(word in message for word in words) for words in verdict.mentions), (
                f"{kind}: the error does not name {verdict.mentions}: {message}")
            self.count(f"{kind} refused")
            return
        assert not isinstance(verdict, Refused), f"{kind}: accepted, should name {verdict}"
        assert verdict != "missing", f"{kind}: accepted an id that does not exist"
        check(verdict)
        self.count(f"{kind} stored")

    def verdict(self, oracle: Any) -> Any:
        try:
            return oracle()
        except Refused as refusal:
            return refusal

    # -- the three kinds of input --
    def json(self, column: str, how: str, value: dict[Any, Any]) -> None:
        run = self.api.run
        before = self.json_now[column]

        def oracle() -> Any:
            stored = json_expected(value, column)
            if how == "set":
                return stored
            return {**(before or {}), **stored} if value else before

        def check(expected: Any) -> None:
            assert self._same(self.raw.json(column, run.id), expected), (value, expected)
            self.json_now[column] = expected

        self.attempt("json", lambda: getattr(run, f"{how}_{column}")(value),
                     self.verdict(oracle), lambda: self.raw.json(column, run.id) != before,
                     check)

    def metrics(self, metrics: dict[str, Any], step: Any, progress: Any) -> None:
        run = self.api.run
        raw = self.raw
        columns = {name: COLUMN_KINDS[kind] for name, kind in self.layout
                   if name not in ("run_id", "step", "progress") and kind in COLUMN_KINDS}

        def oracle() -> Any:
            key = key_expected(step, progress)
            stored = {}
            problems = []
            for name, value in metrics.items():
                try:
                    converted, kind = metric_value_expected(name, value)
                except Refused as refusal:
                    problems += refusal.mentions
                    continue
                column_kind = columns.get(name)
                if column_kind is None and kind is None:
                    problems.append((repr(name), "None"))
                elif column_kind is not None and kind is not None and (
                        column_kind not in FITS[kind]):
                    problems.append((repr(name), short(converted)))
                else:
                    stored[name] = raw_form(converted, kind, column_kind or str(kind),
                                            self.engine)
            if self.engine == "sqlite":  # one column for names differing only in case
                spelled = {c.lower(): c for c in columns}
                for name in metrics:
                    if spelled.setdefault(name.lower(), name) != name:
                        problems.append((repr(name), repr(spelled[name.lower()])))
            if problems:
                raise Refused(*problems)
            return key, stored

        def changed() -> bool:
            return raw.columns() != self.layout or self.metric_count() != len(self.keys)

        def check(expected: Any) -> None:
            (at_step, at_progress), stored = expected
            names = list(stored) or ["step"]
            quoted = ", ".join(f'"{name}"' for name in names)
            found = raw.rows(f"SELECT {quoted} FROM metrics WHERE run_id = %s AND step = %s "
                             "AND progress = %s", [run.id, at_step, at_progress])
            assert len(found) == 1, (metrics, step, progress, found)
            if stored:
                assert self._same(list(found[0]), list(stored.values())), (
                    metrics, found[0], stored)
            self.keys.add((at_step, at_progress))
            if set(stored) - set(columns):
                self.layout = raw.columns()  # new columns: the layout to compare with
            elif len(self.keys) % 50 == 0:
                assert raw.columns() == self.layout and self.metric_count() == len(self.keys)

        self.attempt("metrics", lambda: run.add_metrics(metrics, step=step, progress=progress),
                     self.verdict(oracle), changed, check)

    def ids(self, what: str, number: int) -> None:
        api, raw = self.api, self.raw
        field = {"experiment": "experiment_id", "run": "run_id", "link": "to_id"}[what]

        def oracle() -> Any:
            if not INT64[0] <= number <= INT64[1]:
                raise Refused((field, str(number)))
            if what == "experiment":
                return "found" if number == api.experiment.id else "missing"
            if what == "link":
                return "linked" if number in self.runs else "missing"
            return "run"

        call = {"experiment": lambda: api.experiment_by_id(number),
                "run": lambda: api.run_by_id(number),
                "link": lambda: api.run.add_link("fuzz", number)}[what]

        def changed() -> bool:
            return self.run_ids() != self.runs or self.run_links() != self.links

        def check(expected: str) -> None:
            if expected == "run":
                assert raw.rows("SELECT experiment_id FROM runs WHERE id = %s", [number]) == [
                    (api.experiment.id,)]
                self.runs.add(number)
            elif expected == "linked":
                assert (api.run.id, "fuzz", number) in raw.rows("SELECT * FROM run_links")
                self.links = self.run_links()
            else:
                assert not changed()

        self.attempt("ids", lambda: call(), self.verdict(oracle), changed, check)

    def _same(self, found: Any, expected: Any) -> bool:
        return same(found, expected) or (self.engine == "sqlite" and found == expected
                                         and not isinstance(found, float))


@pytest.fixture
def fuzz_api(request, client_kwargs) -> Iterator[Api]:
    """``api``, but a PostgreSQL client commits without waiting for the disk
    (``synchronous_commit=off``: what other sessions see is the same; the fuzzing is bound
    by round trips, not by flushes)."""
    kwargs = dict(client_kwargs)
    if kwargs["engine"] == "postgres":
        kwargs["options"] = "-c synchronous_commit=off"
    made = Api(request.param, kwargs)
    yield made
    made.close()


@pytest.mark.faults
@pytest.mark.parametrize("fuzz_api", APIS, indirect=True)
def test_generated_values(fuzz_api, client_kwargs, fault_trials, record_property):
    """At least 10,000 generated inputs over both engines and both APIs (this test runs once
    per engine and API): JSON objects for args / env / extras, add_metrics calls (values,
    steps, progress) and ids, each stored exactly or refused cleanly, checked with the raw
    driver. Derandomized: the same inputs on every run."""
    api = fuzz_api
    raw = Raw(client_kwargs)
    api.call(api.run.add_metrics, SEED_COLUMNS, step=-1)
    fuzz = Fuzz(api, raw)
    tried = 0

    @settings(max_examples=max(10, FUZZ_EXAMPLES * fault_trials // 20), derandomize=True,
              deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(one=fuzz_inputs)
    def check(one):
        nonlocal tried
        tried += 1
        kind, *args = one
        getattr(fuzz, kind)(*args)

    try:
        check()
    finally:
        raw.close()
    counts = dict(sorted(fuzz.counts.items()))
    for name, value in counts.items():
        record_property(f"faults.values_{name.replace(' ', '_')}", value)
    record_property("faults.values_inputs", tried)
    print(f"\n{api.kind} {api.kwargs['engine']}: {tried} inputs: {counts}")
    assert sum(counts.values()) == tried
    assert tried >= FUZZ_INPUTS * fault_trials // 20, tried
