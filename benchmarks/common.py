"""What every workload shares: the databases of one benchmark run and raw-driver helpers.

Each benchmark run gets a temporary SQLite file and a fresh PostgreSQL schema,
both holding sqltrack's base schema plus the ten float metric columns ``m0`` ..
``m9``, and one experiment per engine that raw-driver baselines attach their runs
to. Everything is removed at the end of the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from types import ModuleType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

import sqltrack

DEFAULT_PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
NAMES = tuple(f"m{i}" for i in range(10))
COLUMNS = ("run_id", "step", "progress", *NAMES)
ENGINES = ("sqlite", "postgres")


def metric_rows(count: int, seed: int = 0) -> list[tuple[float, ...]]:
    """``count`` rows of ten random floats (the metric values of ``count`` steps)."""
    rand = random.Random(seed)
    return [tuple(rand.random() for _ in NAMES) for _ in range(count)]


def insert_sql(placeholder: str) -> str:
    """The raw baseline's plain INSERT of one metrics row."""
    marks = ", ".join([placeholder] * len(COLUMNS))
    return f"INSERT INTO metrics ({', '.join(COLUMNS)}) VALUES ({marks})"


def upsert_sql(placeholder: str) -> str:
    """By hand, the metric write sqltrack does: upsert the row (the run's touch is separate)."""
    marks = ", ".join([placeholder] * len(COLUMNS))
    updates = ", ".join(f"{n} = excluded.{n}" for n in NAMES)
    return (
        f"INSERT INTO metrics ({', '.join(COLUMNS)}) VALUES ({marks}) "
        f"ON CONFLICT (run_id, step, progress) DO UPDATE SET {updates}"
    )


def sync_facade() -> ModuleType | None:
    """``sqltrack_sync`` when it is importable and has ``Client``, else None."""
    try:
        import sqltrack_sync
    except ImportError:
        return None
    return sqltrack_sync if hasattr(sqltrack_sync, "Client") else None


def has_buffered_option() -> bool:
    """Whether sqltrack exposes buffered metric writes (the hook of the buffered cases).

    That is a ``buffered`` client setting (``AsyncClient(..., buffered=True)``) and
    ``AsyncRun.flush()``.
    """
    from sqltrack.config import Settings

    fields = {f.name for f in dataclasses.fields(Settings)}
    return "buffered" in fields and hasattr(sqltrack.AsyncRun, "flush")


@dataclass
class Env:
    """The databases of one benchmark run (see the module docstring)."""

    loop: asyncio.AbstractEventLoop
    quick: bool
    pg_dsn: str
    directory: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="sqltrack-bench-"))
    )
    pg_schema: str = field(default_factory=lambda: "sqltrack_bench_" + uuid.uuid4().hex[:10])
    pg_error: str | None = None
    load_at_start: float = field(default_factory=lambda: os.getloadavg()[0])
    experiment_ids: dict[str, int] = field(default_factory=dict)

    @property
    def sqlite_path(self) -> str:
        return str(self.directory / "bench.db")

    def skip_reason(self, engine: str) -> str | None:
        """Why cases of ``engine`` cannot run, or None."""
        if engine == "postgres" and self.pg_error:
            return f"no PostgreSQL: {self.pg_error}"
        return None

    def client_kwargs(self, engine: str, **extra: Any) -> dict[str, Any]:
        """Keyword arguments of a sqltrack client of this run's database of ``engine``."""
        if engine == "sqlite":
            return {"engine": "sqlite", "dbpath": self.sqlite_path, **extra}
        params = {k: str(v) for k, v in conninfo_to_dict(self.pg_dsn).items()}
        return {"engine": "postgres", **params, "schema": self.pg_schema, **extra}

    def pg_kwargs(self, **extra: Any) -> dict[str, Any]:
        """psycopg connection keywords for this run's schema (autocommit)."""
        options = f"-c search_path={self.pg_schema}"
        return {"autocommit": True, "options": options, **extra}

    def pg_connect(self, **extra: Any) -> psycopg.Connection:
        """A raw psycopg connection in autocommit mode, in this run's schema."""
        return psycopg.connect(self.pg_dsn, **self.pg_kwargs(**extra))

    # -- set-up and clean-up --------------------------------------------------
    def setup(self) -> None:
        """Check PostgreSQL, then create the schema, columns and experiment per engine."""
        try:
            with psycopg.connect(self.pg_dsn, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as error:
            self.pg_error = str(error).strip().splitlines()[0]
        for engine in ENGINES:
            if self.skip_reason(engine) is None:
                self.experiment_ids[engine] = self.loop.run_until_complete(self._prepare(engine))

    async def _prepare(self, engine: str) -> int:
        client = sqltrack.AsyncClient(**self.client_kwargs(engine))
        try:
            experiment = await sqltrack.AsyncExperiment.create(client, name="bench")
            run = await experiment.get_run()
            await run.add_metrics(dict.fromkeys(NAMES, 0.0))
            return experiment.id
        finally:
            await client.close()

    def cleanup(self) -> None:
        """Drop the PostgreSQL schema and delete the SQLite directory."""
        if not self.pg_error:
            with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')
        shutil.rmtree(self.directory, ignore_errors=True)


# -- sqltrack cases: one run logging step after step ------------------------------
#: Untimed ``add_metrics`` calls at step 0 before the clock starts: the first gives new
#: names their places (through the event loop); the second is the first on the path the
#: timed calls take (the blocking API on SQLite writes on the calling thread's own
#: connection, which opens and prepares its statement then: 10-20 ms for a row of 1,000
#: columns, a fixed cost that W6's 100 timed steps carried as 100-200 µs a step). The raw
#: per-step baselines write one untimed step too.
WARM_UP = 2


async def timed_steps_async(env: Env, engine: str, experiment: str,
                            steps: list[dict[str, Any]], buffered: bool = False,
                            **options: Any) -> tuple[float, int]:
    """Seconds ``await run.add_metrics(steps[i - 1], step=i, **options)`` takes for every
    step through an AsyncClient, on a new run of ``experiment``, and the run's id.

    Two untimed warm-up calls at step 0 come first (see ``WARM_UP``). Buffered: the
    client has ``buffered=True``, the warm-up is flushed untimed and the final
    ``run.flush()`` is timed.
    """
    extra = {"buffered": True} if buffered else {}
    client = sqltrack.AsyncClient(**env.client_kwargs(engine, **extra))
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name=experiment)).get_run()
        for _ in range(WARM_UP):
            await run.add_metrics(steps[0], step=0)
        if buffered:
            await run.flush()
        start = perf_counter()
        for step, metrics in enumerate(steps, 1):
            await run.add_metrics(metrics, step=step, **options)
        if buffered:
            await run.flush()
        return perf_counter() - start, run.id
    finally:
        await client.close()


