"""The SQL dialect of each engine: placeholders, JSON pieces, column types, the schema's
set-up and upgrade steps, where the settings point (pure, no I/O, no driver)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ..config import DEFAULT_SQLITE_PATH, Settings
from .base import FINITE, CurveSet, Dialect, is_nan, quote_ident

#: One statement of a dialect's sans-I/O steps: SQL with ``%s`` placeholders, parameters.
Statement = tuple[str, list[Any]]
#: ``Dialect.upgrade_steps``: yields statements, is sent each one's rows.
Steps = Generator[Statement, list[Any], None]
#: Steps that return what they did (None: nothing).
Outcome = Generator[Statement, list[Any], "str | None"]
#: On Citus: the reference tables of the base schema, and the tables co-located with
#: ``runs`` (by their run id column).
REFERENCE_TABLES = ("experiments", "experiment_links", "metric_names")
COLOCATED_TABLES = (("metrics", "run_id"), ("metric_values", "run_id"),
                    ("system_metrics", "run_id"), ("run_links", "from_id"))
#: The tables the setting ``partitions`` splits by run id on plain PostgreSQL (both keys
#: start with it, as a partitioned table's unique keys must contain the partition key).
PARTITIONED_TABLES = ("metrics", "metric_values")

#: Column type of a new metric column, by Python kind.
SQLITE_TYPES = {
    "bool": "BOOLEAN",
    "int": "INTEGER",
    "float": "REAL",
    "str": "TEXT",
    "datetime": "TIMESTAMP",
}
POSTGRES_TYPES = {
    "bool": "boolean",
    "int": "bigint",
    "float": "double precision",
    "str": "text",
    "datetime": "timestamp with time zone",
}


class SqliteDialect(Dialect):
    """SQLite: ``?`` placeholders, JSON merged by our own SQL functions, ISO text times."""

    name = "sqlite"
    engine_class = "sqlite:SqliteEngine"

    def sql(self, query: str) -> str:
        return _to_qmark(query)

    def epoch_ms(self, column: str) -> str:
        # julianday() counts whole milliseconds inside: rounding gives them back exactly.
        return f"CAST(ROUND((julianday({column}) - 2440587.5) * 86400000.0) AS INTEGER)"

    def json_param(self) -> str:
        return "%s"

    def json_merge(self, column: str) -> str:
        return f"sqltrack_json_merge({column}, %s)"

    def json_remove(self, column: str) -> str:
        return f"sqltrack_json_remove({column}, %s)"

    def key_list_param(self, keys: Sequence[str]) -> str:
        return json.dumps(list(keys))

    def timestamp(self, value: datetime) -> str:
        return value.astimezone(timezone.utc).isoformat()

    def json_object_keys(self, column: str) -> str:
        return (f"json_each(CASE WHEN json_type({column}) = 'object' "
                f"THEN {column} ELSE '{{}}' END) AS k")

    def read_only_setup(self, timeout: float) -> list[tuple[str, list[Any]]]:
        # json_each is connected once, before the authorizer: connecting it declares its
        # table, which the reads-only authorizer would refuse (the page's search of tags).
        return [("PRAGMA query_only = ON", []), ("SELECT key FROM json_each('{}')", [])]

    def metric_column_type(self, kind: str) -> str:
        return SQLITE_TYPES[kind]

    max_columns = 2000
    case_insensitive_names = True

    def metric_view_script(self, columns: dict[str, str | None]) -> str | None:
        return _sqlite_metric_view(columns)

    def metric_value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return self.timestamp(value)
        # SQLite stores a NaN REAL as NULL; the text 'NaN' keeps it (float('NaN') reads it back).
        if is_nan(value):
            return "NaN"
        return value

    schema_script = "sqlite.sql"
    # Rebuilding ``runs`` (upgrade_steps) needs foreign keys off, settable only outside a
    # transaction: dropping the old table then neither cascades nor fails.
    before_schema_setup = ("PRAGMA foreign_keys = OFF",)
    after_schema_setup = ("PRAGMA foreign_keys = ON",)

    def tables_query(self, names: Sequence[str]) -> tuple[str, list[Any]]:
        marks = ", ".join(["%s"] * len(names))
        return (f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({marks})",
                list(names))

    def upgrade_steps(self, tables: set[str], statuses: Sequence[str]) -> Steps:
        if "runs" in tables:
            yield from _widen_status_check(statuses)
        yield from _system_metrics_ranks_sqlite()

    # query_only is a connection setting, and the pool's connections write.
    read_only_per_connection = True

    def database_path(self, settings: Settings) -> str | None:
        path = _dbpath(settings)
        return None if path == ":memory:" or path.startswith("file:") else path

    def target_key(self, settings: Settings) -> str:
        return f"{self.name}:" + os.path.abspath(_dbpath(settings))

    def portable_params(self, settings: Settings) -> dict[str, Any]:
        return {**settings.params, "dbpath": os.path.abspath(_dbpath(settings))}

    def describe(self, settings: Settings) -> str:
        return f"{self.name} {_dbpath(settings)}"

    def describe_spelled_out(self, settings: Settings) -> str:
        from pathlib import Path

        path = self.database_path(settings)
        shown = _dbpath(settings) if path is None else str(Path(path).absolute())
        return f"{self.name} file {shown}"

    def read_only_uri(self, settings: Settings) -> str | None:
        from urllib.parse import quote

        path = _dbpath(settings)
        if path == ":memory:" or "mode=memory" in path:
            return None
        if path.startswith("file:"):
            return path + ("&" if "?" in path else "?") + "mode=ro"
        return "file:" + quote(os.path.abspath(path)) + "?mode=ro"


class PostgresDialect(Dialect):
    """PostgreSQL: ``%s`` placeholders (psycopg), jsonb operators, timestamptz."""

    keep_order = " OFFSET 0"

    def script_statements(self, script: str) -> list[str]:
        """Our own PostgreSQL script statement by statement: a line ending in ``;``
        outside a ``$$`` body ends one. Citus refuses DDL on a distributed table (a new
        index) sent in a multi-statement query ("cannot insert multiple commands into a
        prepared statement"), so an upgrade of a distributed database runs them apart."""
        statements: list[str] = []
        lines: list[str] = []
        in_body = False
        for line in script.splitlines():
            lines.append(line)
            in_body ^= line.count("$$") % 2 == 1
            if not in_body and line.rstrip().endswith(";"):
                statements.append("\n".join(lines))
                lines = []
        rest = "\n".join(lines).strip()
        return [*statements, rest] if rest else statements

    name = "postgres"
    engine_class = "postgres:PostgresEngine"

    #: Steps (rows, one a step) of the sets one statement of ``curve_extremes_of`` reads
    #: at most, past its first set: its scans run one after the other in one backend,
    #: so a compare's runs go in a few statements the pool runs side by side; and the
    #: planner's cost of more (about 1.7 a row) passes ``jit_above_cost`` (100,000 by
    #: default), whose compiling took 330 ms for 10 sets of 10,000 steps.
    curve_steps_per_statement = 50_000

    def curve_extremes(
        self, table: str, where: str, params: list[Any], values: Sequence[str],
        low: int, width: int, buckets: int,
    ) -> list[Statement]:
        """One pass, one hash aggregate per range of buckets: per value, the least and
        greatest ``ARRAY[y, step, progress]`` of each bucket (arrays compare element by
        element; NaN sorts last), each row's array made once. As many buckets a statement
        as ``4 * buckets`` rows allow (two curves: every bucket in one statement), so that
        the rows are read once even where the planner scans the whole table for each
        statement."""
        return [(sql, found) for sql, found, _ in self.curve_extremes_of(
            [CurveSet(table, where, params, values, low, width, buckets)])]

    def curve_extremes_of(
        self, sets: Sequence[CurveSet],
    ) -> list[tuple[str, list[Any], list[int]]]:
        """``curve_extremes`` of several sets, as many a statement as span
        ``curve_steps_per_statement`` steps (one round trip for their aggregates, one
        CTE each): statement ``j`` of a batch holds range of buckets ``j`` of each of its
        sets, so it returns about ``4 * buckets`` rows a set, as ``curve_extremes`` does
        for one."""
        batches: list[list[int]] = []
        steps = 0
        for index, one in enumerate(sets):
            span = one.width * one.buckets
            if not batches or steps + span > self.curve_steps_per_statement:
                batches.append([])
                steps = 0
            batches[-1].append(index)
            steps += span
        statements = []
        for covered in batches:
            parts = [self._extremes_parts(sets[index]) for index in covered]
            for j in range(max(len(found) for found in parts)):
                ctes: list[str] = []
                selects: list[str] = []
                params: list[Any] = []
                offset = 0
                for index, found in zip(covered, parts, strict=True):
                    if j < len(found):
                        aggregate, rows = found[j]
                        ctes.append(f"g{len(ctes):d} AS ({aggregate})")
                        selects += rows(f"g{len(ctes) - 1:d}", offset)
                        params += sets[index].params
                    offset += len(sets[index].values)
                statements.append((f"WITH {', '.join(ctes)} {' UNION ALL '.join(selects)}",
                                   params, covered))
        return statements

    def curve_points_of(
        self, sets: Sequence[CurveSet],
    ) -> list[tuple[str, list[Any], list[int]]] | None:
        """``curve_extremes_of``' statements, their rows made into one a value ``k``:
        ``(k, counted, odd, steps, progresses, ys)``: the number of values of its buckets
        whose extremes are finite; the others as JSON ``[[i, count], ...]`` (NULL: none);
        its finite extremes (each row once) as three JSON arrays in key order (text; a
        float as the server writes it, the shortest exact form; NULL: none). A compare's
        extremes come as 40 rows, not 40,000 for Python to go through one by one."""
        return [(f"WITH e(k, i, y, s, p, n) AS ({sql}), "
                 "b AS (SELECT k, i, CAST(SUM(n) AS bigint) AS n, "
                 f"bool_or(y IS NOT NULL AND NOT (y {FINITE})) AS odd FROM e GROUP BY k, i), "
                 "c AS (SELECT k, CAST(COALESCE(SUM(n) FILTER (WHERE NOT odd), 0) AS bigint) "
                 "AS counted, json_agg(json_build_array(i, n)) FILTER (WHERE odd) AS odd "
                 "FROM b GROUP BY k), "
                 f"f AS (SELECT DISTINCT k, s, p, y FROM e WHERE y {FINITE}), "
                 "q AS (SELECT k, CAST(json_agg(CAST(s AS bigint) ORDER BY s, p) AS text) AS s, "
                 "CAST(json_agg(p ORDER BY s, p) AS text) AS p, "
                 "CAST(json_agg(y ORDER BY s, p) AS text) AS y FROM f GROUP BY k) "
                 "SELECT c.k, c.counted, c.odd, q.s, q.p, q.y FROM c LEFT JOIN q ON q.k = c.k",
                 params, covered)
                for sql, params, covered in self.curve_extremes_of(sets)]

    @staticmethod
    def _extremes_parts(curves: CurveSet) -> list[tuple[str, Callable[[str, int], list[str]]]]:
        """A set's ranges of buckets (as many buckets each as ``4 * buckets`` rows allow):
        each one's aggregate and the SELECTs of its rows (from a CTE's name, the first
        value's ``k``)."""
        table, where, _, values, low, width, buckets = curves
        per_statement = max(1, 2 * buckets // len(values))
        # each row's key made once a value (under OFFSET 0, the planner does not copy it
        # into both aggregates); NULL without a value, which MIN and MAX skip
        keys = ", ".join(
            f"CASE WHEN {v} IS NOT NULL THEN ARRAY[CAST({v} AS double precision), "
            "CAST(step AS double precision), CAST(progress AS double precision)] END "
            f"AS a{k:d}, {v} AS v{k:d}" for k, v in enumerate(values))
        aggregates = ", ".join(f"MIN(a{k:d}) AS lo{k:d}, MAX(a{k:d}) AS hi{k:d}, "
                               f"COUNT(v{k:d}) AS n{k:d}" for k in range(len(values)))

        def rows(name: str, offset: int) -> list[str]:
            return [f"SELECT {offset + k:d}, i, lo{k:d}[1], lo{k:d}[2], lo{k:d}[3], n{k:d} "
                    f"FROM {name} UNION ALL SELECT {offset + k:d}, i, hi{k:d}[1], hi{k:d}[2], "
                    f"hi{k:d}[3], 0 FROM {name}" for k in range(len(values))]

        parts: list[tuple[str, Callable[[str, int], list[str]]]] = []
        for first in range(0, buckets, per_statement):
            begin = low + first * width
            end = low + min(buckets, first + per_statement) * width
            parts.append((f"SELECT i, {aggregates} FROM (SELECT (step - {low:d}) / {width:d} "
                          f"AS i, {keys} FROM {table} WHERE {where} AND step >= {begin:d} "
                          f"AND step < {end:d} OFFSET 0) AS r GROUP BY 1", rows))
        return parts

    def line_extremes(
        self, where: str, params: list[Any], lines: Sequence[tuple[Any, ...]], buckets: int,
    ) -> list[Statement]:
        """One hash aggregate: the least ``ARRAY[value, µs]`` and the greatest ``ARRAY[value,
        -µs]`` of each bucket (µs since 1970, exact in a double), times made back from them."""
        micros = "CAST(EXTRACT(EPOCH FROM m.time) * 1000000 AS double precision)"
        stamp = self.epoch_ms("m.time")
        statements = []
        for start in range(0, len(lines), self.lines_per_statement):
            part = lines[start:start + self.lines_per_statement]
            values = ", ".join(["(%s, %s, %s, %s, CAST(%s AS timestamptz), "
                                "CAST(%s AS timestamptz), CAST(%s AS bigint), "
                                "CAST(%s AS bigint))"] * len(part))
            sql = (f"WITH l(k, rank, host, name, t_first, t_last, low, span) AS (VALUES {values}), "
                   f"g AS (SELECT l.k AS k, MIN(ARRAY[m.value, {micros}]) AS lo, "
                   f"MAX(ARRAY[m.value, -{micros}]) AS hi "
                   "FROM l JOIN system_metrics m ON m.rank = l.rank AND m.host = l.host "
                   f"AND m.name = l.name WHERE {where} GROUP BY l.k, "
                   f"CASE WHEN m.time = l.t_first THEN -1 WHEN m.time = l.t_last THEN {buckets:d} "
                   f"ELSE ({stamp} - l.low) * {buckets:d} / l.span END) "
                   "SELECT k, TIMESTAMPTZ 'epoch' + CAST(lo[2] AS bigint) "
                   "* INTERVAL '1 microsecond', lo[1] FROM g UNION ALL "
                   "SELECT k, TIMESTAMPTZ 'epoch' - CAST(hi[2] AS bigint) "
                   "* INTERVAL '1 microsecond', hi[1] FROM g ORDER BY 1, 2")
            rows = [(start + j, *line) for j, line in enumerate(part)]
            statements.append((sql, [x for row in rows for x in row] + list(params)))
        return statements

    def epoch_ms(self, column: str) -> str:
        return f"CAST(ROUND(EXTRACT(EPOCH FROM {column}) * 1000) AS BIGINT)"

    def json_param(self) -> str:
        return "%s::jsonb"

    def json_merge(self, column: str) -> str:
        return f"COALESCE({column}, '{{}}'::jsonb) || %s::jsonb"

    def json_remove(self, column: str) -> str:
        return f"{column} - %s::text[]"

    def key_list_param(self, keys: Sequence[str]) -> list[str]:
        return list(keys)

    def user_text(self, text: str) -> str:
        # psycopg reads %s / %(name)s placeholders in the whole statement: a user's % is doubled.
        return text.replace("%", "%%")

    def json_object_keys(self, column: str) -> str:
        return (f"jsonb_object_keys(CASE WHEN jsonb_typeof({column}) = 'object' "
                f"THEN {column} ELSE '{{}}'::jsonb END) AS k(key)")

    def read_only_setup(self, timeout: float) -> list[tuple[str, list[Any]]]:
        milliseconds = str(max(1, int(timeout * 1000)))
        return [("SET TRANSACTION READ ONLY", []),
                ("SELECT set_config('statement_timeout', %s, true)", [milliseconds])]

    def metric_column_type(self, kind: str) -> str:
        return POSTGRES_TYPES[kind]

    schema_script = "postgres.sql"
    shared_with_v01 = True

    def tables_query(self, names: Sequence[str]) -> tuple[str, list[Any]]:
        return ("SELECT n FROM unnest(%s::text[]) AS n "
                "WHERE to_regclass(quote_ident(n)) IS NOT NULL", [list(names)])

    def upgrade_steps(self, tables: set[str], statuses: Sequence[str]) -> Steps:
        if tables & {"applied_migrations", "sqltrack_migrations"}:
            # 0.1.x's table has only the name (its rows get no time); 0.1.x inserts the name only.
            yield ("ALTER TABLE applied_migrations "
                   "ADD COLUMN IF NOT EXISTS time_applied TIMESTAMPTZ", [])
            yield "ALTER TABLE applied_migrations ALTER COLUMN time_applied SET DEFAULT now()", []
            yield "ALTER TABLE applied_migrations ALTER COLUMN time_applied DROP NOT NULL", []
        yield from _widen_status_enum(statuses)
        yield from _system_metrics_ranks_postgres()
        yield from _drop_advance_id_triggers()

    def distribute_steps(self, side_tables: Sequence[str] = ()) -> Outcome:
        """On a Citus coordinator (the ``citus`` extension present): distribute the base
        tables, in the one order Citus accepts, in the set-up's transaction. ``runs`` by
        ``id`` first (its foreign key to ``experiments`` dropped meanwhile: a local table
        referencing a reference table would become a Citus-local one, which an identity
        column keeps from being distributed), then ``experiments``, ``experiment_links`` and
        ``metric_names`` as reference tables, the foreign key again, then ``metrics``,
        ``metric_values``, ``system_metrics`` and ``run_links`` co-located with ``runs`` by
        run id. ``run_links.to_id`` loses its foreign key (Citus: only between co-located
        columns). Rows already there are moved into the shards (``sqltrack setup
        --distribute`` of a database made with ``distribute=false``) and the coordinator's
        local copies emptied. Then ``side_tables`` that exist (see ``side_table_steps``).
        Returns what was done; ``""`` when all was distributed before; None without Citus.
        """
        citus = yield "SELECT 1 FROM pg_extension WHERE extname = 'citus'", []
        if not citus:
            return None
        done = yield ("SELECT 1 FROM pg_dist_partition WHERE logicalrelid = "
                      "to_regclass('runs')", [])
        if done:  # distributed before: only tables made since (an upgrade step's)
            made = yield from self._distribute_new_tables()
            side = yield from self.side_table_steps(side_tables)
            return "; ".join(filter(None, [made, side]))  # "": nothing (more) to do
        yield "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'", []
        keys = yield ("SELECT c.conrelid::regclass::text, quote_ident(c.conname), "
                      "pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.contype = 'f' "
                      "AND ((c.conrelid = to_regclass('runs') AND "
                      "c.confrelid = to_regclass('experiments')) OR (c.conrelid = "
                      "to_regclass('run_links') AND c.conkey = ARRAY[(SELECT attnum FROM "
                      "pg_attribute WHERE attrelid = c.conrelid AND attname = 'to_id')]))", [])
        for table, name, _ in keys:
            yield f"ALTER TABLE {table} DROP CONSTRAINT {name}", []
        side = yield from self._drop_keys_to_runs(side_tables)  # else runs is not distributed
        yield "SELECT create_distributed_table('runs', 'id')", []
        for table in REFERENCE_TABLES:
            yield f"SELECT create_reference_table('{table}')", []
        for table, name, definition in keys:
            if "experiments" in definition:
                yield f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}", []
        for table, column in COLOCATED_TABLES:
            yield (f"SELECT create_distributed_table('{table}', '{column}', "
                   "colocate_with => 'runs')", [])
        for table in ("runs", *REFERENCE_TABLES, *(t for t, _ in COLOCATED_TABLES)):
            # The rows live in the shards now; the coordinator's local copy is dead weight.
            yield f"SELECT truncate_local_data_after_distributing_table('{table}')", []
        return ("distributed the tables on Citus (runs by id, metrics, metric_values, "
                "system_metrics and run_links co-located by run id; experiments, "
                "experiment_links and metric_names reference tables)"
                + (f"; {side}" if side else ""))

    def partition_steps(self, count: int) -> Outcome:
        """``metrics`` and ``metric_values`` hash-partitioned by ``run_id`` into ``count``
        partitions each (``metrics_p0`` ...), in place, in the caller's transaction: the view
        ``metric_values_all`` dropped (the caller makes it again), then per table: its
        indexes renamed out of the way, the table renamed ``<name>_unpartitioned``, a
        partitioned table made ``LIKE`` it ``INCLUDING ALL`` (columns, defaults, checks,
        indexes, the key), its partitions, the rows copied, the old table dropped, the
        foreign key to ``runs`` (``ON DELETE CASCADE``) added. Refused on Citus (its tables
        are distributed by run id instead) and when a table is partitioned already into
        another count. Returns what was done; ``""``: partitioned so before."""
        citus = yield "SELECT 1 FROM pg_extension WHERE extname = 'citus'", []
        if citus:
            raise ValueError(
                "partitions: this database is a Citus coordinator, where sqltrack's tables "
                "are distributed by run id over the workers (setting distribute), not "
                "partitioned; use partitions on a plain PostgreSQL server")
        found = yield ("SELECT n, c.relkind::text, (SELECT count(*) FROM pg_inherits i "
                       "WHERE i.inhparent = c.oid) FROM unnest(%s::text[]) WITH ORDINALITY "
                       "AS t(n, k) JOIN pg_class c ON c.oid = to_regclass(quote_ident(n)) "
                       "ORDER BY k", [list(PARTITIONED_TABLES)])
        pending = []
        for table, kind, parts in found:
            if kind != "p":
                pending.append(table)
            elif parts != count:
                raise ValueError(
                    f"partitions={count}: {table} is partitioned already into {parts} "
                    "partitions (a different count is not converted in place)")
        if not pending:
            return ""
        yield "DROP VIEW IF EXISTS metric_values_all", []
        moved = 0
        for table in pending:
            old = f"{table}_unpartitioned"
            indexes = yield ("SELECT quote_ident(c.relname), c.oid::bigint FROM pg_index x "
                             "JOIN pg_class c ON c.oid = x.indexrelid "
                             "WHERE x.indrelid = to_regclass(quote_ident(%s))", [table])
            for name, oid in indexes:  # the new table's indexes take the names
                yield f"ALTER INDEX {name} RENAME TO sqltrack_old_{int(oid):d}", []
            yield f"ALTER TABLE {table} RENAME TO {old}", []
            yield (f"CREATE TABLE {table} (LIKE {old} INCLUDING ALL) "
                   "PARTITION BY HASH (run_id)", [])
            for i in range(count):
                yield (f"CREATE TABLE {table}_p{i:d} PARTITION OF {table} "
                       f"FOR VALUES WITH (MODULUS {count:d}, REMAINDER {i:d})", [])
            copied = yield (f"WITH c AS (INSERT INTO {table} SELECT * FROM {old} "
                            "RETURNING 1) SELECT count(*) FROM c", [])
            moved += int(copied[0][0])
            yield f"DROP TABLE {old}", []
            yield (f"ALTER TABLE {table} ADD CONSTRAINT {table}_run_id_fkey FOREIGN KEY "
                   "(run_id) REFERENCES runs (id) ON DELETE CASCADE", [])
        return (f"partitioned {' and '.join(pending)} by run id (hash, {count:d} partitions "
                f"each; {moved:d} rows moved)")

    def _distribute_new_tables(self) -> Outcome:
        """With ``runs`` distributed: the base tables that are no Citus table yet (made by
        an upgrade since, or by hand), reference or co-located as at the set-up."""
        colocated = dict(COLOCATED_TABLES)
        pending = yield ("SELECT n FROM unnest(%s::text[]) WITH ORDINALITY AS t(n, i) "
                         "WHERE to_regclass(n) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
                         "pg_dist_partition WHERE logicalrelid = to_regclass(n) AND "
                         "(partmethod <> 'n' OR repmodel = 't')) ORDER BY i",
                         [[*REFERENCE_TABLES, *colocated]])
        made = [name for (name,) in pending]
        for table in made:
            if table in colocated:
                yield (f"SELECT create_distributed_table('{table}', '{colocated[table]}', "
                       "colocate_with => 'runs')", [])
            else:
                yield f"SELECT create_reference_table('{table}')", []
            yield f"SELECT truncate_local_data_after_distributing_table('{table}')", []
        return f"distributed {', '.join(made)} on Citus" if made else None

    def _drop_keys_to_runs(self, tables: Sequence[str]) -> Outcome:
        """Drop the foreign keys from ``tables`` to ``runs`` (see ``side_table_steps``);
        what was done (None: nothing)."""
        if not tables:
            return None
        keys = yield ("SELECT c.conrelid::regclass::text, quote_ident(c.conname) FROM "
                      "pg_constraint c WHERE c.contype = 'f' AND c.confrelid = "
                      "to_regclass('runs') AND c.conrelid IN (SELECT to_regclass(quote_ident(n)) "
                      "FROM unnest(%s::text[]) AS n) ORDER BY 1", [list(tables)])
        for table, name in keys:
            yield f"ALTER TABLE {table} DROP CONSTRAINT {name}", []
        if not keys:
            return None
        return (f"dropped the foreign key of {', '.join(t for t, _ in keys)} to runs "
                "(Citus runs no cascade from a distributed table)")

    def side_table_steps(self, tables: Sequence[str]) -> Outcome:
        """Small tables of sqltrack's own that name runs (sync's ``sync_experiments`` and
        ``sync_runs``; made on demand) on a Citus coordinator whose ``runs`` is
        distributed: they stay on the coordinator (local tables), their foreign keys to
        ``runs`` dropped.

        Why no foreign key: Citus accepts one from a local table to a distributed one but
        never runs its ``ON DELETE CASCADE`` (the rows live in the shards), so a mapping
        row would outlive its run silently; without it, sync itself drops a mapping whose
        target run is gone (``transfer._Sync._map_runs``). Why not distributed with
        ``runs``: ``sync_runs`` is looked up by its key ``(source_key, source_run_id)``,
        whose uniqueness makes two syncs of one source create one target run; a
        distributed table's unique keys must contain its distribution column. Why not a
        reference table (a copy on every node): each sync page updates its row, which
        there is a write on every node (two-phase commit); on the coordinator it is one
        row, as on one server. Returns what was done (None: nothing).
        """
        if not tables:
            return None
        distributed = yield ("SELECT 1 FROM pg_extension WHERE extname = 'citus' AND "
                             "to_regclass('pg_dist_partition') IS NOT NULL", [])
        if distributed:
            distributed = yield ("SELECT 1 FROM pg_dist_partition WHERE logicalrelid = "
                                 "to_regclass('runs')", [])
        if not distributed:
            return None
        done: str | None = yield from self._drop_keys_to_runs(tables)
        return done

    def advance_id_steps(self, table: str, new_id: int) -> Steps:
        """Move ``table``'s id sequence past ``new_id`` (no trigger: Citus refuses them).

        The sequence only moves forward: ``nextval`` adds, and this ``setval`` takes the
        greater of ``new_id`` and the sequence's last value while holding ``table`` in
        SHARE UPDATE EXCLUSIVE mode (conflicts with itself, so two explicit inserters
        never set it back past each other; not with reads or writes of rows). A sequence
        already past ``new_id`` (the common case) costs one read and no lock: a value
        seen there never goes back. ``pg_sequence_last_value`` is NULL until the first
        ``nextval`` (``is_called`` false: the next value is the start value, 1), so NULL
        counts as 0 and ``setval(..., is_called => true)`` makes the next value
        ``new_id + 1``.
        """
        sequence = "(SELECT pg_get_serial_sequence(%s, 'id')::regclass AS s) AS q"
        ahead = yield (f"SELECT COALESCE(pg_sequence_last_value(q.s), 0) >= %s FROM {sequence}",
                       [new_id, table])
        if not ahead or ahead[0][0]:
            return
        yield f"LOCK TABLE {self.quote_ident(table)} IN SHARE UPDATE EXCLUSIVE MODE", []
        yield (f"SELECT setval(q.s, GREATEST(%s, COALESCE(pg_sequence_last_value(q.s), 0)), "
               f"true) FROM {sequence}", [new_id, table])

    has_server = True

    def reader_setup(
        self, role: str, schema: str | None, tables: Sequence[str]
    ) -> list[Statement]:
        """``sqltrack setup --ui-role``: the NOLOGIN role users' SQL runs as (SELECT on
        sqltrack's ``tables`` only), the login's membership in it (for ``SET ROLE``), and
        the function that runs users' SQL as that role (SECURITY DEFINER owned by it: a
        ``set_config('role', ...)`` inside is refused by the server). The function keeps
        rows only up to ``max_bytes`` (``pg_column_size`` of each row it returns, counted
        as it reads them): past that it stops reading the query and notes it in the
        transaction's ``sqltrack.stopped`` setting, so a query of gigabytes costs the
        server what the page may show, not the whole result. Its earlier form
        ``(q text)``, without the limit, is dropped. On a Citus coordinator the role may
        log in on the workers (Citus connects to them as it)."""
        role = check_role_name(role)
        quoted = self.quote_ident(role)
        where = self.quote_ident(schema) if schema else "public"
        function = f"{where}.{READER_FUNCTION}(q text, max_bytes bigint)"
        grants: list[Statement] = [
            (f"GRANT SELECT ON {where}.{self.quote_ident(t)} TO {quoted}", []) for t in tables]
        return [
            ("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
             f"'{role}') THEN CREATE ROLE {quoted} NOLOGIN; "
             "ELSIF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = "
             f"'{role}' AND (r.rolsuper OR r.rolcanlogin OR r.rolcreaterole OR r.rolcreatedb "
             "OR r.rolreplication OR r.rolbypassrls OR EXISTS (SELECT FROM pg_auth_members m "
             f"WHERE m.member = r.oid))) THEN RAISE EXCEPTION 'role {role} exists and may do more "
             "than read (it logs in, has an attribute or is a member of a role): "
             "name another role'; END IF; END $$", []),
            (f"GRANT {quoted} TO CURRENT_USER", []),
            (f"GRANT USAGE ON SCHEMA {where} TO {quoted}", []),
            *grants,
            (f"DROP FUNCTION IF EXISTS {where}.{READER_FUNCTION}(text)", []),
            (f"CREATE OR REPLACE FUNCTION {function} RETURNS SETOF record LANGUAGE plpgsql "
             "SECURITY DEFINER AS $f$ DECLARE r record; total bigint := 0; BEGIN "
             "FOR r IN EXECUTE 'SELECT * FROM (' || q || E'\\n) AS q' LOOP "
             "total := total + pg_column_size(r); "
             "IF total > max_bytes THEN "
             "PERFORM set_config('sqltrack.stopped', 'bytes', true); EXIT; END IF; "
             "RETURN NEXT r; END LOOP; END $f$", []),
            # A new owner needs CREATE on the schema (for a login that is no superuser).
            (f"GRANT CREATE ON SCHEMA {where} TO {quoted}", []),
            (f"ALTER FUNCTION {function} OWNER TO {quoted}", []),
            (f"REVOKE CREATE ON SCHEMA {where} FROM {quoted}", []),
            (f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC", []),
            # Citus: a query of distributed tables run as the role reaches the workers
            # over connections made as the role, so there (only) it logs in, still with
            # no password (as the workers' pg_hba allows): LOGIN is propagated to them in
            # this transaction, then taken back here alone.
            ("DO $$ DECLARE was text; BEGIN "
             "IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN "
             f"ALTER ROLE {quoted} LOGIN; "
             "was := current_setting('citus.enable_ddl_propagation'); "
             "PERFORM set_config('citus.enable_ddl_propagation', 'off', true); "
             f"ALTER ROLE {quoted} NOLOGIN; "
             "PERFORM set_config('citus.enable_ddl_propagation', was, true); "
             "END IF; END $$", []),
        ]

    def refused_function(self, query: str) -> str | None:
        """The first function named in ``query`` that users' SQL may not call (it writes,
        signals, reaches other servers, runs SQL text or changes settings and locks that
        outlive a statement), else None. Any mention counts, even inside a string."""
        if _UNICODE_ESCAPE.search(query):
            return "U&"
        for word in _WORD.findall(query):
            if _DENIED.fullmatch(word.lower()):
                return word
        return None

    def target_key(self, settings: Settings) -> str:
        p = settings.params
        host = p.get("hostaddr") or p.get("host") or "localhost"
        return (f"{self.name}://{p.get('user', '')}@{host}:{p.get('port', '5432')}/"
                f"{p.get('dbname', '')}?schema={settings.schema or ''}")

    def describe(self, settings: Settings) -> str:
        shown = " ".join(
            f"{k}={v}" for k, v in settings.params.items()
            if k in ("host", "port", "user", "dbname", "password")
        )
        schema = f" schema={settings.schema}" if settings.schema else ""
        return f"{self.name} {shown}{schema}"

    def describe_spelled_out(self, settings: Settings) -> str:
        params = settings.params
        host = params.get("host") or os.environ.get("PGHOST") or "local socket (default)"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        schema = settings.schema or "public (default)"
        return (f"{self.name} host={host} port={port} user={params.get('user', '')} "
                f"dbname={params.get('dbname', '')} schema={schema}")


#: The function (in the schema, owned by the reader role) that runs users' SQL.
READER_FUNCTION = "sqltrack_user_query"
#: The reader role of ``sqltrack setup --ui-role`` and ``sqltrack ui`` unless named.
DEFAULT_READER = "sqltrack_reader"
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_UNICODE_ESCAPE = re.compile(r"\bU&['\"]", re.I)
#: Functions every role may call (EXECUTE granted to PUBLIC) that users' SQL must not:
#: large objects, WAL messages, notifications, session advisory locks, settings, SQL
#: given as text (query_to_xml, ts_stat, ts_rewrite), other servers (dblink), signals.
_DENIED = re.compile(
    r"lo_\w+|lowrite|loread|pg_logical_emit_message|pg_notify|pg_(try_)?advisory_\w+"
    r"|set_config|dblink\w*|query_to_xml\w*|cursor_to_xml\w*|ts_stat|ts_rewrite"
    r"|pg_cancel_backend|pg_terminate_backend|pg_signal_backend|pg_read_\w+|pg_ls_\w+"
    r"|pg_stat_file|pg_file_\w+|pg_reload_conf|pg_rotate_logfile|pg_switch_wal"
    r"|pg_create_\w+|pg_drop_replication_slot|pg_replication_\w+|pg_promote"
    r"|pg_log_backend_memory_contexts|pg_stat_reset\w*|nextval|setval|txid_current"
    r"|pg_current_xact_id"
)


def check_role_name(role: str) -> str:
    """A reader role name: lower-case letters, digits and ``_`` (ValueError naming it)."""
    if not isinstance(role, str) or not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"reader role {role!r} is not a plain role name: use lower-case "
                         "letters, digits and '_' (at most 63), e.g. 'sqltrack_reader'")
    return role


@lru_cache(maxsize=1024)
def _to_qmark(query: str) -> str:
    return query.replace("%s", "?")


def _dbpath(settings: Settings) -> str:
    return str(settings.params.get("dbpath", DEFAULT_SQLITE_PATH))


#: The long table's part of the view ``metric_values_all`` (both engines: one row per value).
_LONG_PART = (
    "SELECT run_id, step, progress, name, COALESCE(value, value_int, value_bool) AS value, "
    "value_int, value_bool, value_text, value_time FROM metric_values"
)


def _sqlite_metric_view(columns: dict[str, str | None]) -> str:
    """SQLite: the view ``metric_values_all`` for these metric columns (SQLite cannot
    unpivot a row without naming its columns, so the library makes the view again
    whenever ``metrics`` gets columns). Each row of ``metrics`` is joined with the
    ``{name: kind}`` object of its columns (``json_each``, the outer loop: CROSS JOIN)
    and one ``CASE`` picks the column by name; a filter on ``name`` is checked before
    any row of ``metrics`` is read (one curve: ~0.1 s at 1,500 columns), but reading
    every metric of a run through the view evaluates the ``CASE`` for every column of
    every row (slow: use ``metrics_frame`` or the tables for that)."""
    def text(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    kinds = {name: kind or "" for name, kind in columns.items()}
    if columns:
        picks = " ".join(f"WHEN {text(n)} THEN m.{quote_ident(n)}" for n in columns)
        pick = f"CASE c.key {picks} END"
    else:
        pick = "NULL"
    wide = (
        "SELECT run_id, step, progress, name, "
        "CASE WHEN kind IN ('float', 'int', 'bool') THEN v END AS value, "
        "CASE WHEN kind = 'int' THEN v END AS value_int, "
        "CASE WHEN kind = 'bool' THEN v END AS value_bool, "
        "CASE WHEN kind IN ('str', '') THEN v END AS value_text, "
        "CASE WHEN kind = 'datetime' THEN v END AS value_time "
        "FROM (SELECT m.run_id AS run_id, m.step AS step, m.progress AS progress, "
        f"c.key AS name, c.value AS kind, {pick} AS v "
        f"FROM json_each({text(json.dumps(kinds))}) AS c CROSS JOIN metrics AS m) "
        "WHERE v IS NOT NULL"
    )
    return ("DROP VIEW IF EXISTS metric_values_all;\n"
            f"CREATE VIEW metric_values_all AS {wide} UNION ALL {_LONG_PART};\n")


def _widen_status_enum(statuses: Sequence[str]) -> Steps:
    """PostgreSQL: the enum ``runstatus`` (an earlier build's ``run_status`` renamed) gets
    every status it lacks."""
    found = yield ("SELECT typname FROM pg_type WHERE typnamespace = "
                   "(SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
                   "AND typname IN ('runstatus', 'run_status')", [])
    types = {r[0] for r in found}
    if "run_status" in types and "runstatus" not in types:
        yield "ALTER TYPE run_status RENAME TO runstatus", []
        types.add("runstatus")
    if "runstatus" not in types:
        return
    labels = yield ("SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                    "JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE n.nspname = current_schema() AND t.typname = 'runstatus'", [])
    present = {r[0] for r in labels}
    # Allowed in a transaction since PostgreSQL 12; the new values are usable
    # after commit (nothing here uses them before).
    for status in statuses:
        if status not in present:
            yield f"ALTER TYPE runstatus ADD VALUE IF NOT EXISTS '{status}'", []


_CHECK = r"CHECK\s*\(\s*status\s+IN\s*\([^)]*\)\s*\)"
_CREATE_RUNS = r'^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"?runs"?'


def _widen_status_check(statuses: Sequence[str]) -> Steps:
    """SQLite: rebuild ``runs`` with a CHECK of every status (SQLite cannot alter a CHECK):
    same columns, rows, ids, indexes, triggers.

    Foreign keys are off (``before_schema_setup``), so dropping the old table neither
    cascades nor fails; the check at the end proves every reference still resolves.
    """
    (old_sql,), = yield ("SELECT sql FROM sqlite_master "
                         "WHERE type = 'table' AND name = 'runs'", [])
    if all(f"'{s}'" in old_sql for s in statuses):
        return
    values = ", ".join(f"'{s}'" for s in statuses)
    new_sql, checks = re.subn(_CHECK, f"CHECK (status IN ({values}))", old_sql, count=1,
                              flags=re.IGNORECASE)
    new_sql, creates = re.subn(_CREATE_RUNS, "CREATE TABLE sqltrack_runs_rebuild", new_sql,
                               count=1, flags=re.IGNORECASE)
    if not (checks and creates):
        raise RuntimeError(f"cannot upgrade the runs table: unexpected definition {old_sql!r}")
    others = yield ("SELECT sql FROM sqlite_master WHERE tbl_name = 'runs' "
                    "AND type IN ('index', 'trigger') AND sql IS NOT NULL", [])
    extras = [r[0] for r in others]
    seq = yield "SELECT seq FROM sqlite_sequence WHERE name = 'runs'", []
    yield new_sql, []
    yield "INSERT INTO sqltrack_runs_rebuild SELECT * FROM runs", []
    yield "DROP TABLE runs", []
    # Legacy rename: views naming "runs" are not re-checked while it is briefly missing.
    yield "PRAGMA legacy_alter_table = ON", []
    yield "ALTER TABLE sqltrack_runs_rebuild RENAME TO runs", []
    yield "PRAGMA legacy_alter_table = OFF", []
    for statement in extras:
        yield statement, []
    # AUTOINCREMENT: generated ids stay above every id used before, deleted ones too.
    (top,), = yield "SELECT coalesce(max(id), 0) FROM runs", []
    yield "DELETE FROM sqlite_sequence WHERE name = 'runs'", []
    yield ("INSERT INTO sqlite_sequence (name, seq) VALUES ('runs', %s)",
           [max(top, seq[0][0] if seq else 0)])
    broken = yield "PRAGMA foreign_key_check", []
    if broken:
        raise RuntimeError(f"runs rebuild left broken references: {broken[:5]}")


# -- upgrade step system_metrics_ranks (issue 21): rank and host in system_metrics' key --
_RANK_COLUMNS = ("ALTER TABLE system_metrics ADD COLUMN rank INTEGER NOT NULL DEFAULT 0",
                 "ALTER TABLE system_metrics ADD COLUMN host TEXT NOT NULL DEFAULT ''")


def _system_metrics_ranks_postgres() -> Steps:
    """PostgreSQL: add ``rank`` and ``host`` (defaults: no table rewrite) and make the
    primary key ``(run_id, rank, host, name, time)``; nothing when done before or when
    there is no ``system_metrics`` yet (the base script makes it)."""
    found = yield ("SELECT a.attname FROM pg_attribute a WHERE a.attrelid = "
                   "to_regclass('system_metrics') AND a.attnum > 0 AND NOT a.attisdropped", [])
    columns = {r[0] for r in found}
    if not columns:
        return
    for column, statement in zip(("rank", "host"), _RANK_COLUMNS, strict=True):
        if column not in columns:
            yield statement, []
    key = yield ("SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                 "WHERE c.conrelid = to_regclass('system_metrics') AND c.contype = 'p'", [])
    if key and "rank" in key[0][1]:
        return
    if key:
        constraint = quote_ident(key[0][0])  # the catalog's name, quoted as an identifier
        yield f"ALTER TABLE system_metrics DROP CONSTRAINT {constraint}", []
    yield "ALTER TABLE system_metrics ADD PRIMARY KEY (run_id, rank, host, name, time)", []


# -- upgrade step drop_advance_id_triggers (schema:5): no triggers (Citus) ----------------
def _drop_advance_id_triggers() -> Steps:
    """PostgreSQL: drop the triggers ``experiments_advance_id`` / ``runs_advance_id`` and
    their function ``sqltrack_advance_id()`` (in the schema of ``runs``) that earlier
    builds made; the library's statements advance the sequence now (``advance_id_steps``).
    Nothing when they are gone already."""
    drops = yield ("SELECT 'DROP TRIGGER ' || quote_ident(t.tgname) || ' ON ' || "
                   "t.tgrelid::regclass::text "
                   "FROM pg_trigger t WHERE t.tgrelid IN (to_regclass('runs'), "
                   "to_regclass('experiments')) AND NOT t.tgisinternal AND t.tgname IN "
                   "('runs_advance_id', 'experiments_advance_id')", [])
    for (drop,) in drops:
        yield drop, []
    functions = yield ("SELECT 'DROP FUNCTION ' || p.oid::regprocedure::text FROM pg_proc p "
                       "WHERE p.proname = 'sqltrack_advance_id' AND p.pronargs = 0 AND "
                       "p.pronamespace = COALESCE((SELECT c.relnamespace FROM pg_class c "
                       "WHERE c.oid = to_regclass('runs')), "
                       "(SELECT oid FROM pg_namespace WHERE nspname = current_schema()))", [])
    for (drop,) in functions:
        yield drop, []


def _system_metrics_ranks_sqlite() -> Steps:
    """SQLite: rebuild ``system_metrics`` (a key cannot be altered) with ``rank`` 0 and
    ``host`` '' for its rows; nothing when done before or when there is no table yet."""
    found = yield "SELECT name FROM pragma_table_info('system_metrics')", []
    columns = {r[0] for r in found}
    if not columns or "rank" in columns:
        return
    yield ("CREATE TABLE sqltrack_system_metrics_rebuild ("
           "run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, "
           "time TEXT NOT NULL, name TEXT NOT NULL, value REAL, "
           "rank INTEGER NOT NULL DEFAULT 0, host TEXT NOT NULL DEFAULT '', "
           "PRIMARY KEY (run_id, rank, host, name, time)) WITHOUT ROWID", [])
    yield ("INSERT INTO sqltrack_system_metrics_rebuild (run_id, time, name, value) "
           "SELECT run_id, time, name, value FROM system_metrics", [])
    yield "DROP TABLE system_metrics", []
    yield "ALTER TABLE sqltrack_system_metrics_rebuild RENAME TO system_metrics", []


#: Each engine's dialect, by engine name (``dialect_for``).
DIALECTS: dict[str, Dialect] = {d.name: d for d in (PostgresDialect(), SqliteDialect())}
