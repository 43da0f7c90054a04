"""Hostile input: every user string either round-trips exactly or is refused clearly.

Property tests (hypothesis) feed metric names, metric values, tags, link kinds,
experiment names, comments, JSON for args/env/extras, PostgreSQL schema names,
config values and SQLite file names drawn from hostile alphabets: quotes,
semicolons, ``--``, ``/* */``, NUL, placeholders, reserved words (``select``,
``run_id``), lone surrogates, look-alike letters, and very long incompressible
strings. For each value, on both engines:

* either it is stored and read back exactly (with the raw SQL of the engine),
* or the call raises ValueError or TypeError whose message shows the value
  (its repr, or a part of it), and the database schema (tables and columns) is
  exactly as before.

One database per test function, shared by its examples. ``--fault-trials=N``
scales the number of examples (N / 20 times the defaults below). A static test
at the end checks that sqltrack builds SQL text only from reviewed pieces
(quoted identifiers, placeholders, fixed names), never from user text.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import random
import re
import string
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from support.helpers import pg_params

import sqltrack
from sqltrack.metrics.names import check_metric_name

pytestmark = pytest.mark.faults

# -- hostile alphabets -----------------------------------------------------------------------
PIECES = [
    "'", '"', "''", ";", "--", "/*", "*/", "\x00", "\\", "`", "%s", "%(x)s", "%", "?", "?1",
    ":name", "$1", "$$", "{}", "select", "SELECT", "drop table runs", "run_id", "step",
    "progress", "metrics", "runs", "NULL", "true", "pg_", " ", "\n", "\t", "\r", "é", "ß", "İ",
    "\u212a", "🚀", "\ufeff", "\u202e", "\u0301", "\ud800", "\udc80", "\udfff", "x", "_", "0",
]
ALNUM = string.ascii_letters + string.digits


def incompressible(seed: int, length: int) -> str:
    """Random letters and digits: text no database can compress into a short index entry."""
    rnd = random.Random(seed)
    return "".join(rnd.choices(ALNUM, k=length))


short_hostile_text = st.one_of(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join),
    st.text(max_size=30),
)
long_text = st.one_of(
    st.builds(lambda piece, n: piece * n, st.sampled_from(["x", "é", "'", "🚀", ";--"]),
              st.integers(60, 70)),
    st.builds(incompressible, st.integers(0, 2**32),
              st.sampled_from([255, 1000, 1990, 2010, 2800, 5000])),
)
hostile_text = st.one_of(short_hostile_text, short_hostile_text, long_text)
#: Valid identifiers, a bounded set (every one becomes a column): reserved words, case
#: variants, the length limit; hostile text adds the invalid ones.
VALID_NAMES = [
    "select", "SELECT", "Select", "from", "table", "order", "user", "group", "null", "_",
    "__", "_1", "a", "A", "loss", "Loss", "LOSS", "x" * 62, "y" * 63, "z" * 64, "run_ID_",
    "step_", "progress2", "drop", "DROP_TABLE_runs", "metrics", "runs", "experiments",
    *(f"m{n}_{chr(97 + n % 26)}" for n in range(120)),
]
metric_names = st.one_of(
    st.sampled_from(VALID_NAMES),
    st.sampled_from(["run_id", "RUN_ID", "Step", "progress", "1abc", "a-b", "a b", "é", "K"]),
    hostile_text,
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), short_hostile_text, short_hostile_text,
    long_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(short_hostile_text, json_values, max_size=4)


def scaled(examples: int, trials: int) -> int:
    return max(10, examples * trials // 20)


def run_examples(examples: int, trials: int):
    return settings(
        max_examples=scaled(examples, trials),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# -- reading back ---------------------------------------------------------------------------
def query(client, text: str, params: Any = ()) -> list[tuple]:
    """Raw SQL with ``%s`` placeholders on either engine."""
    if client.engine == "sqlite":
        text = text.replace("%s", "?")
    return client.execute(text, params)


def snapshot(client) -> frozenset:
    """Tables, columns and indexes of the client's schema."""
    if client.engine == "sqlite":
        objects = query(client, "SELECT type, name, tbl_name, sql FROM sqlite_master")
        columns = [
            (table, *column[1:3])
            for (kind, table, _, _) in objects if kind == "table"
            for column in query(client, f"PRAGMA table_info(\"{table}\")")
        ]
        return frozenset(objects) | frozenset(columns)
    columns = query(client, "SELECT table_name, column_name, data_type FROM "
                    "information_schema.columns WHERE table_schema = current_schema()")
    indexes = query(client, "SELECT tablename, indexname FROM pg_indexes "
                    "WHERE schemaname = current_schema()")
    return frozenset(columns) | frozenset(indexes)


def parts(value: Any) -> list[Any]:
    """The value, and every key and leaf inside it."""
    found = [value]
    if isinstance(value, dict):
        for key, item in value.items():
            found += [key, *parts(item)]
    elif isinstance(value, (list, tuple)):
        for item in value:
            found += parts(item)
    return found


