"""Shared by the Citus tests (marker ``citus``): the coordinator check, raw reads of the
Citus catalog, rows per worker. The fixtures ``citus_dsn`` and ``citus_kwargs`` are in
tests/conftest.py."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

CITUS_DSN_ENV = "SQLTRACK_TEST_CITUS_DSN"
#: The cluster's directory (``cluster.sh start DIR ...``): the worker restart test stops
#: and starts a worker's data directory ``DIR/node1`` there.
CITUS_DIR_ENV = "SQLTRACK_TEST_CITUS_DIR"


def checked_coordinator(dsn: str | None) -> str:
    """``dsn`` when it names a Citus coordinator with 2+ active workers; a loud failure else."""
    if not dsn:
        pytest.fail(f"{CITUS_DSN_ENV} is not set", pytrace=False)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchall():
                pytest.fail(f"{CITUS_DSN_ENV}={dsn!r}: no citus extension in this "
                            "database (not a Citus coordinator)", pytrace=False)
            ((coordinator,),) = conn.execute("SELECT citus_is_coordinator()").fetchall()
            ((workers,),) = conn.execute("SELECT count(*) FROM citus_get_active_worker_nodes()"
                                         ).fetchall()
    except psycopg.Error as error:
        pytest.fail(f"{CITUS_DSN_ENV}={dsn!r}: cannot use it: {error}", pytrace=False)
    if not coordinator or workers < 2:
        pytest.fail(f"{CITUS_DSN_ENV}={dsn!r}: coordinator={coordinator}, "
                    f"{workers} active workers (want a coordinator with 2+)", pytrace=False)
    return dsn


def citus_dsn_from_env() -> str | None:
    return os.environ.get(CITUS_DSN_ENV)


def raw(kw: dict[str, Any], sql: str, params: Any = ()) -> list[tuple]:
    """Rows of ``sql`` read with psycopg in the schema of ``kw`` (a client's kwargs)."""
    conninfo = {k: v for k, v in kw.items() if k not in ("engine", "schema")}
    with psycopg.connect(**conninfo, autocommit=True,
                         options=f"-c search_path={kw['schema']},public") as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def citus_tables(kw: dict[str, Any]) -> dict[str, tuple[str, str, int]]:
    """The schema's distributed and reference tables: name -> (type, column, colocation)."""
    rows = raw(kw, "SELECT c.relname, t.citus_table_type, t.distribution_column, "
               "t.colocation_id FROM citus_tables t JOIN pg_class c ON c.oid = t.table_name "
               "WHERE c.relnamespace = %s::regnamespace AND t.citus_table_type <> 'local'",
               [kw["schema"]])
    return {name: (kind, column, colocation) for name, kind, column, colocation in rows}


def rows_per_worker(kw: dict[str, Any], table: str) -> dict[int, int]:
    """How many of ``table``'s rows each worker's shards hold (by worker port)."""
    found = raw(kw, "SELECT s.nodeport, r.result::bigint FROM run_command_on_shards("
                "%s, 'SELECT count(*) FROM %%s') AS r JOIN citus_shards s "
                "ON s.shardid = r.shardid WHERE r.success", [f"{kw['schema']}.{table}"])
    counts: dict[int, int] = {}
    for port, count in found:
        counts[port] = counts.get(port, 0) + count
    return counts


def local_bytes(kw: dict[str, Any], table: str) -> int:
    """Bytes of the coordinator's own (shell) table, outside the shards: 0 once the rows
    moved into the shards and the local copy was emptied."""
    ((size,),) = raw(kw, "SELECT pg_relation_size(%s::regclass)", [table])
    return int(size)


def keys_to_runs(kw: dict[str, Any], table: str) -> list[str]:
    """The foreign keys from ``table`` to ``runs``."""
    return [r[0] for r in raw(kw, "SELECT conname FROM pg_constraint WHERE contype = 'f' "
                              "AND conrelid = %s::regclass AND confrelid = 'runs'::regclass",
                              [table])]
