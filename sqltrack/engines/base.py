"""What every engine provides, in two parts: a pure ``Dialect`` and the I/O ``Engine``.

Everything above this layer (schema, metrics, client, experiments, runs) writes
SQL once, with ``%s`` placeholders, and asks the dialect for the few pieces that
differ. The engine owns the pool, the connections, transactions, statements and
the one metric write (``write_rows``, the hot path). Nothing here imports anything
above ``errors``, ``checks`` and ``config``, but the row layout
(``sqltrack.metrics.layout``, a leaf).

Block or not: a connection taken for a user block (``begin_block`` ..
``end_block``) keeps its statements in the block's transaction; any other
connection commits each statement at once. The engine knows which is which
(``in_block``), so no method takes an "oneshot" flag.

Errors: every driver error raised by a statement is translated here into the
``sqltrack.errors`` tree (the driver's exception is the ``__cause__``).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from ..config import Settings
from ..metrics.layout import MetricRow, Placement, Touch

#: Python kinds a metric column can hold; ``None`` means "declared by the user, not checked".
METRIC_KINDS = ("bool", "int", "float", "str", "datetime")

#: A driver connection (psycopg.AsyncConnection or aiosqlite.Connection).
Connection = Any
#: One row of parameters for a statement.
Params = Sequence[Any]



#: A float value between these is finite (NaN and the infinities are not); both engines.
FINITE = "BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"


class CurveSet(NamedTuple):
    """Curves whose extremes are read together (``Dialect.curve_extremes``' arguments):
    ``values`` over the rows ``FROM table WHERE where`` (``params``), ``buckets`` buckets
    of ``width`` steps from ``low``."""

    table: str
    where: str
    params: list[Any]
    values: Sequence[str]
    low: int
    width: int
    buckets: int


@dataclass(frozen=True)
class Limits:
    """What users' SQL may cost the process that runs it (the web page), enforced while
    the rows are fetched: at most ``max_rows`` rows (None: any number), at most
    ``max_bytes`` bytes of values in all (``value_size``: text as UTF-8, binary as the
    hex it is shown as, 8 a number; plus ``ROW_BYTES`` a row), and no value longer than
    ``value_cap`` bytes: a longer one arrives as a ``Cut`` (its first ``value_cap``
    characters or bytes)."""

    max_rows: int | None = 10_000
    max_bytes: int = 10 * 2**20
    value_cap: int = 100_000


#: What a row counts towards ``Limits.max_bytes`` besides its values.
ROW_BYTES = 24


@dataclass(frozen=True)
class Cut:
    """A value longer than ``Limits.value_cap``: its first part and its whole size (bytes)."""

    head: str | bytes
    size: int


@dataclass
class ReadRows:
    """What users' SQL gave: column names, rows (values as the driver reads them, or
    ``Cut``), and why fewer rows came than the query had (``"rows"``, ``"bytes"``; None:
    every row came)."""

    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    stopped: str | None = None
    #: The bytes counted towards ``Limits.max_bytes``.
    size: int = 0

    def keep(self, row: tuple[Any, ...], size: int, limits: Limits) -> bool:
        """Keep ``row`` (its values counted ``size`` bytes) unless a limit is reached:
        then note which (``stopped``) and return False (fetch no more)."""
        if limits.max_rows is not None and len(self.rows) >= limits.max_rows:
            self.stopped = "rows"
            return False
        if self.size + size + ROW_BYTES > limits.max_bytes:
            self.stopped = "bytes"
            return False
        self.rows.append(row)
        self.size += size + ROW_BYTES
        return True


def value_size(value: Any) -> int:
    """What a value counts towards ``Limits.max_bytes``: UTF-8 bytes of text, twice the
    bytes of binary (it is shown as hex), 8 for anything else (numbers, times; 1 for NULL)."""
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return 2 * len(value)
    if isinstance(value, Cut):
        return value_size(value.head)
    return 1 if value is None else 8


def stopped_after(timeout: float) -> str:
    """The reason of users' SQL stopped by its time limit."""
    return f"the query was stopped after {timeout:g} s (the time limit of the page)"


def capped(value: Any, cap: int) -> tuple[Any, int]:
    """``value`` (a ``Cut`` of it when over ``cap`` bytes) and what it counts."""
    size = value_size(value)
    if size <= cap or not isinstance(value, (str, bytes)):
        return value, size
    head = value[:cap]
    return Cut(head, size), value_size(head)