def mentions(message: str, value: Any) -> bool:
    """Whether an error message shows the value: its repr, or the repr of a part of it."""
    if repr(value) in message:
        return True
    for part in parts(value):
        shown = repr(part)
        if len(shown) >= 3 and (shown in message or len(shown) > 40 and shown[:40] in message):
            return True
        if isinstance(part, str) and len(shown) >= 5 and shown[1:-1] in message:
            return True  # e.g. inside a driver message that quotes it another way
    return False


def check_refused(error: BaseException, value: Any, before: frozenset, client) -> None:
    assert isinstance(error, (ValueError, TypeError)), (
        f"{value!r} was refused with {type(error).__name__}: {error}"
    )
    assert mentions(str(error), value), f"error for {value!r} does not show it: {error}"
    assert snapshot(client) == before, f"the schema changed after refusing {value!r}"


class Watch:
    """Calls with hostile values; checks each refusal, and the schema after it."""

    def __init__(self, client) -> None:
        self.client = client
        self.known = snapshot(client)

    def attempt(self, call, value: Any) -> bool:
        """Run ``call()``; True if it went through, False if refused as it should be."""
        try:
            call()
        except Exception as error:  # noqa: BLE001 - checked here
            check_refused(error, value, self.known, self.client)
            return False
        return True

    def changes(self) -> frozenset:
        """What an accepted call added to the schema."""
        now = snapshot(self.client)
        added, self.known = now - self.known, now
        return added


