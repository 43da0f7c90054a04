"""The local spool: metric rows and run updates kept on disk while the server is away.

A buffered run whose server does not answer (see ``sqltrack.metrics.buffer``) moves
its rows here instead of blocking training; the final status of a run stopped
during the outage goes here too. The spool is replayed, oldest entry first,
when the server answers again, by the next client of that server opening the
same spool, or by ``sqltrack sync --spool PATH``. Replay is idempotent: metric
rows are upserts on ``(run_id, step, progress)`` and run updates set values, so
an entry written twice (a replay killed between the write and the removal of
the entry) gives the same result.

Replaying the entries: ``sqltrack.outage.replay``. The file is SQLite (stdlib
``sqlite3``, rollback journal, no WAL: it may sit on NFS) with a small schema of its
own, one ordered table for every target:

``spool_entries(seq, target, run_id, kind, step, progress, names, kinds, vals,
updated, error)``
    ``kind`` is ``'row'`` (one ``add_metrics`` call: metric names, their kinds
    and values as JSON, the row's ``updated`` time) or ``'run'`` (a run update:
    ``vals`` holds ``{"status": ..., "time_updated": ...}``). An entry the
    target refuses for good (its run was deleted, a value no longer fits its
    column) is kept with ``error`` set and skipped by later replays; nothing
    is dropped silently.
``spool_targets(target, engine, params)``
    where each target is (connection settings without passwords), so that
    ``sqltrack sync --spool PATH`` needs nothing else.

A target is one database (and PostgreSQL schema): see :func:`target_key`. The
default file is ``spool-<host name>.db`` in ``$SQLTRACK_SPOOL_DIR``, else
``$XDG_CACHE_HOME/sqltrack``, else ``~/.cache/sqltrack``: one file per machine,
so that a job that follows a crashed one on the same node replays what it left.
The file is created on first use only.

Writes are serialized by SQLite's own file lock; a replay holds an exclusive
``flock`` on ``<path>.lock`` so that two processes never replay the same
entries at once (a second one skips, the first does the work).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import DEFAULT_ENGINE, default_spool_file
from ..engines import dialect_for
from ..engines.sqlite_worker import connect_private
from ..metrics import layout
from ..metrics.layout import MetricRow

if TYPE_CHECKING:
    from ..config import Settings

T = TypeVar("T")
#: Entries read and written per step of a replay.
REPLAY_BATCH = 5000
#: Keys never stored with a target's settings.
_SECRETS = frozenset({"password", "sslpassword", "passfile"})
_DDL = """
CREATE TABLE IF NOT EXISTS spool_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('row', 'run')),
    step INTEGER,
    progress REAL,
    names TEXT,
    kinds TEXT,
    vals TEXT NOT NULL,
    updated TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS spool_entries_pending ON spool_entries (target, error, seq);