def quote_ident(name: str) -> str:
    """Quote an identifier: double quotes, doubled inside (the same on both engines)."""
    return '"' + name.replace('"', '""') + '"'


class Dialect(ABC):
    """The SQL differences of one engine: pure functions of their arguments, no I/O."""

    name: str
    #: The engine's I/O class, ``"module:Class"`` under ``sqltrack.engines`` (imported, with
    #: its driver, only when a client of the engine is made: ``make_engine``).
    engine_class: str

    #: Whether column names differing only in case are one column (SQLite): a metric
    #: name clashing so is refused before any column is added.
    case_insensitive_names = False
    #: What our own query read through subqueries (the page's reader) ends with after
    #: its ORDER BY so that the order survives them: PostgreSQL ``OFFSET 0`` (Citus keeps
    #: a subquery's ORDER BY only with a LIMIT or OFFSET); SQLite nothing (it keeps the
    #: order, and refuses OFFSET without LIMIT).
    keep_order = ""

    def sql(self, query: str) -> str:
        """Our own SQL is written with ``%s`` placeholders; dialects translate it.

        Never applied to users' SQL, which uses the driver's placeholders as written.
        """
        return query

    def quote_ident(self, name: str) -> str:
        """Quote an identifier (``quote_ident``: the same on both engines)."""
        return quote_ident(name)

    def script_statements(self, script: str) -> list[str]:
        """One of our own schema scripts as the pieces to run one at a time where the
        tables may exist already (an upgrade). This one: the script whole."""
        return [script]

    def curve_extremes_of(
        self, sets: Sequence[CurveSet],
    ) -> list[tuple[str, list[Any], list[int]]]:
        """``curve_extremes`` of several sets of curves (a compare's runs): statements
        ``(sql, params, covered)``, each giving the rows of the sets whose indexes
        ``covered`` lists, its ``k`` numbering their values in that order.

        This one: each set's own statements (SQLite reads them in-process, so fewer
        statements would save little, and its compound terms are few a statement).
        """
        return [(sql, params, [index]) for index, one in enumerate(sets)
                for sql, params in self.curve_extremes(*one)]

    def curve_points_of(
        self, sets: Sequence[CurveSet],
    ) -> list[tuple[str, list[Any], list[int]]] | None:
        """``curve_extremes_of``' rows made into one row a value by the database, or None
        where it cannot (this one: SQLite, whose JSON keeps 15 digits of a float and whose
        aggregates take no ORDER BY): see ``PostgresDialect.curve_points_of``."""
        return None

    #: Sub-ranges each bucket of ``curve_extremes`` is read as (see there).
    curve_parts = 4
    #: Compound terms per statement of ``curve_extremes`` at most (SQLite allows 500).
    curve_terms = 400

    def curve_extremes(
        self, table: str, where: str, params: list[Any], values: Sequence[str],
        low: int, width: int, buckets: int,
    ) -> list[tuple[str, list[Any]]]:
        """Statements giving, per value ``k`` of ``values`` (expressions over the rows ``FROM
        table WHERE where``; NULL: no value) and bucket ``i`` of steps ``[low + i*width,
        low + (i+1)*width)``, the row of its lowest and of its highest value: rows ``(k, i,
        y, step, progress, count)`` (the bucket's number of values on one of its rows, 0 on
        the other; ``y`` may be NaN or infinite, the caller asks again with a finite
        condition). The lowest's row is the first of the bucket with that value in key
        order. The rows are read once for all the values (the curves of a run drawn
        together), and no statement returns more than about ``4 * buckets`` rows (about
        ``2 * max_points``).

        This one: no sort of the rows. Each bucket is read as up to ``curve_parts``
        sub-ranges of steps, each one index range read giving each value's ``MIN``,
        ``MAX``, ``COUNT`` and the row SQLite takes bare columns from. A bucket's extreme is
        that of the first sub-range holding it; its row the first of that sub-range equal to
        it, read by key and stopping there (at most a quarter of the bucket), or, with one
        value, the bare row when it holds the extreme (then the first row of one of the two
        extremes). Whole buckets per statement, at most ``curve_terms`` sub-ranges each.
        """
        part = max(1, -(-width // self.curve_parts))
        per_statement = max(1, min(self.curve_terms // -(-width // part),
                                   -(-buckets // len(values))))
        aggregates = ", ".join(f"MIN({v}), MAX({v}), COUNT({v})" for v in values)
        columns = ", ".join(f"lo{k:d}, hi{k:d}, n{k:d}" for k in range(len(values)))
        one = len(values) == 1  # the bare row is one of the value's extremes' rows
        # the bare row (unused with several values: SQLite loads it far more often then)
        bare = f"step, progress, {values[0]}" if one else ", ".join(["NULL"] * (2 + len(values)))
        named = ", ".join(f"v{k:d}" for k in range(len(values)))
        pick = {name: " ".join(f"WHEN {k:d} THEN {name}{k:d}" for k in range(len(values)))
                for name in ("lo", "hi", "n", "v")}
        kinds = " UNION ALL ".join(f"SELECT {k:d} AS k" for k in range(len(values)))
        steps = " ".join(
            f"WHEN {k:d} THEN (SELECT step FROM {table} WHERE {where} AND step >= f.a "
            f"AND step < f.b AND {v} = f.y ORDER BY step, progress LIMIT 1)"
            for k, v in enumerate(values))
        progresses = " ".join(
            f"WHEN {k:d} THEN (SELECT progress FROM {table} WHERE {where} AND step = g.s "
            f"AND {v} = g.y ORDER BY progress LIMIT 1)" for k, v in enumerate(values))
        statements = []
        for first in range(0, buckets, per_statement):
            terms = []
            for index in range(first, min(buckets, first + per_statement)):
                start = low + index * width
                for begin in range(start, start + width, part):
                    end = min(begin + part, start + width)
                    terms.append(f"SELECT {index:d}, {begin:d}, {end:d}, {aggregates}, {bare} "
                                 f"FROM {table} WHERE {where} "
                                 f"AND step >= {begin:d} AND step < {end:d}")
            compound = " UNION ALL ".join(terms)
            # u: per value and sub-range, its extremes and count; x: with its bucket's
            # count and its rank for either extreme; f: the first sub-range of each
            # extreme (e 0: lowest, 1: highest); g: the row's step, then its progress. g is
            # grouped (one row a group already) so that SQLite does not copy its search of
            # the step into that of the progress.
            sql = (f"WITH r(i, a, b, {columns}, s, p, {named}) AS ({compound}), "
                   f"u AS (SELECT q.k AS k, i, a, b, CASE q.k {pick['lo']} END AS lo, "
                   f"CASE q.k {pick['hi']} END AS hi, CASE q.k {pick['n']} END AS n, s, p, "
                   f"CASE q.k {pick['v']} END AS v FROM r, ({kinds}) AS q), "
                   "x AS (SELECT k, i, a, b, lo, hi, s, p, v, "
                   "SUM(n) OVER (PARTITION BY k, i) AS n, "
                   "ROW_NUMBER() OVER (PARTITION BY k, i ORDER BY lo, a) AS rl, "
                   "ROW_NUMBER() OVER (PARTITION BY k, i ORDER BY hi DESC, a) AS rh "
                   "FROM u WHERE n > 0), "
                   "f AS (SELECT x.k AS k, i, CASE e WHEN 0 THEN lo ELSE hi END AS y, "
                   "CASE e WHEN 0 THEN n ELSE 0 END AS n, a, b, s, p, v "
                   "FROM (SELECT 0 AS e UNION ALL SELECT 1) AS t, x "
                   "WHERE e = 0 AND rl = 1 OR e = 1 AND rh = 1), "
                   f"g AS (SELECT k, i, y, n, p, v, CASE WHEN {one:d} AND v = y THEN s "
                   f"ELSE CASE k {steps} END END AS s FROM f GROUP BY k, i, n) "
                   f"SELECT k, i, y, s, CASE WHEN {one:d} AND v = y THEN p "
                   f"ELSE CASE k {progresses} END END, n FROM g")
            statements.append((sql, list(params) * (len(terms) + 2 * len(values))))
        return statements

    #: Lines per statement of ``line_extremes`` (8 parameters each; SQLite allows 32,766).
    lines_per_statement = 400

    def line_extremes(
        self, where: str, params: list[Any], lines: Sequence[tuple[Any, ...]], buckets: int,
    ) -> list[tuple[str, list[Any]]]:
        """Statements giving the readings kept of long ``system_metrics`` lines, in one
        pass over their rows ``WHERE where`` (``params``; columns unqualified). Each line
        is ``(rank, host, name, first, last, low, span)``: the times of its first and last
        readings (as stored; both kept) and a range of ``span`` milliseconds since 1970
        from ``low`` holding the readings between them, split into ``buckets`` of equal
        width; of each, the lowest and the highest reading (the earliest of equals) are
        kept. Rows ``(line, time, value)`` (``line``: the index in ``lines``) in that
        order, a reading kept twice coming twice in a row.

        This one: a GROUP BY per extreme, whose bare columns SQLite takes from the row of
        the ``MIN``/``MAX`` (the first such in key order), over the lines' rows read by key
        once; grouped by one integer (line and bucket), the sorts' records stay small.
        """
        stamp = self.epoch_ms("m.time")
        size = buckets + 2  # a line's buckets, its first and last readings' included
        statements = []
        for start in range(0, len(lines), self.lines_per_statement):
            part = lines[start:start + self.lines_per_statement]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(part))
            sql = (f"WITH l(k, rank, host, name, t_first, t_last, low, span) AS (VALUES {values}), "
                   f"s AS (SELECT l.k * {size:d} + CASE WHEN m.time = l.t_first THEN 0 "
                   f"WHEN m.time = l.t_last THEN {size - 1:d} "
                   f"ELSE 1 + ({stamp} - l.low) * {buckets:d} / l.span END AS key, "
                   "m.time AS time, m.value AS value "
                   "FROM l JOIN system_metrics m ON m.rank = l.rank AND m.host = l.host "
                   f"AND m.name = l.name WHERE {where}) "
                   f"SELECT key / {size:d}, time, MIN(value) FROM s GROUP BY key UNION ALL "
                   f"SELECT key / {size:d}, time, MAX(value) FROM s GROUP BY key ORDER BY 1, 2")
            rows = [(start + j, *line) for j, line in enumerate(part)]
            statements.append((sql, [x for row in rows for x in row] + list(params)))
        return statements

    @abstractmethod
    def epoch_ms(self, column: str) -> str:
        """SQL expression: the timestamp ``column`` as whole milliseconds since 1970 (an
        integer, exact for the stored times: buckets of time divide it without drift)."""

    @abstractmethod
    def json_param(self) -> str:
        """SQL for a JSON value given as a parameter (the parameter is ``dump_json`` output)."""

    @abstractmethod
    def json_merge(self, column: str) -> str:
        """SQL expression: ``column`` with the keys of a JSON object parameter merged in."""

    @abstractmethod
    def json_remove(self, column: str) -> str:
        """SQL expression: ``column`` without the keys listed in a parameter."""

    @abstractmethod
    def key_list_param(self, keys: Sequence[str]) -> Any:
        """The parameter value for ``json_remove``."""

    def dump_json(self, value: Any) -> Any:
        """The parameter value for a JSON column."""
        return json.dumps(value, allow_nan=True)

    def timestamp(self, value: datetime) -> Any:
        """The parameter value for a timestamp column."""
        return value

    def user_text(self, text: str) -> str:
        """A user's SQL text placed into a statement that also takes our parameters."""
        return text

    @abstractmethod
    def json_object_keys(self, column: str) -> str:
        """A table expression ``k`` of the top-level keys (column ``key``) of a JSON object
        column (no rows for a value that is not an object)."""

    @abstractmethod
    def read_only_setup(self, timeout: float) -> list[tuple[str, list[Any]]]:
        """Statements (with parameters) that make what follows read-only (users' SQL).

        PostgreSQL: the current transaction, each statement stopped after ``timeout``
        s; SQLite: the connection (its deadline is a progress handler, not SQL).
        """

    #: The engine's hard limit on the columns of a table (PostgreSQL counts dropped ones).
    max_columns: int = 1600

    def metric_view_script(self, columns: dict[str, str | None]) -> str | None:
        """The statements that make the view ``metric_values_all`` for these metric columns
        of ``metrics`` (None: the base schema's view reads any column by itself)."""
        return None

    @abstractmethod
    def metric_column_type(self, kind: str) -> str:
        """Column type for a new metric column of a Python kind (see METRIC_KINDS)."""

    def metric_value(self, value: Any) -> Any:
        """The parameter value for a metric (dialects override for what they cannot store)."""
        return value

    # -- schema set-up and upgrade: SQL that sqltrack.schema runs through the Engine ------
    #: The base schema script of the engine, a file in ``sqltrack/schema/``.
    schema_script: str
    #: Statements run outside any transaction before and after the schema set-up (the
    #: latter after a rollback): settings a transaction cannot change.
    before_schema_setup: tuple[str, ...] = ()
    after_schema_setup: tuple[str, ...] = ()
    #: Whether sqltrack 0.1.x used this engine: it runs its own ``base.sql`` unless that
    #: name is recorded, so the set-up records it too.
    shared_with_v01: bool = False

    @abstractmethod
    def tables_query(self, names: Sequence[str]) -> tuple[str, list[Any]]:
        """A query (``%s`` placeholders) and its parameters: which of ``names`` are tables
        of the database (of its current schema), one name a row."""

    def upgrade_steps(self, tables: set[str], statuses: Sequence[str]) -> Any:
        """The engine's own steps that bring an older sqltrack database up to date.

        Sans I/O: a generator that yields ``(sql, params)`` (``%s`` placeholders) and is
        sent each statement's rows (``sqltrack.schema.upgrade`` runs it, under the schema
        lock, before the base script). ``tables``: which of ``applied_migrations``,
        ``sqltrack_migrations`` and ``runs`` were there; ``statuses``: every run status.
        """
        yield from ()

    def distribute_steps(self, side_tables: Sequence[str] = ()) -> Any:
        """At the base schema's set-up (setting ``distribute``) and ``sqltrack setup
        --distribute``: spread the tables over the nodes of a distributed engine that the
        database turns out to be (PostgreSQL: Citus), and the ``side_tables`` that exist
        (``side_table_steps``). Sans I/O as ``upgrade_steps``; the generator returns what
        was done (None: nothing, the default)."""
        yield from ()
        return None

    def partition_steps(self, count: int) -> Any:
        """Make ``metrics`` and ``metric_values`` hash-partitioned by run id into ``count``
        partitions, in place, rows kept (setting ``partitions`` at creation, ``sqltrack
        setup --partitions N``). Sans I/O as ``distribute_steps``; returns what was done
        (``""``: partitioned so before). None: the engine has no partitioned tables."""
        yield from ()
        return None

    def side_table_steps(self, tables: Sequence[str]) -> Any:
        """Make sqltrack's small tables that name runs (sync's ``sync_runs``, made on
        demand) fit a distributed ``runs`` (PostgreSQL on Citus: no foreign key to it). Sans I/O
        as ``distribute_steps``, returns what was done; nothing by default."""
        yield from ()
        return None

    def advance_id_steps(self, table: str, new_id: int) -> Any:
        """After an insert of the explicit id ``new_id`` into ``table`` (``runs`` or
        ``experiments``), in the same transaction: the statements that move the table's
        id generator past it, so a generated id never collides with it.

        Sans I/O as ``upgrade_steps`` (yields ``(sql, params)``, is sent each one's rows).
        Nothing by default: an engine whose ids do this by themselves (SQLite's
        ``AUTOINCREMENT``) needs no statement.
        """
        yield from ()

    # -- where the database is: pure functions of the settings ---------------------------
    #: Whether the database is on a server (a wrong setting fails on connecting), not
    #: in a local file (which connecting would create).
    has_server: bool = False

    def database_path(self, settings: Settings) -> str | None:
        """The local file the database is in (None: on a server, in memory, or a URI)."""
        return None

    @abstractmethod
    def target_key(self, settings: Settings) -> str:
        """A key naming the database: engine, server or file, database, schema; no secret."""

    def portable_params(self, settings: Settings) -> dict[str, Any]:
        """The connection parameters, naming the same database from any working directory."""
        return dict(settings.params)

    @abstractmethod
    def describe(self, settings: Settings) -> str:
        """Where ``settings`` connect, in a few words (values as given: callers mask secrets)."""

    @abstractmethod
    def describe_spelled_out(self, settings: Settings) -> str:
        """Where ``settings`` connect, defaults spelled out (values as given, no password)."""

    # -- users' read-only SQL (sqltrack.ui.readonly) -------------------------------------
    def reader_setup(
        self, role: str, schema: str | None, tables: Sequence[str]
    ) -> list[tuple[str, list[Any]]]:
        """Statements creating the role users' SQL runs as (engines with roles only)."""
        raise ValueError(f"{self.name} has no roles")

    def refused_function(self, query: str) -> str | None:
        """A function named in ``query`` that users' SQL may not call (None: none)."""
        return None

    #: Whether ``read_only_setup`` applies to a whole connection, not a transaction: users'
    #: SQL then runs on a connection of its own (``read_only_uri``), the pool's write.
    read_only_per_connection: bool = False

    def read_only_uri(self, settings: Settings) -> str | None:
        """The URI of the database opened read only, for such a connection of its own
        (None: a second connection cannot see it, e.g. in memory)."""
        return None


class Engine(ABC):
    """One database engine: the pool of driver connections and every statement run on them."""

    name: str
    dialect: Dialect
    #: False: the schema set-up raises SchemaMissing instead of creating the base schema.
    create_schema: bool = True
    #: What opening did to the schema ("created ...", "upgraded ..."), None: nothing.
    schema_outcome: str | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- pool -----------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Create the pool (a wrong setting fails here). The client sets the schema up next."""

    @asynccontextmanager
    async def setup_connection(self) -> AsyncIterator[Connection]:
        """The connection the schema set-up runs on right after ``open`` (idle, not in a block)."""
        conn = await self.acquire()
        try:
            yield conn
        finally:
            await self.release(conn)

    @abstractmethod
    async def close(self) -> None:
        """Close every connection of the pool."""

    @abstractmethod
    async def acquire(self, timeout: float | None = None) -> Connection:
        """Take a driver connection from the pool (bounded wait, then PoolTimeout).

        ``timeout`` shortens the pool's own ``pool_timeout`` for this wait. A server
        that cannot be reached raises ServerUnreachable instead of PoolTimeout.
        """

    def server_name(self) -> str:
        """The server (or file) in words, for errors: no password."""
        return f"the {self.name} database"

    @abstractmethod
    async def release(self, conn: Connection) -> None:
        """Give a connection back to the pool, idle (a block still open is rolled back)."""

    async def recover(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """After ConnectionLost: drop the pool's dead connections."""

    # -- transactions ---------------------------------------------------------
    @abstractmethod
    async def begin_block(self, conn: Connection) -> None:
        """Make ``conn`` hold a transaction until ``end_block`` (``async with client``)."""

    @abstractmethod
    async def end_block(self, conn: Connection, commit: bool) -> None:
        """Commit or roll back the block's transaction; each statement commits at once again."""

    @abstractmethod
    def in_block(self, conn: Connection) -> bool:
        """Whether ``conn`` is between ``begin_block`` and ``end_block``."""

    @abstractmethod
    async def commit(self, conn: Connection) -> None:
        """Commit what the connection's block did so far (the block goes on)."""

    @abstractmethod
    async def rollback(self, conn: Connection) -> None:
        """Roll back what the connection's block did since its last commit."""

    @abstractmethod
    async def lock_schema(self, conn: Connection) -> None:
        """In a block: take the schema lock (until the block ends), so one process
        at a time creates or migrates the schema."""

    # -- statements -----------------------------------------------------------
    @abstractmethod
    async def cursor(self, conn: Connection) -> Any:
        """A driver cursor of ``conn`` (``async with`` it, or close it)."""

    @abstractmethod
    async def fetch(self, conn: Connection, sql: str, params: Any = ()) -> list[Any]:
        """Run one statement and return its rows (``[]`` when it returns none)."""

    @abstractmethod
    async def executemany(self, conn: Connection, sql: str, rows: Sequence[Any]) -> None:
        """Run one statement for each parameter row."""

    @abstractmethod
    async def executescript(self, conn: Connection, script: str) -> None:
        """Run several ``;``-separated statements without parameters."""

    @abstractmethod
    async def read_only(
        self, sql: str, params: Sequence[Any], timeout: float, limits: Limits,
        *, reader: str = "sqltrack_reader", allow_superuser: bool = False,
    ) -> ReadRows:
        """Users' SQL (the web page): column names and rows of one statement, read only.

        Bounded while it runs: everything here (waiting for a connection, running,
        fetching) stops after ``timeout`` s (QueryRefused), and rows are fetched a few
        at a time and counted (``ReadRows.keep``): at most ``limits.max_rows`` rows and
        ``limits.max_bytes`` bytes are kept, the fetching stopping at the first row past
        either (``ReadRows.stopped`` says which); values over ``limits.value_cap`` come
        cut (``Cut``). Nothing it does
        stays: the transaction is rolled back. QueryRefused with a one-line reason. An
        engine with roles runs it as the role ``reader`` and refuses a superuser login
        unless ``allow_superuser``.
        """

    # -- metrics --------------------------------------------------------------
    @abstractmethod
    async def metric_columns(self, conn: Connection) -> dict[str, str | None]:
        """Existing metric columns: name -> kind (None for types we do not check)."""

    #: Columns of ``metrics`` that were dropped but still count towards ``max_columns``
    #: (PostgreSQL), as last read by ``metric_columns``.
    dropped_columns: int = 0

    async def add_metric_column(self, conn: Connection, name: str, kind: str) -> None:
        """Add a metric column; succeed when another process added it at the same moment."""
        await self.add_metric_columns(conn, [(name, kind)], None)

    @abstractmethod
    async def add_metric_columns(
        self, conn: Connection, columns: Sequence[tuple[str, str]], lock_timeout: float | None
    ) -> bool:
        """Add metric columns ``(name, kind)`` in one statement (those another process
        added meanwhile are skipped). ``lock_timeout``: wait at most this many seconds for
        the table's lock; False when it was not granted (nothing added), or when the
        table cannot take more columns. None: wait as any statement does."""

    async def refresh_metric_view(self, conn: Connection) -> None:
        """Make the view ``metric_values_all`` again for the current columns (an engine
        whose view cannot read any column by itself: after users' migrations)."""
        script = self.dialect.metric_view_script(await self.metric_columns(conn))
        if script is not None:
            await self.executescript(conn, script)

    @abstractmethod
    async def write_rows(
        self,
        conn: Connection,
        names: tuple[str, ...],
        rows: Sequence[MetricRow],
        touches: Sequence[Touch],
        placement: Placement | None = None,
    ) -> None:
        """The one metric write: upsert rows of these metric names (``sqltrack.metrics.layout``,
        of one run or several) in order, a repeated key's later row winning, and set
        ``runs.time_updated`` of each ``(run_id, time)`` in ``touches``; all in one
        transaction, committed unless ``conn`` is in a block.

        The engine picks the fastest way its driver has for the size at hand (one
        prepared upsert, multi-row upserts, COPY) and builds each row's parameters once.
        Raises RunNotFound when the rows' one run does not exist (ForeignKeyViolation
        for rows of several runs).

        ``placement`` (None: every name is a column): which names are columns of
        ``metrics`` and which go to the long table ``metric_values``, written in the
        same transaction (a row whose names are all long adds no ``metrics`` row).
        """

    #: An optional capability: writing metric rows on the calling thread, without the
    #: event loop's hop to a worker (None: the engine has none; see ThreadWriter).
    thread_writer: ThreadWriter | None = None


class ThreadWriter(ABC):
    """Writes metric rows on the calling thread's own connection (an engine's option).

    For an engine whose writes are cheap local calls (SQLite): the blocking API's
    ``add_metrics`` and the event loop's own writes skip the hop to a worker thread.
    """

    @abstractmethod
    def write(
        self,
        names: tuple[str, ...],
        rows: Sequence[MetricRow],
        touches: Sequence[Touch],
        wait: bool,
        placement: Placement | None = None,
    ) -> bool:
        """``Engine.write_rows`` on the calling thread, committed; False: nothing written.

        ``wait`` False (the event loop's thread): never block; False when the write
        would wait (another writer holds the lock), when it is this write's turn to
        go through the pool instead (see the engine), or when the thread's connection
        is not ready yet. ``wait`` True (a thread that runs no event loop): wait for
        the lock as the pool's connections do, and write.
        """


def is_nan(value: Any) -> bool:
    """Whether ``value`` is a float NaN."""
    return isinstance(value, float) and math.isnan(value)