def timed_steps_blocking(env: Env, engine: str, experiment: str,
                         steps: list[dict[str, Any]], buffered: bool = False
                         ) -> tuple[float, int]:
    """:func:`timed_steps_async` through the sync facade (``sqltrack_sync``): seconds
    ``run.add_metrics(steps[i - 1], step=i)`` takes for every step, and the run's id."""
    facade = sync_facade()
    assert facade is not None, "sqltrack_sync.Client is not available"
    extra = {"buffered": True} if buffered else {}
    client = facade.Client(**env.client_kwargs(engine, **extra))
    try:
        run = facade.Experiment(client, name=experiment).get_run()
        for _ in range(WARM_UP):
            run.add_metrics(steps[0], step=0)
        if buffered:
            run.flush()
        start = perf_counter()
        for step, metrics in enumerate(steps, 1):
            run.add_metrics(metrics, step=step)
        if buffered:
            run.flush()
        return perf_counter() - start, run.id
    finally:
        close_quietly(client)


# -- raw-driver helpers -----------------------------------------------------------
def sqlite_connect(path: str) -> sqlite3.Connection:
    """A raw sqlite3 connection set up like sqltrack's (WAL, synchronous=NORMAL, FKs)."""
    conn = sqlite3.connect(path, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def sqlite_new_run(conn: sqlite3.Connection, experiment_id: int) -> int:
    """Insert a run by hand and return its id."""
    cursor = conn.execute("INSERT INTO runs (experiment_id) VALUES (?)", (experiment_id,))
    conn.commit()
    return cursor.lastrowid


def pg_new_run(conn: psycopg.Connection, experiment_id: int) -> int:
    """Insert a run by hand and return its id."""
    sql = "INSERT INTO runs (experiment_id) VALUES (%s) RETURNING id"
    return conn.execute(sql, (experiment_id,)).fetchone()[0]


def sqlite_timed_run(env: Env, write: Callable[[sqlite3.Connection, int], None],
                     warm_up: Callable[[sqlite3.Connection, int], None] | None = None
                     ) -> float:
    """Seconds ``write(conn, run_id)`` takes on a raw sqlite3 connection, into a run made
    by hand for it (after ``warm_up(conn, run_id)``, untimed); the run and its rows are
    deleted afterwards, untimed (the tables stay small)."""
    conn = sqlite_connect(env.sqlite_path)
    try:
        run_id = sqlite_new_run(conn, env.experiment_ids["sqlite"])
        if warm_up is not None:
            warm_up(conn, run_id)
        start = perf_counter()
        write(conn, run_id)
        took = perf_counter() - start
        conn.execute("DELETE FROM runs WHERE id = ?", [run_id])
        conn.commit()
        return took
    finally:
        conn.close()


async def pg_new_run_async(conn: psycopg.AsyncConnection, experiment_id: int) -> int:
    """Insert a run by hand and return its id (async connection)."""
    sql = "INSERT INTO runs (experiment_id) VALUES (%s) RETURNING id"
    cursor = await conn.execute(sql, (experiment_id,))
    return (await cursor.fetchone())[0]


def close_quietly(client: Any) -> None:
    """Close a sync facade client when it has ``close``."""
    close = getattr(client, "close", None)
    if callable(close):
        close()