CREATE TABLE IF NOT EXISTS spool_targets (
    target TEXT PRIMARY KEY,
    engine TEXT NOT NULL,
    params TEXT NOT NULL
);
PRAGMA user_version = 1;
"""


def default_spool_path() -> Path:
    """``spool-<host>.db`` in ``$SQLTRACK_SPOOL_DIR``, ``$XDG_CACHE_HOME/sqltrack`` or
    ``~/.cache/sqltrack``."""
    return Path(default_spool_file())


def target_key(settings: Settings) -> str:
    """The database a spool entry is for: engine, server, database and schema, no secret."""
    return dialect_for(settings.engine).target_key(settings)


def target_params(settings: Settings) -> dict[str, Any]:
    """Client settings that reach the target again, from any directory (passwords left out:
    they come from the environment, ``~/.pgpass`` or the config file of whoever replays)."""
    portable = dialect_for(settings.engine).portable_params(settings)
    params = {k: v for k, v in portable.items() if k not in _SECRETS}
    if settings.schema:
        params["schema"] = settings.schema
    return params


def _encode(value: Any, kind: str | None) -> Any:
    return value.isoformat() if kind == "datetime" and value is not None else value


def _decode(value: Any, kind: str | None) -> Any:
    return datetime.fromisoformat(value) if kind == "datetime" and value is not None else value


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass
class Entry:
    """One spooled entry: a metric row, or a run update (``row`` is None then)."""

    seq: int
    run_id: int
    row: MetricRow | None
    update: dict[str, Any] | None = None


@dataclass
class ReplayResult:
    """What a replay did: entries written, entries the target refused (kept), and why."""

    rows: int = 0
    run_updates: int = 0
    refused: int = 0
    left: int = 0
    busy: bool = False
    errors: list[str] = field(default_factory=list)


class Spool:
    """One spool file, for one target (entries of other targets in the file are left alone).

    The methods are blocking (SQLite on this machine: a batch costs milliseconds);
    the buffer calls them through :func:`offload` (a worker thread). Thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str], target: str, engine: str = DEFAULT_ENGINE,
                 params: dict[str, Any] | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.target = target
        self.engine = engine
        self.params = params or {}
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._replaying: asyncio.Lock | None = None

    @classmethod
    def for_settings(cls, settings: Settings, path: str | os.PathLike[str] | None = None) -> Spool:
        """The spool of a client's target (``path`` None: the default file)."""
        return cls(path or default_spool_path(), target_key(settings), settings.engine,
                   target_params(settings))

    def __repr__(self) -> str:
        return f"<Spool {str(self.path)!r} {self.target!r}>"

    # -- the file -----------------------------------------------------------------
    def rebind(self) -> None:
        """Forget the replay lock of a loop that is gone (at exit: a fresh loop)."""
        self._replaying = None

    def opened(self) -> bool:
        """Whether this process has the file open (it exists then)."""
        return self._conn is not None

    def exists(self) -> bool:
        return self.path.exists()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect_private(self.path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_DDL)
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` of the file (``'ok'`` when sound)."""
        with self._lock:
            return str(self._db().execute("PRAGMA integrity_check").fetchone()[0])

    # -- writing --------------------------------------------------------------------
    def _remember_target(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO spool_targets (target, engine, params) VALUES (?, ?, ?) "
            "ON CONFLICT (target) DO UPDATE SET engine = excluded.engine, "
            "params = excluded.params",
            (self.target, self.engine, json.dumps(self.params)),
        )

    def append_rows(self, run_id: int, rows: Sequence[MetricRow]) -> None:
        """Add metric rows (``sqltrack.metrics.layout``), in order, in one transaction
        (all of them or none)."""
        if not rows:
            return
        data = [
            (self.target, run_id, layout.step(row), layout.progress(row),
             json.dumps(layout.names(row)), json.dumps(layout.kinds(row)),
             json.dumps([_encode(v, k) for v, k in zip(layout.values(row), layout.kinds(row),
                                                       strict=True)]),
             _time(layout.updated(row)))
            for row in rows
        ]
        with self._transaction() as conn:
            self._remember_target(conn)
            conn.executemany(
                "INSERT INTO spool_entries (target, run_id, kind, step, progress, names, "
                "kinds, vals, updated) VALUES (?, ?, 'row', ?, ?, ?, ?, ?, ?)",
                data,
            )

    def append_run_update(self, run_id: int, status: str | None = None,
                          time_started: datetime | None = None,
                          time_updated: datetime | None = None,
                          experiment_id: int | None = None) -> None:
        """Add a run update (its creation in ``experiment_id``, its status and times),
        after the run's entries spooled so far."""
        update = {k: v for k, v in (("experiment_id", experiment_id), ("status", status),
                                    ("time_started", _time(time_started)),
                                    ("time_updated", _time(time_updated))) if v is not None}
        with self._transaction() as conn:
            self._remember_target(conn)
            conn.execute(
                "INSERT INTO spool_entries (target, run_id, kind, vals) VALUES (?, ?, 'run', ?)",
                (self.target, run_id, json.dumps(update)),
            )

    # -- reading --------------------------------------------------------------------
    def pending(self, run_id: int | None = None) -> int:
        """Entries of this target waiting for replay (of one run, when given)."""
        if self._conn is None and not self.exists():
            return 0
        query = "SELECT count(*) FROM spool_entries WHERE target = ? AND error IS NULL"
        params: tuple[Any, ...] = (self.target,)
        if run_id is not None:
            query += " AND run_id = ?"
            params += (run_id,)
        with self._lock:
            return int(self._db().execute(query, params).fetchone()[0])

    def refused(self) -> list[tuple[int, int, str]]:
        """``(seq, run_id, error)`` of the entries the target refused (kept for a human)."""
        if self._conn is None and not self.exists():
            return []
        with self._lock:
            return self._db().execute(
                "SELECT seq, run_id, error FROM spool_entries WHERE target = ? "
                "AND error IS NOT NULL ORDER BY seq", (self.target,)).fetchall()

    def take(self, limit: int = REPLAY_BATCH) -> list[Entry]:
        """The oldest ``limit`` pending entries of this target, oldest first (not removed)."""
        with self._lock:
            records = self._db().execute(
                "SELECT seq, run_id, kind, step, progress, names, kinds, vals, updated "
                "FROM spool_entries WHERE target = ? AND error IS NULL ORDER BY seq LIMIT ?",
                (self.target, limit),
            ).fetchall()
        entries = []
        for seq, run_id, kind, step, progress, names, kinds, vals, updated in records:
            values = json.loads(vals)
            if kind == "run":
                entries.append(Entry(seq, run_id, None, values))
                continue
            kind_list = json.loads(kinds)
            row = layout.make(
                tuple(json.loads(names)), tuple(kind_list),
                None if updated is None else datetime.fromisoformat(updated),
                run_id, int(step), float(progress),
                (_decode(v, k) for v, k in zip(values, kind_list, strict=True)),
            )
            entries.append(Entry(seq, run_id, row))
        return entries

    def remove(self, seqs: Sequence[int]) -> None:
        """Forget entries written to the target."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM spool_entries WHERE seq = ?", [(s,) for s in seqs])

    def refuse(self, seqs: Sequence[int], error: str) -> None:
        """Keep entries the target refused for good, out of later replays."""
        with self._transaction() as conn:
            conn.executemany("UPDATE spool_entries SET error = ? WHERE seq = ?",
                             [(error, s) for s in seqs])

    # -- replay ---------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def replaying(self, wait: float = 0.0) -> Any:
        """Hold the right to replay (this process: a lock; others: ``flock``), waiting
        up to ``wait`` seconds for another process's replay; None: busy."""
        if self._replaying is None:
            self._replaying = asyncio.Lock()
        async with self._replaying:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            handle = open(fd, "a+b")  # noqa: SIM115 - held below
            try:
                deadline = time.monotonic() + wait
                while True:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            yield None
                            return
                        await asyncio.sleep(0.05)
                yield handle
            finally:
                handle.close()  # releases the flock


def targets_of(path: str | os.PathLike[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(target, engine, params)`` of every target with pending entries in a spool file."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no spool file at {str(path)!r}")
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        return [(target, engine, json.loads(params)) for target, engine, params in conn.execute(
            "SELECT t.target, t.engine, t.params FROM spool_targets t WHERE EXISTS (SELECT 1 "
            "FROM spool_entries e WHERE e.target = t.target AND e.error IS NULL) ORDER BY 1")]

