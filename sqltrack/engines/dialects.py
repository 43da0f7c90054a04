"""The SQL dialect of each engine: placeholders, JSON pieces, column types (pure, no I/O)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from .base import Dialect, is_nan

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

    def sql(self, query: str) -> str:
        return _to_qmark(query)

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
        return [("PRAGMA query_only = ON", [])]

    def metric_column_type(self, kind: str) -> str:
        return SQLITE_TYPES[kind]

    def metric_value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return self.timestamp(value)
        # SQLite stores a NaN REAL as NULL; the text 'NaN' keeps it (float('NaN') reads it back).
        if is_nan(value):
            return "NaN"
        return value


class PostgresDialect(Dialect):
    """PostgreSQL: ``%s`` placeholders (psycopg), jsonb operators, timestamptz."""

    name = "postgres"

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


@lru_cache(maxsize=1024)
def _to_qmark(query: str) -> str:
    return query.replace("%s", "?")
