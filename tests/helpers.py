"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

import psycopg

#: Client settings that are not libpq keywords.
_CLIENT_ONLY = ("engine", "schema", "buffered", "buffer_max_rows")


def json_value(value: Any) -> Any:
    """A JSON column as Python: PostgreSQL returns objects, SQLite returns text."""
    return json.loads(value) if isinstance(value, str) else value


def read_raw(kw: dict[str, Any], sql: str, params: Any = ()) -> list[tuple]:
    """Rows of ``sql`` (``%s`` placeholders), read with the raw driver outside sqltrack.

    ``kw`` are a client's keyword arguments (the ``client_kwargs`` fixture).
    """
    if kw["engine"] == "sqlite":
        with contextlib.closing(sqlite3.connect(kw["dbpath"], timeout=60)) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    conninfo = {
        k: v
        for k, v in kw.items()
        if k not in _CLIENT_ONLY and not k.startswith(("pool_", "flush_"))
    }
    with psycopg.connect(**conninfo, options=f"-c search_path={kw['schema']}") as conn:
        return conn.execute(sql, params).fetchall()