def canonical(value: Any) -> Any:
    """A JSON value compared as JSON: numbers by their decimal value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    return [canonical(v) for v in value]


def json_cell(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def hclient(client_kwargs):
    client = sqltrack.Client(**client_kwargs)
    yield client
    client.close()


@pytest.fixture
def hrun(hclient):
    experiment = sqltrack.Experiment(hclient, name="hostile")
    return experiment, experiment.get_run(), experiment.get_run()


@pytest.fixture
def counter(record_property):
    """Counts the examples a test tried; reported in the fault-injection figures."""
    tried = itertools.count()
    yield lambda: next(tried)
    record_property("faults.hostile_cases", next(tried))


# -- metric names and values -------------------------------------------------------------------
def test_metric_names(hclient, hrun, fault_trials, counter):
    _, run, _ = hrun

    watch = Watch(hclient)

    @run_examples(400, fault_trials)
    @given(name=metric_names)
    def check(name):
        step = counter()
        if not watch.attempt(lambda: run.add_metrics({name: 1.5}, step=step), name):
            return
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name), f"accepted {name!r}"
        stored = query(hclient, f'SELECT "{name}" FROM metrics WHERE run_id = %s AND step = %s',
                       [run.id, step])
        assert stored == [(1.5,)], (name, stored)
        added = watch.changes()  # the new column, (SQLite) the table's new SQL
        assert all(any(name in str(part) for part in item) for item in added), (name, added)

    check()


def test_metric_text_values(hclient, hrun, fault_trials, counter):
    _, run, _ = hrun

    run.add_metrics({"text_value": "first"}, step=-1)  # the column exists
    watch = Watch(hclient)

    @run_examples(200, fault_trials)
    @given(value=hostile_text)
    def check(value):
        step = counter()
        if watch.attempt(lambda: run.add_metrics({"text_value": value}, step=step), value):
            stored = query(hclient, "SELECT text_value FROM metrics WHERE run_id = %s "
                           "AND step = %s", [run.id, step])
            assert stored == [(value,)]

    check()


# -- tags, link kinds, names, comments -------------------------------------------------------
def test_tags(hclient, hrun, fault_trials, counter):
    experiment, run, _ = hrun

    watch = Watch(hclient)

    @run_examples(200, fault_trials)
    @given(tag=hostile_text)
    def check(tag):
        number = counter()
        table, target = ("runs", run) if number % 2 else ("experiments", experiment)
        if watch.attempt(lambda: target.set_tags(tag), tag):
            stored = query(hclient, f"SELECT tags FROM {table} WHERE id = %s", [target.id])
            assert json_cell(stored[0][0]) == {tag: True}

    check()


def test_link_kinds(hclient, hrun, fault_trials, counter):
    _, run, other = hrun

    watch = Watch(hclient)

    @run_examples(200, fault_trials)
    @given(kind=hostile_text)
    def check(kind):
        counter()
        if watch.attempt(lambda: run.add_link(kind, other.id), kind):
            stored = query(hclient, "SELECT kind FROM run_links WHERE from_id = %s", [run.id])
            assert stored == [(kind,)]
            run.remove_link(kind, other.id)
            assert query(hclient, "SELECT kind FROM run_links WHERE from_id = %s",
                         [run.id]) == []

    check()


def test_experiment_names(hclient, hrun, fault_trials, counter):
    experiment, _, _ = hrun

    watch = Watch(hclient)

    @run_examples(200, fault_trials)
    @given(name=hostile_text)
    def check(name):
        number = counter()
        if number % 2:
            renamed = f"{number}:{name}"
            if watch.attempt(lambda: experiment.set_name(renamed), renamed):
                stored = query(hclient, "SELECT name FROM experiments WHERE id = %s",
                               [experiment.id])
                assert stored == [(renamed,)]
            return
        made = []
        if watch.attempt(lambda: made.append(sqltrack.Experiment(hclient, name=name)), name):
            stored = query(hclient, "SELECT name FROM experiments WHERE id = %s", [made[0].id])
            assert stored == [(name,)]

    check()


def test_comments(hclient, hrun, fault_trials, counter):
    experiment, run, _ = hrun

    watch = Watch(hclient)

    @run_examples(150, fault_trials)
    @given(comment=hostile_text)
    def check(comment):
        number = counter()
        table, target = ("runs", run) if number % 2 else ("experiments", experiment)
        if watch.attempt(lambda: target.set_comment(comment), comment):
            stored = query(hclient, f"SELECT comment FROM {table} WHERE id = %s", [target.id])
            assert stored == [(comment,)]

    check()


# -- JSON -----------------------------------------------------------------------------------
def test_json_args_env_extras(hclient, hrun, fault_trials, counter):
    _, run, _ = hrun

    watch = Watch(hclient)

    @run_examples(200, fault_trials)
    @given(value=json_objects, column=st.sampled_from(["args", "env", "extras"]))
    def check(value, column):
        counter()
        setter = getattr(run, f"set_{column}")
        if watch.attempt(lambda: setter(value), value):
            stored = query(hclient, f"SELECT {column} FROM runs WHERE id = %s", [run.id])
            assert canonical(json_cell(stored[0][0])) == canonical(value)

    check()


def test_json_nested_too_deeply_is_refused(hclient, hrun, counter):
    _, run, _ = hrun
    deep: list = []
    inner = deep
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]
    for column in ("args", "env", "extras"):
        counter()
        before = snapshot(hclient)
        with pytest.raises(ValueError, match="nested") as caught:
            getattr(run, f"add_{column}")({"deep": deep})
        check_refused(caught.value, "deep", before, hclient)


# -- schema names and config values ------------------------------------------------------------
def test_schema_names(pg_dsn, fault_trials, counter):
    params = pg_params(pg_dsn)

    def schemas() -> set[str]:
        with psycopg.connect(pg_dsn) as conn:
            return {name for (name,) in conn.execute("SELECT nspname FROM pg_namespace")
                    if not name.startswith("t_")}

    @run_examples(20, fault_trials)
    @given(name=hostile_text.filter(bool))
    def check(name):
        counter()
        before = schemas()
        client = None
        try:
            client = sqltrack.Client(engine="postgres", **params, schema=name)
            current = client.execute("SELECT current_schema()")
            tables = client.execute("SELECT count(*) FROM information_schema.tables "
                                    "WHERE table_schema = current_schema()")
        except Exception as error:  # noqa: BLE001 - checked here
            assert isinstance(error, (ValueError, TypeError)), f"{name!r}: {error!r}"
            assert mentions(str(error), name), f"error for {name!r} does not show it: {error}"
            assert schemas() == before, f"a schema was created for {name!r}"
            return
        finally:
            if client is not None:
                client.close()
        try:
            assert current == [(name,)], (name, current)
            assert tables[0][0] >= 6
        finally:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(name)))

    check()


NUMBER_SETTINGS = {
    "pool_min_size": (int, 0), "pool_max_size": (int, 1), "pool_timeout": (float, None),
    "flush_rows": (int, 1), "flush_interval": (float, None), "buffer_max_rows": (int, 0),
}
config_values = st.one_of(
    hostile_text,
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["1", "5", "0.5", " 3 ", "1e3", "0x10", "nan", "inf", "-inf", "-1", "0",
                     "true", "yes", "off", "1; DROP TABLE runs", "2 --", "1/*x*/", "١٢"]),
    st.lists(st.integers(), max_size=2),
)


def test_config_values(tmp_path, fault_trials, counter):
    dbpath = tmp_path / "never-created.db"

    @run_examples(500, fault_trials)
    @given(key=st.sampled_from([*NUMBER_SETTINGS, "buffered", "engine"]), value=config_values)
    def check(key, value):
        counter()
        try:
            client = sqltrack.AsyncClient(**{"engine": "sqlite", "dbpath": str(dbpath),
                                             key: value})
        except Exception as error:  # noqa: BLE001 - checked here
            assert isinstance(error, (ValueError, TypeError)), f"{key}={value!r}: {error!r}"
            assert mentions(str(error), value), f"{key}={value!r}: {error}"
            return
        finally:
            assert not dbpath.exists()
        got = client.settings.engine if key == "engine" else getattr(client.settings, key)
        if key == "engine":
            assert got == str(value).lower(), (value, got)
        elif key == "buffered":
            assert isinstance(got, bool)
        else:
            kind, low = NUMBER_SETTINGS[key]
            assert type(got) is kind and math.isfinite(got), (key, value, got)
            assert got >= low if low is not None else got > 0, (key, value, got)
            assert got == kind(value.strip() if isinstance(value, str) else value)

    check()


def test_sqlite_file_names(tmp_path, fault_trials, counter):
    names = hostile_text.filter(
        lambda n: n.strip(".") and "/" not in n
        and len(n.encode("utf-8", "surrogatepass")) < 200
    )

    @run_examples(100, fault_trials)
    @given(name=names)
    def check(name):
        number = counter()
        folder = tmp_path / str(number)
        folder.mkdir()
        path = str(folder / name)
        client = None
        try:
            client = sqltrack.Client(engine="sqlite", dbpath=path)
            client.execute("SELECT count(*) FROM runs")
        except Exception as error:  # noqa: BLE001 - checked here
            assert isinstance(error, (ValueError, TypeError)), f"{name!r}: {error!r}"
            assert mentions(str(error), name), f"error for {name!r} does not show it: {error}"
            assert list(folder.iterdir()) == []
            return
        finally:
            if client is not None:
                client.close()
        assert [p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm"))] == [
            name
        ]

    check()


# -- static: SQL text is built from reviewed pieces only --------------------------------------
SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|ALTER|CREATE|DROP|PRAGMA|WHERE|VALUES|FROM|JOIN|ORDER BY|"
    r"LIMIT|SET|ON CONFLICT|RETURNING)\b"
)
#: Every expression sqltrack interpolates into SQL text, per file (so a reviewed name such
#: as ``marks`` in one module does not pass an unreviewed ``marks`` in another), with why it
#: carries no user text. A new one fails the test: check where its text comes from, then
#: add it under its file; an entry no code uses any more fails it too. A key starting with
#: ``+ `` is a piece of a ``+`` / ``%`` concatenation that holds SQL words.
REVIEWED: dict[str, dict[str, str]] = {
    'sqltrack/cli/commands.py': {
        "', '.join(tables)":
            'cli.commands: the line printed after setup --ui-role (table names)',
        'DEFAULT_READER':
            'cli.commands: the --ui-role help text (argparse), never run as SQL',
        'args.ui_role':
            'cli.commands: the line printed after setup --ui-role, never run as SQL',
        'marks':
            "placeholders only ('%s' / '?' / '$n' joined by commas)",
    },
    'sqltrack/copy/transfer.py': {
        '_RUN_COLUMNS':
            "transfer: a constant string of the runs table's column names",
        '_WHERE_RUN':
            "transfer: constant 'WHERE source_key = %s AND source_run_id = %s'",
        '_quote(client, columns)':
            'transfer._read_rows: quote_ident of metric columns of metrics',
        '_quote(self.src, place.columns)':
            "transfer._page: quote_ident of the source's metric columns",
        'last':
            'transfer._last_key: the constant ORDER BY step DESC, progress DESC LIMIT 1',
        'marks':
            "placeholders only ('%s' / '?' / '$n' joined by commas)",
        'name_filter':
            "read.queries: '' or ' AND v.name IN (%s, ...)' (placeholders only)",
        'slots':
            'transfer._read_rows: the constant value columns of metric_values (_LONG_SLOTS)',
        'table':
            "a fixed table name ('run_links' / 'experiment_links') chosen by sqltrack",
        'where':
            'dialects.reader_setup: quote_ident(schema), or the constant public; transfer: '
            'the constants _UP_TO / _FROM / _AFTER joined by AND (placeholders)',
    },
    'sqltrack/engines/base.py': {
        'aggregates':
            'Dialect.curve_extremes: MIN / MAX / COUNT of each value (reviewed below)',
        'bare':
            'Dialect.curve_extremes: the values (reviewed below) joined by commas',
        'columns':
            'Dialect.curve_extremes: the constant names lo<k>, hi<k>, n<k> (ints)',
        'k':
            'Dialect.curve_extremes: an int (a value\'s index), formatted with :d',
        'kinds':
            "Dialect.curve_extremes: 'SELECT <int> AS k' joined by UNION ALL",
        'named':
            'Dialect.curve_extremes: the constant names v<k> (ints)',
        'one':
            'Dialect.curve_extremes: a bool, formatted with :d',
        "pick['hi']":
            "Dialect.curve_extremes: 'WHEN <int> THEN hi<int>' arms",
        "pick['lo']":
            "Dialect.curve_extremes: 'WHEN <int> THEN lo<int>' arms",
        "pick['n']":
            "Dialect.curve_extremes: 'WHEN <int> THEN n<int>' arms",
        "pick['v']":
            "Dialect.curve_extremes: 'WHEN <int> THEN v<int>' arms",
        'progresses':
            "Dialect.curve_extremes: 'WHEN <int> THEN (SELECT ...)' arms of reviewed pieces",
        'steps':
            "Dialect.curve_extremes: 'WHEN <int> THEN (SELECT ...)' arms of reviewed pieces",
        'v':
            'curve_extremes / ui.curves: a value: quote_ident(metric column) or a constant '
            'metric_values slot, maybe inside CAST(... AS INTEGER)',
        'begin':
            'Dialect.curve_extremes: an int, formatted with :d',
        'buckets':
            'Dialect.line_extremes: an int, formatted with :d',
        'compound':
            'Dialect.curve_extremes: SELECT terms built just above from reviewed pieces, '
            'joined by UNION ALL',
        'end':
            'Dialect.curve_extremes: an int, formatted with :d',
        'index':
            'dialects.curve_extremes: an int, formatted with :d',
        'size':
            'Dialect.line_extremes: an int (buckets + 2), formatted with :d',
        'size - 1':
            'Dialect.line_extremes: an int (buckets + 1), formatted with :d',
        'stamp':
            "Dialect.line_extremes: the dialect's epoch_ms of the constant column m.time",
        'table':
            "a fixed table name ('run_links' / 'experiment_links') chosen by sqltrack",
        'values':
            'Dialect.line_extremes: placeholder rows only ((%s, ...) joined by commas)',
        'where':
            'dialects.reader_setup: quote_ident(schema), or the constant public; transfer: '
            'the constants _UP_TO / _FROM / _AFTER joined by AND (placeholders); '
            "line_extremes: ui.curves' 'run_id = %s AND value' + _FINITE + since",
    },
    'sqltrack/engines/dialects.py': {
        'READER_FUNCTION':
            "engines.postgres: the constant name of the reader's function",
        '_LONG_PART':
            'dialects: the constant SELECT over metric_values',
        'colocated[table]':
            'dialects._distribute_new_tables: the constant COLOCATED_TABLES column',
        'count':
            'dialects.partition_steps: an int (the setting partitions), formatted with :d',
        'i':
            'dialects.partition_steps: an int from range(count), formatted with :d',
        'int(oid)':
            'dialects.partition_steps: an index oid from the catalog, formatted with :d',
        'old':
            'dialects.partition_steps: a constant PARTITIONED_TABLES name + _unpartitioned',
        'column':
            'dialects.distribute_steps: a constant distribution column; '
            'sqlite._long_upsert_sql: a constant value column of metric_values',
        'constraint':
            'dialects (upgrade step): quote_ident of a constraint name from the catalog',
        'definition':
            "engines.postgres: c<i> <type> column definitions, the types being the server's "
            'own format_type of the described query',
        'function':
            'dialects.reader_setup: quoted schema + the constant READER_FUNCTION name',
        'buckets':
            'PostgresDialect.line_extremes: an int, formatted with :d',
        'low':
            'dialects.curve_extremes: an int, formatted with :d',
        'micros':
            'PostgresDialect.line_extremes: the constant µs expression of the column m.time',
        'stamp':
            "PostgresDialect.line_extremes: epoch_ms of the constant column m.time",
        'values':
            'PostgresDialect.line_extremes: placeholder rows only (CAST(%s AS ...) joined)',
        'aggregates':
            'PostgresDialect.curve_extremes: MIN / MAX (FILTER) of key and COUNT of each value',
        'begin':
            'PostgresDialect.curve_extremes: an int, formatted with :d',
        'end':
            'PostgresDialect.curve_extremes: an int, formatted with :d',
        'k':
            "PostgresDialect.curve_extremes: an int (a value's index), formatted with :d",
        'keys':
            'PostgresDialect.curve_extremes: CASE WHEN value IS NOT NULL THEN ARRAY[CAST('
            'value ...), CAST(step ...), CAST(progress ...)] END AS a<int>, value AS v<int>',
        'FINITE':
            'PostgresDialect.curve_points_of: the constant finite-number test of base.FINITE '
            '(BETWEEN two float literals)',
        'sql':
            "PostgresDialect.curve_points_of: a statement of curve_extremes_of (reviewed here)",
        'offset + k':
            "PostgresDialect.curve_extremes_of: an int (a value's index in the statement), "
            'formatted with :d',
        'marks':
            "placeholders only ('%s' / '?' / '$n' joined by commas)",
        'name':
            'dialects.distribute_steps: quote_ident(conname), quoted by the server',
        'pick':
            'dialects (SQLite view): CASE of text(name) THEN m.quote(name) for metric columns'
            ' read from the schema',
        'quoted':
            'a metric name passed through engine.quote_ident (sql.Identifier on PostgreSQL)',
        'role':
            'dialects.reader_setup: a role name passed by check_role_name ([a-z_][a-z0-9_]*)',
        'self.quote_ident(t)':
            'dialects.reader_setup: quote_ident of the constant READER_TABLES',
        'self.quote_ident(table)':
            "dialects.advance_id_steps: quote_ident of 'runs' / 'experiments'",
        'sequence':
            'dialects.advance_id_steps: the constant sequence subquery (%s placeholder)',
        'status':
            'one of the constant values.STATUSES (schema upgrade adds missing enum values)',
        'table':
            "a fixed table name ('run_links' / 'experiment_links') chosen by sqltrack",
        'text(json.dumps(kinds))':
            "dialects (SQLite view): a quoted SQL string literal of the columns' JSON (quotes"
            ' doubled)',
        'where':
            'dialects.reader_setup: quote_ident(schema), or the constant public; transfer: '
            'the constants _UP_TO / _FROM / _AFTER joined by AND (placeholders); '
            "line_extremes: ui.curves' 'run_id = %s AND value' + _FINITE + since",
        'wide':
            'dialects (SQLite view): the SELECT built just above from reviewed pieces',
        'width':
            'dialects.curve_extremes: an int, formatted with :d',
    },
    'sqltrack/engines/postgres.py': {
        "', '.join(outs)":
            'engines (_capped_query): CASE / substring / left over columns c<i> with the int '
            'cap, and the lengths n<i>',
        "+ ', '.join(lengths)":
            'engines.postgres._capped_query: octet_length(c<i>) AS n<i> (ints)',
        'READER_FUNCTION':
            "engines.postgres: the constant name of the reader's function",
        'arrays':
            'postgres (long upsert): $n placeholders with constant casts',
        'key':
            "postgres (one row's long upsert): three $n placeholders with constant casts",
        'source':
            'postgres (long upsert): SELECT of the key placeholders and unnest(arrays), '
            'constants',
        'conflict':
            'postgres (_placed_sql): empty, or the constant ON CONFLICT clause of '
            'metric_values with the constant updates of its value columns',
        'binary_format':
            "the constant ' (FORMAT BINARY)' or nothing (postgres _copy_sql)",
        'cap':
            "engines (users' SQL, _capped_query): Limits.value_cap, an int formatted with :d",
        'columns':
            'fixed column names and metric names quoted by sql.Identifier / quote_ident',
        'definition':
            "engines.postgres: c<i> <type> column definitions, the types being the server's "
            'own format_type of the described query',
        'i':
            "engines (users' SQL, _capped_query): a column number, an int formatted with :d",
        'inner':
            'engines.postgres._capped_query: the column aliases c<i> (ints)',
        'lateral':
            "engines.postgres._capped_query: '' or a LATERAL of octet_length(c<i>) AS n<i>",
        'pairs':
            "'($n::bigint, $n::timestamptz)' placeholder pairs (postgres _combined_sql)",
        'placeholder(1)':
            'a placeholder',
        'placeholder(2)':
            'a placeholder',
        'prefix':
            "'' or, behind a pooler, sql.Identifier(schema).as_string() + '.'",
        'slot':
            'postgres / queries: a value column name from the constant LONG_SLOT(S) tables',
        'text':
            "engines.postgres._read_as: the users' statement itself, wrapped to cut long "
            "values and run by the reader's function (read only, as the reader role): users' "
            'SQL is what the page runs, with the guards of ui.readonly',
        'updates':
            "'<quoted> = EXCLUDED.<quoted>' from quoted metric names",
        'values':
            'rows of placeholders (postgres _upsert_text)',
    },
    'sqltrack/engines/sqlite.py': {
        '_KIND_TYPES[kind]':
            'a column type from a fixed table',
        'aliases':
            "engines.sqlite._capped_query: the CTE's column names c<i> (ints)",
        'column':
            'dialects.distribute_steps: a constant distribution column; '
            'sqlite._long_upsert_sql: a constant value column of metric_values',
        'columns':
            'fixed column names and metric names quoted by sql.Identifier / quote_ident',
        'marks':
            "placeholders only ('%s' / '?' / '$n' joined by commas)",
        'outs':
            'engines.sqlite._capped_query: CASE / substr over columns c<i> with the int cap',
        'quote_ident(name)':
            'sqlite (add columns): quote_ident of a name passed by check_metric_name',
        'sql':
            "engines.sqlite._read_only: the users' statement itself, wrapped to name its "
            'columns or cut long values, run on the read-only connection with the authorizer',
        'updates':
            "'<quoted> = EXCLUDED.<quoted>' from quoted metric names",
    },
    'sqltrack/metrics/table.py': {
        'marks':
            "placeholders only ('%s' / '?' / '$n' joined by commas)",
    },
    'sqltrack/model/maintenance.py': {
        '+ sql':
            'SQL text built above from reviewed pieces',
    },
    'sqltrack/model/statements.py': {
        'HISTORY_RUN_COLUMNS':
            'model.statements: the constant column list of runs a fork copies',
        'LONG_VALUES':
            'model.statements: the constant value columns of metric_values',
        'assignment':
            "'<column> = %s' built by sqltrack from fixed column names and placeholders",
        'names':
            'metric names passed through engine.quote_ident',
        'table':
            "a fixed table name ('run_links' / 'experiment_links') chosen by sqltrack",
        'where':
            'dialects.reader_setup: quote_ident(schema), or the constant public; transfer: '
            'the constants _UP_TO / _FROM / _AFTER joined by AND (placeholders)',
    },
    'sqltrack/model/system_metrics.py': {
        "+ ', '.join([_ROW] * len(values))":
            "integrations.system: rows of the constant '(%s, ...)'",
        '+ _INSERT':
            'integrations.system: the constant INSERT INTO system_metrics ... VALUES',
    },
    'sqltrack/read/analysis.py': {
        "', '.join(RUN_COLUMNS)":
            'a constant tuple of column names',
        '+ sql':
            'SQL text built above from reviewed pieces',
    },
    'sqltrack/read/queries.py': {
        "' UNION '.join(parts)":
            'read.queries: SELECTs built above from constants and placeholders',
        "', '.join(('v.' + c for c in LONG_VALUES))":
            'read.queries: the constant value columns',
        "', '.join(selects)":
            'aggregates of quote_ident(name) metric columns',
        "+ ''.join((', ' + s for s in selects))":
            'latest values of quote_ident(name) metric columns',
        '+ sql':
            'SQL text built above from reviewed pieces',
        'METRIC_PAGE':
            'an int constant',
        '_PRESENT':
            "read.queries: the constant 'any value column is not NULL' test",
        'after':
            "read.queries: '' or ' AND ' + the constant _AFTER_KEY (placeholders)",
        'aggregates':
            'read.queries: COUNT/MIN/MAX of the constant value columns',
        'counts':
            'COUNT(<quote_ident(name)>) for metric columns',
        'marks':
            "placeholders only ('%s' / '?' / '$n' joined by commas)",
        'name_filter':
            "read.queries: '' or ' AND v.name IN (%s, ...)' (placeholders only)",
        'names':
            'metric names passed through engine.quote_ident',
        'quoted':
            'a metric name passed through engine.quote_ident (sql.Identifier on PostgreSQL)',
        'slot':
            'postgres / queries: a value column name from the constant LONG_SLOT(S) tables',
        'span':
            "read.queries: ' AND ' + the constants _FROM_KEY / _TO_KEY (placeholders)",
    },
    'sqltrack/schema/state.py': {
        'values':
            'rows of placeholders (postgres _upsert_text)',
        "+ ', '.join(['%s'] * len(names))":
            'schema.state: %s placeholders, one per mark name (constants)',
    },
    'sqltrack/ui/api.py': {
        'MAX_HISTORY_RUNS + 1':
            'ui.api: a constant int, formatted with :d',
        'marks':
            "placeholders only ('%s' / '?' / '$n' joined by commas)",
        'quoted':
            'a metric name passed through engine.quote_ident (sql.Identifier on PostgreSQL)',
    },
    'sqltrack/ui/curves.py': {
        '+ sql':
            'ui.curves.system_metrics: the SELECT built just above from reviewed pieces',
        "', '.join(['%s'] * len(part))":
            'ui.curves: placeholders only',
        '_FINITE':
            'ui.curves: the constant finite-number test (BETWEEN two float literals)',
        'extra':
            "ui.curves: '' or a constant key range of %s placeholders (_after_sql)",
        'finite':
            "ui.curves._points: '' or ' AND ' + place.finite (the value expression + the "
            "constant _FINITE test, or 1 = 1)",
        'frm':
            "ui.curves: 'FROM ' + place.table + ' WHERE ' + place.where (reviewed above)",
        'n':
            "ui.curves._last: an int (a run's index), formatted with :d",
        'len(terms)':
            "ui.curves._last: an int (a UNION ALL branch's index), formatted with :d",
        '5 * n + k':
            "ui.curves._stats: an int (a curve's index and a UNION ALL branch's), with :d",
        '5 * n + 4':
            "ui.curves._stats: an int (a curve's index and a UNION ALL branch's), with :d",
        'marks':
            "placeholders only ('%s' / '?' / '$n' joined by commas)",
        'max_points':
            'ui.curves: an int, formatted with :d',
        'max_points + 1':
            'ui.curves: an int, formatted with :d',
        'order':
            "ui.curves: '' or ' DESC'",
        'place.table':
            "ui.curves: the constant 'metrics' or 'metric_values'",
        'place.value':
            'ui.curves: quote_ident(metric column) or a constant slot (maybe CAST)',
        'place.where':
            "ui.curves: 'run_id = %s AND' + quote_ident(name) / constant slot + ' IS NOT "
            "NULL' + the constant after-key condition (placeholders)",
        'since':
            "ui.curves: '' or the constant ' AND time > %s' (placeholder) of system_metrics",
        'where':
            "ui.curves: 'WHERE run_id = %s AND value' + the constant _FINITE + since (above)",
        'stamp':
            "ui.curves: Dialect.epoch_ms of the constant column name 'time'",
        'table':
            "a fixed table name ('run_links' / 'experiment_links') chosen by sqltrack",
    },
    'sqltrack/ui/features.py': {
        'escape(SQL_EXAMPLE)':
            'ui.features: HTML of the /sql page (html.escape), never run as SQL',
        'escape(query)':
            'ui.features: HTML of the /sql page (html.escape), never run as SQL',
    },
    'sqltrack/ui/readonly.py': {
        'word':
            'ui.readonly: the text of a QueryRefused error message, never run as SQL',
    },
    'sqltrack/ui/summaries.py': {
        'keep_order':
            "engines: the dialect's constant Dialect.keep_order ('' or ' OFFSET 0')",
        'every':
            'ui.summaries: _order() over once<i> aliases (constants, r.id)',
        '+ columns':
            "ui.summaries: keys' once values (ui.table_sql: r.args / r.extras -> %s) AS once<i>",
        'SORTED_COLUMNS':
            'ui.summaries: the constant list of runs columns a sort carries',
        'key.raw.text':
            "ui.table_sql: a group key's raw value (r.args / r.extras -> %s, r.status)",
        "+ ', '.join(['%s'] * len(names))":
            'ui.summaries: %s placeholders, one per metric name',
        "+ ', '.join(grouped)":
            'ui.summaries: MIN/MAX (the constant AGGREGATES) of quote_ident(metric column) AS'
            ' a<n>',
        "+ ', '.join(long_grouped)":
            'ui.summaries: MIN/MAX(CASE WHEN v.name = %s THEN v.<constant LONG_SLOT column> '
            'END) AS b<i>',
        "+ ', '.join(selects)":
            'ui.summaries: fixed r.* columns, last/min/max of quote_ident(metric column) '
            "(names checked against the schema's metric columns), a.<a{n}> aliases",
        "dialect.json_object_keys('r.' + group)":
            "ui.summaries: the dialect's key set of the column r.args / r.extras (constants)",
        'exists':
            'ui.summaries: EXISTS over quote(n) metric columns, %s placeholders',
        'group':
            "ui.summaries: 'args' or 'extras', from the constant JSON_GROUPS",
        'in_experiment':
            "ui.summaries: the constant 'IN (SELECT id FROM runs WHERE experiment_id = %s)'",
        'order':
            'ui.summaries: _order(): the constants of SQL_SORTS, DESC and IS NULL, r.id',
        'quote(n)':
            'ui.summaries: quote_ident of a metric column name read from the schema',
        'quoted':
            'a metric name passed through engine.quote_ident (sql.Identifier on PostgreSQL)',
        "+ ' AND '.join((c.text for c in conditions))":
            'ui.summaries: the conditions of ui.table_sql (constants, %s placeholders for '
            'tags and search text)',
        'select':
            "ui.summaries._values: a key's raw value or parts, joined by commas (ui.table_sql:"
            ' constants, %s placeholders for keys)',
        "+ '' if by_raw else ', MIN(r.id)'":
            "ui.summaries._values: '' or the constant ', MIN(r.id)'",
    },
    'sqltrack/ui/table_sql.py': {
        'test':
            'ui.table_sql: a constant test over a tag (t.k, lower(), %s placeholders)',
        "test.replace('t.k', 't.key')":
            'ui.table_sql: the same constant test, json_each naming its column key',
        'group.upper()':
            "ui.table_sql: MIN or MAX, from summaries' constant AGGREGATES",
        'value':
            'ui.table_sql: a metric column (quote_ident) or a constant LONG_SLOT column, '
            'CAST for bool',
        'quoted':
            'ui.table_sql: quote_ident of a metric column name read from the schema',
        "test.format(status='lower(CAST(s AS TEXT))')":
            'ui.table_sql: a constant test over the lowercased status, %s placeholders',
    },
}
#: SQL text extended with '+': what may be on the other side.


def flatten(node: ast.BinOp, inner: set[int]) -> list[ast.expr]:
    """The operands of a chain ``a + b + c`` (inner links are noted in ``inner``)."""
    operands = []
    for side in (node.left, node.right):
        if isinstance(side, ast.BinOp) and isinstance(side.op, type(node.op)):
            inner.add(id(side))
            operands += flatten(side, inner)
        else:
            operands.append(side)
    return operands


def sql_interpolations() -> list[tuple[str, int, str]]:
    found: list[tuple[str, int, str]] = []
    inner: set[int] = set()
    root = Path(sqltrack.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(root.parent))
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if SQL_WORDS.search(text):
                    found += [(where, node.lineno, ast.unparse(v.value))
                              for v in node.values if isinstance(v, ast.FormattedValue)]
            elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
                if id(node) in inner:
                    continue
                sides = flatten(node, inner)
                if any(isinstance(s, ast.Constant) and isinstance(s.value, str)
                       and SQL_WORDS.search(s.value) for s in sides):
                    found += [(where, node.lineno, "+ " + ast.unparse(s)) for s in sides
                              if not isinstance(s, ast.Constant | ast.JoinedStr)]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "format" and isinstance(node.func.value, ast.Constant)
                  and isinstance(node.func.value.value, str)
                  and SQL_WORDS.search(node.func.value.value)):
                found.append((where, node.lineno, "str.format"))
    return found


def test_sql_text_is_built_from_reviewed_pieces_only():
    found = sql_interpolations()
    assert len(found) > 10  # the scan sees sqltrack's SQL
    unknown = [
        f"{where}:{line}: {expr}" for where, line, expr in found
        if expr not in REVIEWED.get(where, {})
    ]
    assert not unknown, (
        "SQL text built from unreviewed expressions (user text must go in parameters, "
        "metric names through quote_ident / sql.Identifier after check_metric_name):\n"
        + "\n".join(unknown)
    )
    used = {(where, expr) for where, _, expr in found}
    stale = [f"{where}: {expr}" for where, exprs in REVIEWED.items() for expr in exprs
             if (where, expr) not in used]
    assert not stale, "REVIEWED entries no code uses any more:\n" + "\n".join(stale)


def test_metric_names_reach_sql_quoted_after_validation():
    """The engines quote metric names; the metric table validates names before any column
    exists."""
    root = Path(sqltrack.__file__).parent
    postgres = (root / "engines" / "postgres.py").read_text(encoding="utf-8")
    sqlite = (root / "engines" / "sqlite.py").read_text(encoding="utf-8")
    metrics = (root / "metrics" / "table.py").read_text(encoding="utf-8")
    assert "sql.Identifier(n).as_string() for n in names" in postgres
    assert 'sql.Identifier(name), sql.SQL(_KIND_TYPES[kind])' in postgres
    assert """['"' + n.replace('"', '""') + '"' for n in names]""" in sqlite
    assert "ADD COLUMN {quote_ident(name)}" in sqlite
    assert "check_metric_name(name)" in metrics
    with pytest.raises(ValueError, match="DROP TABLE"):
        check_metric_name('x"; DROP TABLE runs; --')
