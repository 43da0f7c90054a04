"""Copy experiments, runs, metrics and links from one database to another (``sqltrack sync``).

The use: log on a node without database access to a SQLite file, then bring the runs
to the team's server with ``await sqltrack.sync(node_client, server_client)`` (or
``sqltrack sync --from ... --to ...``). Any engine to any engine.

What is copied: experiments, matched by name (created when missing); every run, with
a new id on the target, and its status, times, comment, tags, args, env and extras;
its metric rows, wherever each database stores a metric (a column of ``metrics`` or
rows of the long table ``metric_values``: a name may be a column on one side and
long-stored on the other; missing names get their place on the target as
``add_metrics`` gives it, with the source's types); run and experiment links, with
ids remapped. Nothing is ever deleted on the target.

How a re-sync copies only what changed, and stays right when interrupted or run twice:

* The source gets an identity on its first sync: a uuid in its table ``sync_source``.
* The target keeps one row per source run in ``sync_runs``: the target run id, the
  run's attributes as last copied (``synced``), a *digest* of the source's metric rows
  up to a key ``(digest_step, digest_progress)`` taken before those rows were read, and
  how far the copy of them got (``copied_step``, ``copied_progress``). ``sync_experiments``
  keeps the same for experiments.
* Next time the digest of the same key range is taken again. Equal: none of those rows
  changed since they were read, so only rows after the copied key are read. Different
  (a row upserted out of order, a value merged into an old step): every row of the run
  is compared with the target and the differing ones are upserted.
* Each page of rows is written in one target transaction that first checks and locks
  the run's ``sync_runs`` row and moves the copied key: a sync killed at any moment
  leaves a state the next one continues from, and two syncs of one run take turns.
* Attributes: what changed on the source since the last sync is applied (JSON keys
  added, changed and removed one by one), so what others changed on the target stays.
* Every target transaction runs through ``conflicts.in_transaction``: one the server
  cancels to break a deadlock (40P01, also Citus's distributed check) runs again from
  its start, a bounded number of times (then a loud ``ConflictError``). Sync's own
  tables are created only when missing (on Citus a ``CREATE TABLE IF NOT EXISTS`` of an
  existing ``sync_experiments`` locks it, then ``experiments``: see ``_ensure_tables``).

A metric row is a key ``(step, progress)`` of either place with the values of both.
The digest is a BLAKE2b hash of the range's rows in key order, each value in an exact
binary form (floats bit for bit, so ``-0.0``, a swap of two values, ``+x`` here and ``-x``
there, or a change in the last bit all change it), over the columns the run uses; a
column the run starts using later must be empty in the old range. Any change of a
value, a row added or removed inside the range changes it (but for a hash collision).
``full=True`` (``sqltrack sync --full``) compares every row anyway.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import marshal
import math
import operator
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import DatabaseError, SqltrackError
from ..metrics import layout
from ..model import experiments as _experiments
from ..model import runs as _runs
from ..model.experiments import AsyncExperiment
from ..model.statements import count_metric_rows, delete_metric_rows, run_steps
from ..read import queries
from ..read.queries import json_column, metric_value, timestamp
from .conflicts import in_transaction

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

#: Metric rows read (and written) per transaction.
PAGE_ROWS = 5_000
#: Source and target ids per ``IN (...)`` list.
_ID_CHUNK = 500

#: Sync's own tables; ``{int}``, ``{float}``, ``{str}``: the dialect's column types (``_ddl``).
_SOURCE_TABLES = (
    "CREATE TABLE IF NOT EXISTS sync_source ("
    "id {int} PRIMARY KEY CHECK (id = 1), source_key {str} NOT NULL)",
)
_TARGET_TABLES = (
    "CREATE TABLE IF NOT EXISTS sync_experiments ("
    "source_key {str} NOT NULL, source_experiment_id {int} NOT NULL, "
    "target_experiment_id {int} NOT NULL REFERENCES experiments (id) ON DELETE CASCADE, "
    "synced {str}, PRIMARY KEY (source_key, source_experiment_id))",
    "CREATE TABLE IF NOT EXISTS sync_runs ("
    "source_key {str} NOT NULL, source_run_id {int} NOT NULL, "
    "target_run_id {int} NOT NULL REFERENCES runs (id) ON DELETE CASCADE, "
    "digest_step {int}, digest_progress {float}, digest {str}, "
    "copied_step {int}, copied_progress {float}, synced {str}, "
    "PRIMARY KEY (source_key, source_run_id))",
    "CREATE INDEX IF NOT EXISTS sync_runs_target_run_idx ON sync_runs (target_run_id)",
    "CREATE INDEX IF NOT EXISTS sync_experiments_target_idx "
    "ON sync_experiments (target_experiment_id)",
)
#: The target's tables that name its runs and experiments (on Citus: no foreign key to
#: the distributed ``runs``; see the dialect's ``side_table_steps``).
_TARGET_SIDE_TABLES = ("sync_experiments", "sync_runs")
_RUN_COLUMNS = (
    "id, experiment_id, status, time_created, time_started, time_updated, "
    "comment, tags, args, env, extras"
)
_AFTER = "(step > %s OR (step = %s AND progress > %s))"
_UP_TO = "(step < %s OR (step = %s AND progress <= %s))"
_FROM = "(step > %s OR (step = %s AND progress >= %s))"
_WHERE_RUN = "WHERE source_key = %s AND source_run_id = %s"
#: Marks a digest of the current kind (older kinds are never equal: one full compare).
_DIGEST_KIND = "b2"

Key = tuple[int, float]
Action = Callable[[], Awaitable[Any]]


class SyncError(SqltrackError):
    """A sync cannot copy something (a metric column the target cannot get, ...)."""


class _Superseded(Exception):
    """Another sync of the same run moved its state: that sync carries on with it."""


@dataclass
class SyncProgress:
    """Where a sync is: runs done of all, metric rows examined of all."""

    runs_done: int
    runs_total: int
    rows_done: int
    rows_total: int


@dataclass
class SyncSummary:
    """What a sync copied (or, with ``dry_run``, would copy)."""

    source_key: str | None = None
    dry_run: bool = False
    experiments_created: int = 0
    experiments_updated: int = 0
    runs_created: int = 0
    runs_updated: int = 0
    runs_unchanged: int = 0
    metric_rows: int = 0
    links_added: int = 0
    #: Metric rows removed on the target because their run was rewound on the source.
    rows_rewound: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        verb = "would copy" if self.dry_run else "copied"
        return (
            f"{verb} {self.experiments_created} new and {self.experiments_updated} changed "
            f"experiments, {self.runs_created} new and {self.runs_updated} changed runs "
            f"({self.runs_unchanged} unchanged), {self.metric_rows} metric rows, "
            f"{self.links_added} links"
            + (f", {self.rows_rewound} rows past a rewind removed" if self.rows_rewound else "")
            + f" in {self.seconds:.1f} s"
        )


async def sync(
    source: AsyncClient,
    target: AsyncClient,
    *,
    dry_run: bool = False,
    full: bool = False,
    progress: Callable[[SyncProgress], None] | None = None,
    page_rows: int = PAGE_ROWS,
) -> SyncSummary:
    """Copy what is new or changed in ``source`` to ``target``; return a summary.

    Experiments are matched by name, runs get new ids on the target (the mapping is
    kept in the target's ``sync_runs``), metric columns are created with the source's
    types, links are remapped. Syncing again copies only what changed since, also
    while runs of the source are still logging; an interrupted sync is finished by
    the next one, and syncs at the same moment (one source twice, or many sources
    into one target) stay correct. ``dry_run``: count what would be copied, write
    nothing (not even the source's identity). ``full``: compare every metric row
    instead of trusting the digests. ``progress`` is called after each page of rows;
    ``page_rows`` metric rows are read and written per target transaction.
    See ``sqltrack.copy.transfer``.
    """
    if page_rows < 1:
        raise ValueError(f"page_rows must be at least 1, not {page_rows!r}")
    return await _Sync(source, target, dry_run, full, progress, page_rows).run()


# -- helpers ------------------------------------------------------------------
def _ddl(client: AsyncClient, statements: Sequence[str]) -> list[str]:
    """Sync's own table statements with the client's column types."""
    types = {kind: client.dialect.metric_column_type(kind) for kind in ("int", "float", "str")}
    return [statement.format(**types) for statement in statements]


async def _ensure_tables(
    client: AsyncClient, tables: Sequence[str], statements: Sequence[str],
    side_tables: Sequence[str] = (),
) -> None:
    """Create sync's own ``tables`` (``statements``) unless all exist; a race with another
    process creating them is retried. ``side_tables`` then fit a distributed ``runs`` (the
    dialect's ``side_table_steps``; on Citus: they stay on the coordinator without their
    foreign key to ``runs``).

    Why not ``CREATE TABLE IF NOT EXISTS`` on every sync: on Citus that statement, for
    an existing ``sync_experiments`` (a coordinator table whose foreign key names the
    reference table ``experiments``), holds ``sync_experiments`` in ACCESS EXCLUSIVE mode
    and waits for ``experiments`` in that mode: behind every writer of experiments, and
    the reverse of a concurrent sync's order (an experiment, then its mapping row), a
    deadlock (40P01) that cancelled one of the syncs."""
    query, params = client.dialect.tables_query(tables)
    for attempt in range(3):
        try:
            async with client:
                present = {name for (name,) in await client.query(query, params)}
                if not present.issuperset(tables):
                    for statement in _ddl(client, statements):
                        await client.query(statement)
                await run_steps(client, client.dialect.side_table_steps(side_tables))
            return
        except DatabaseError:
            if attempt == 2:
                raise


async def _has_table(client: AsyncClient, table: str) -> bool:
    try:
        await client.query(f"SELECT 1 FROM {table} WHERE 1 = 0")
    except DatabaseError:
        return False
    return True


async def _source_key(client: AsyncClient, create: bool) -> str | None:
    """The source's identity, made on its first sync (None: never synced, not made)."""
    if create:
        await _ensure_tables(client, ("sync_source",), _SOURCE_TABLES)
        await client.query(
            "INSERT INTO sync_source (id, source_key) VALUES (1, %s) ON CONFLICT DO NOTHING",
            [uuid.uuid4().hex],
        )
    elif not await _has_table(client, "sync_source"):
        return None
    rows = await client.query("SELECT source_key FROM sync_source WHERE id = 1")
    return rows[0][0] if rows else None


def _iso(value: Any) -> str | None:
    moment = timestamp(value)
    return None if moment is None else moment.isoformat()


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _quote(client: AsyncClient, names: Sequence[str]) -> str:
    return "".join(", " + client.dialect.quote_ident(name) for name in names)


def _exact(value: Any) -> Any:
    """A value marshal can write, the same for equal values (datetimes as ISO text, ...)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    return f"{type(value).__name__}:{value.isoformat() if hasattr(value, 'isoformat') else value}"


def _hash_rows(rows: Sequence[tuple[Any, ...]]) -> str:
    """BLAKE2b of the rows in an exact binary form (marshal version 2: no sharing of
    objects, so equal rows give equal bytes whatever their identity)."""
    try:
        data = marshal.dumps(list(rows), 2)
    except ValueError:  # a value marshal cannot write (a timestamp, ...)
        data = marshal.dumps([tuple(_exact(v) for v in row) for row in rows], 2)
    return hashlib.blake2b(data, digest_size=20).hexdigest()


@dataclass
class _Digest:
    """The digest of a run's rows up to a key: the hash and the columns it covers."""

    hash: str
    columns: list[str]

    def text(self) -> str:
        return json.dumps({"kind": _DIGEST_KIND, "hash": self.hash, "columns": self.columns})

    @staticmethod
    def parse(text: str | None) -> _Digest | None:
        try:
            data = json.loads(text or "")
        except ValueError:
            return None  # a digest of an older sqltrack
        if not isinstance(data, dict) or data.get("kind") != _DIGEST_KIND:
            return None
        return _Digest(str(data["hash"]), [str(c) for c in data["columns"]])


def _digest_of(rows: Sequence[tuple[Any, ...]], names: Sequence[str],
               columns: Sequence[str]) -> _Digest | None:
    """The digest of ``rows`` (step, progress, then ``names``) over ``columns``; None when
    a column of ``names`` outside ``columns`` has a value (the digest cannot match)."""
    index = {name: 2 + i for i, name in enumerate(names)}
    if any(name not in index for name in columns):
        return None
    others = [index[name] for name in names if name not in columns]
    if any(row[i] is not None for i in others for row in rows):
        return None
    wanted = [0, 1, *(index[name] for name in columns)]
    if wanted == list(range(2 + len(names))):
        return _Digest(_hash_rows(rows), list(columns))
    pick = operator.itemgetter(*wanted)
    return _Digest(_hash_rows(list(map(pick, rows))), list(columns))


def _json_actions(
    old: Any, new: Any, first: bool, set_: Callable[[Any], Action],
    add: Callable[[dict[str, Any]], Action], remove: Callable[[list[str]], Action],
) -> list[Action]:
    """What turns the target's JSON column into the source's: whole on a first copy, else
    the keys the source added, changed or removed since the last sync."""
    if not first and old == new:
        return []
    if first or not isinstance(old, dict) or not isinstance(new, dict):
        return [] if first and new is None else [set_(new)]
    actions = []
    changed = {k: v for k, v in new.items() if k not in old or old[k] != v}
    removed = [k for k in old if k not in new]
    if changed:
        actions.append(add(changed))
    if removed:
        actions.append(remove(removed))
    return actions


def _rewinds(extras: Any) -> list[dict[str, Any]]:
    """The rewinds a run's extras record (``run_rewind``), or []."""
    found = extras.get("rewinds") if isinstance(extras, dict) else None
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def _run_attributes(row: Sequence[Any]) -> dict[str, Any]:
    _, _, status, created, started, updated, comment, tags, args, env, extras = row
    return {
        "status": status, "comment": comment, "created": _iso(created),
        "started": _iso(started), "updated": _iso(updated), "tags": json_column(tags),
        "args": json_column(args), "env": json_column(env), "extras": json_column(extras),
    }


def _run_actions(
    client: AsyncClient, run_id: int, old: dict[str, Any] | None, new: dict[str, Any]
) -> list[Action]:
    """The calls that bring a target run's attributes to the source's (see _json_actions)."""
    first = old is None
    before = old or {}
    actions: list[Action] = []

    def call(function: Callable[..., Awaitable[Any]], *args: Any) -> Action:
        return lambda: function(client, run_id, *args)

    if first or before.get("status") != new["status"]:
        actions.append(call(_runs.run_set_status, new["status"]))
    if (first and new["comment"] is not None) or (not first and before.get("comment")
                                                  != new["comment"]):
        actions.append(call(_runs.run_set_comment, new["comment"]))
    setters = {"created": _runs.run_set_created, "started": _runs.run_set_started,
               "updated": _runs.run_set_updated}
    for field_name, setter in setters.items():
        value = new[field_name]
        if value is not None and (first or before.get(field_name) != value):
            actions.append(call(setter, timestamp(value)))
    actions += _json_actions(
        before.get("tags"), new["tags"], first,
        lambda v: call(_runs.run_set_tags, *(v or {})),
        lambda d: call(_runs.run_add_tags, *d),
        lambda keys: call(_runs.run_remove_tags, keys),
    )
    functions = {
        "args": (_runs.run_set_args, _runs.run_add_args, _runs.run_remove_args),
        "env": (_runs.run_set_env, _runs.run_add_env, _runs.run_remove_env),
        "extras": (_runs.run_set_extras, _runs.run_add_extras, _runs.run_remove_extras),
    }
    for name, (set_, add, remove) in functions.items():
        actions += _json_actions(before.get(name), new[name], first, _bound(call, set_),
                                 _bound(call, add), _bound(call, remove))
    return actions


def _bound(
    call: Callable[..., Action], function: Callable[..., Awaitable[Any]]
) -> Callable[[Any], Action]:
    """``value -> call(function, value)``: one action factory per setter."""
    return lambda value: call(function, value)


# -- metric rows from both places ---------------------------------------------
#: The value columns of ``metric_values`` and the kind each holds (a row fills one).
_LONG_SLOTS = (("value", "float"), ("value_int", "int"), ("value_bool", "bool"),
               ("value_text", "str"), ("value_time", "datetime"))
#: Long-stored names per ``IN (...)`` list (more: every name of the run, then filtered).
_NAMES_PER_QUERY = 500


class _Place:
    """Where the source keeps the metrics a run's copy reads: ``names`` in row order,
    those that are columns of ``metrics``, those with rows in ``metric_values``."""

    def __init__(self, names: list[str], columns: dict[str, Any], long: set[str]) -> None:
        self.names = names
        self.columns = [n for n in names if n in columns]
        self.long = [n for n in names if n in long]


async def _long_kinds(client: AsyncClient) -> dict[str, str]:
    """The database's long-stored names, name -> kind ({} when it stores none)."""
    if not await client.query("SELECT 1 FROM metric_values LIMIT 1"):
        return {}
    return await queries.long_metrics(client)


async def _last_key(client: AsyncClient, run_id: int, long: bool) -> Key | None:
    """The run's largest metric key, in either place (``long``: look in metric_values)."""
    last = "ORDER BY step DESC, progress DESC LIMIT 1"
    rows = await client.query(f"SELECT step, progress FROM metrics WHERE run_id = %s {last}",
                              [run_id])
    if long:
        rows += await client.query(
            f"SELECT step, progress FROM metric_values WHERE run_id = %s {last}", [run_id])
    return max(((int(r[0]), float(r[1])) for r in rows), default=None)


def _name_filter(names: Sequence[str]) -> tuple[str, list[str]]:
    """`` AND name IN (...)`` for a few names (none for many: the caller filters)."""
    if len(names) > _NAMES_PER_QUERY:
        return "", []
    return f" AND name IN ({', '.join(['%s'] * len(names))})", list(names)


def _long_value(slots: Sequence[Any]) -> tuple[Any, str | None]:
    """The value a ``metric_values`` row holds and its kind (None, None: none)."""
    for value, (_, kind) in zip(slots, _LONG_SLOTS, strict=True):
        if value is not None:
            return value, kind
    return None, None


async def _read_rows(
    client: AsyncClient, run_id: int, columns: Sequence[str], long: Sequence[str] | None,
    where: str, bounds: Sequence[Any], names: Sequence[str] | None = None,
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """A run's metric rows whose keys match ``where`` (``%s`` for ``bounds``), in key order:
    ``(step, progress, *values of names)``, each key of either place, a long value winning
    over a column's; column values as stored, long ones as the kind of the value column
    that holds them. Also returns the long names read.

    ``long``: the long-stored names to read (None: every name the run has there; []:
    none). ``names`` (the row's order) defaults to ``columns`` and the long names found,
    sorted."""
    column_rows = await client.query(
        f"SELECT step, progress{_quote(client, columns)} FROM metrics WHERE run_id = %s "
        f"AND {where} ORDER BY step, progress", [run_id, *bounds])
    long_rows: list[Any] = []
    if long is None or long:
        name_filter, name_params = _name_filter(long) if long else ("", [])
        slots = ", ".join(column for column, _ in _LONG_SLOTS)
        long_rows = await client.query(
            f"SELECT step, progress, name, {slots} FROM metric_values WHERE run_id = %s "
            f"AND {where}{name_filter}", [run_id, *bounds, *name_params])
        if long is not None and len(long) > _NAMES_PER_QUERY:
            wanted = set(long)
            long_rows = [r for r in long_rows if r[2] in wanted]
    found = sorted({r[2] for r in long_rows})
    if names is None:
        names = sorted({*columns, *found})
    if not long_rows and list(names) == list(columns):
        return [tuple(r) for r in column_rows], found  # the usual run: columns only
    at = {name: index for index, name in enumerate(names, 2)}
    empty = [None] * len(names)
    merged: dict[Key, list[Any]] = {}
    for row in column_rows:
        values = merged[(row[0], row[1])] = [row[0], row[1], *empty]
        for name, value in zip(columns, row[2:], strict=True):
            values[at[name]] = value
    for step, progress, name, *held in long_rows:
        found_row = merged.get((step, progress))
        if found_row is None:
            found_row = merged[(step, progress)] = [step, progress, *empty]
        value, kind = _long_value(held)
        if value is not None:
            found_row[at[name]] = metric_value(value, kind)
    return [tuple(merged[key]) for key in sorted(merged)], found


# -- the sync -----------------------------------------------------------------
class _Sync:
    """One sync of a source into a target (state for the phases below)."""

    def __init__(
        self, source: AsyncClient, target: AsyncClient, dry_run: bool, full: bool,
        progress: Callable[[SyncProgress], None] | None, page_rows: int = PAGE_ROWS,
    ) -> None:
        self.page_rows = page_rows
        self.src = source
        self.dst = target
        self.dry_run = dry_run
        self.full = full
        self.report = progress
        self.summary = SyncSummary(dry_run=dry_run)
        self.key: str | None = None
        self.tables = False  # the target has sync's tables
        self.experiments: dict[int, int | None] = {}
        self.runs: dict[int, int | None] = {}
        self.created: set[int] = set()  # source runs whose target run this sync made
        self.target_columns: dict[str, str | None] | None = None
        #: The source's long-stored names (``metric_names``), name -> kind.
        self.src_long: dict[str, str] = {}
        self.rows_total = 0
        self.rows_done = 0
        self.runs_done = 0

    async def run(self) -> SyncSummary:
        started = time.monotonic()
        self.key = await _source_key(self.src, create=not self.dry_run)
        self.summary.source_key = self.key
        if self.key is not None and await _source_key(self.dst, create=False) == self.key:
            raise SyncError("the source and the target are the same database: give another "
                            "target (a copy of the file keeps its identity too)")
        if not self.dry_run:
            await _ensure_tables(self.dst, _TARGET_SIDE_TABLES, _TARGET_TABLES,
                                 _TARGET_SIDE_TABLES)
            self.tables = True
        else:
            self.tables = self.key is not None and await _has_table(self.dst, "sync_runs")
        await self._sync_experiments()
        source_runs = await self.src.query(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id")
        await self._map_runs(source_runs)
        self.src_long = await _long_kinds(self.src)
        counts = await self.src.query(
            "SELECT run_id, COUNT(*) FROM (SELECT run_id, step, progress FROM metrics UNION "
            "SELECT run_id, step, progress FROM metric_values) AS k GROUP BY run_id"
            if self.src_long else "SELECT run_id, COUNT(*) FROM metrics GROUP BY run_id")
        per_run = {run_id: count for run_id, count in counts}
        self.rows_total = sum(per_run.values())
        columns = await queries.metric_columns(self.src)
        rows_before = 0
        for row in source_runs:
            await self._sync_run(row[0], columns)
            self.runs_done += 1
            rows_before += per_run.get(row[0], 0)
            self.rows_done = rows_before
            self._progress(len(source_runs))
        await self._sync_links(len(source_runs))
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _progress(self, runs_total: int) -> None:
        if self.report is not None:
            self.report(SyncProgress(self.runs_done, runs_total, self.rows_done, self.rows_total))

    # -- experiments ----------------------------------------------------------
    async def _sync_experiments(self) -> None:
        rows = await self.src.query(
            "SELECT id, name, time_created, comment, tags FROM experiments ORDER BY id"
        )
        known: dict[int, tuple[int, Any]] = {}
        if self.tables:
            for source_id, target_id, synced in await self.dst.query(
                "SELECT source_experiment_id, target_experiment_id, synced FROM sync_experiments "
                "WHERE source_key = %s", [self.key]
            ):
                known[source_id] = (target_id, synced)
        for source_id, name, created, comment, tags in rows:
            new = {"comment": comment, "tags": json_column(tags), "created": _iso(created)}
            found = await self.dst.query("SELECT id FROM experiments WHERE name = %s", [name])
            if self.dry_run:
                target_id = found[0][0] if found else None
                self.experiments[source_id] = target_id
                if target_id is None:
                    self.summary.experiments_created += 1
                elif await self._experiment_actions(target_id, known.get(source_id), new):
                    self.summary.experiments_updated += 1
                continue
            target_id, changed = await in_transaction(self.dst, partial(
                self._copy_experiment, source_id, name, known.get(source_id), new))
            self.experiments[source_id] = target_id
            if not found:
                self.summary.experiments_created += 1
            elif changed:
                self.summary.experiments_updated += 1

    async def _copy_experiment(
        self, source_id: int, name: str, known: tuple[int, Any] | None, new: dict[str, Any]
    ) -> tuple[int, bool]:
        """Make or update the experiment and its mapping row (in the caller's transaction);
        its target id and whether anything of it changed."""
        target_id = (await AsyncExperiment.create(self.dst, name=name)).id
        actions = await self._experiment_actions(target_id, known, new)
        for action in actions:
            await action()
        await self.dst.query(
            "INSERT INTO sync_experiments (source_key, source_experiment_id, "
            "target_experiment_id, synced) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (source_key, source_experiment_id) DO UPDATE SET "
            "target_experiment_id = excluded.target_experiment_id, "
            "synced = excluded.synced",
            [self.key, source_id, target_id, json.dumps(new)],
        )
        return target_id, bool(actions)

    async def _experiment_actions(
        self, target_id: int, known: tuple[int, Any] | None, new: dict[str, Any]
    ) -> list[Action]:
        """Comment and tags as for runs; an experiment that existed on the target before
        its first sync keeps its comment and gets the source's tags added. time_created:
        the earlier of the two."""
        old = json.loads(known[1]) if known and known[0] == target_id and known[1] else None
        ((comment, tags, created),) = await self.dst.query(
            "SELECT comment, tags, time_created FROM experiments WHERE id = %s", [target_id]
        )
        tags = json_column(tags)
        client, actions = self.dst, list[Action]()
        if old is None:
            if new["comment"] is not None and comment is None:
                actions.append(lambda: _experiments.experiment_set_comment(
                    client, target_id, new["comment"]))
            missing = [t for t in (new["tags"] or {}) if t not in (tags or {})]
            if missing:
                actions.append(lambda: _experiments.experiment_add_tags(
                    client, target_id, *missing))
        else:
            if old.get("comment") != new["comment"]:
                actions.append(lambda: _experiments.experiment_set_comment(
                    client, target_id, new["comment"]))
            actions += _json_actions(
                old.get("tags"), new["tags"], False,
                lambda v: lambda: _experiments.experiment_set_tags(client, target_id, *(v or {})),
                lambda d: lambda: _experiments.experiment_add_tags(client, target_id, *d),
                lambda keys: lambda: _experiments.experiment_remove_tags(
                    client, target_id, keys),
            )
        source_created, target_created = timestamp(new["created"]), timestamp(created)
        if source_created is not None and (target_created is None
                                           or source_created < target_created):
            actions.append(lambda: client.query(
                "UPDATE experiments SET time_created = %s WHERE id = %s",
                [client.dialect.timestamp(source_created), target_id]))
        return actions

    # -- runs -----------------------------------------------------------------
    async def _map_runs(self, source_runs: list[tuple[Any, ...]]) -> None:
        """Every source run gets its target run (created with its mapping row, atomically)."""
        if self.tables:
            mapped = dict(await self.dst.query(
                "SELECT source_run_id, target_run_id FROM sync_runs WHERE source_key = %s",
                [self.key],
            ))
            present = await self._present_runs(sorted(set(mapped.values())))
            for source_id, target_id in mapped.items():
                if target_id in present:
                    self.runs[source_id] = target_id
                elif not self.dry_run:  # its target run was deleted: copied again below
                    await self.dst.query(
                        f"DELETE FROM sync_runs {_WHERE_RUN} AND target_run_id = %s",
                        [self.key, source_id, target_id],
                    )
        for row in source_runs:
            source_id, experiment_id = row[0], row[1]
            if source_id in self.runs:
                continue
            if self.dry_run:
                self.summary.runs_created += 1
                self.runs[source_id] = None
                continue
            self.runs[source_id] = await self._create_run(source_id,
                                                          self.experiments[experiment_id])

    async def _present_runs(self, ids: list[int]) -> set[int]:
        """Which of the target runs ``ids`` exist (a foreign key's cascade drops the mapping
        of a deleted one; on Citus ``sync_runs`` has none: see ``side_table_steps``)."""
        present: set[int] = set()
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start: start + _ID_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            present |= {int(r[0]) for r in await self.dst.query(
                f"SELECT id FROM runs WHERE id IN ({marks})", chunk)}
        return present

    async def _create_run(self, source_id: int, experiment_id: int | None) -> int:
        async def create() -> int:
            (created,) = await self.dst.query(
                "INSERT INTO runs (experiment_id) VALUES (%s) RETURNING id",
                [experiment_id], idempotent=False,
            )
            mapped = await self.dst.query(
                "INSERT INTO sync_runs (source_key, source_run_id, target_run_id) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING target_run_id",
                [self.key, source_id, created[0]],
            )
            if not mapped:
                raise _Superseded  # rolls the block back: no second run
            return int(created[0])

        try:
            target_id = await in_transaction(self.dst, create)
        except _Superseded:
            # Another sync of this source mapped the run first: use its run.
            rows = await self.dst.query(
                f"SELECT target_run_id FROM sync_runs {_WHERE_RUN}", [self.key, source_id]
            )
            return int(rows[0][0])
        self.created.add(source_id)
        self.summary.runs_created += 1
        return target_id

    async def _sync_run(self, source_id: int, columns: dict[str, str | None]) -> None:
        target_id = self.runs[source_id]
        if target_id is not None and source_id not in self.created and not self.dry_run:
            await self._apply_rewinds(source_id, target_id)
        try:
            rows = await self._sync_metrics(source_id, target_id, columns)
        except _Superseded:
            rows = 0
        self.summary.metric_rows += rows
        changed = await self._sync_attributes(source_id, target_id)
        if target_id is not None and source_id not in self.created:
            if changed or rows:
                self.summary.runs_updated += 1
            else:
                self.summary.runs_unchanged += 1

    async def _sync_attributes(self, source_id: int, target_id: int | None) -> bool:
        rows = await self.src.query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = %s", [source_id])
        if not rows:
            return False
        new = _run_attributes(rows[0])
        if self.dry_run:
            old = await self._synced(source_id) if target_id is not None else None
            return bool(_run_actions(self.dst, 0, old, new))
        assert target_id is not None

        async def apply() -> bool:
            locked = await self.dst.query(
                f"UPDATE sync_runs SET synced = synced {_WHERE_RUN} RETURNING synced",
                [self.key, source_id],
            )
            if not locked:
                return False  # the target run was deleted meanwhile
            old = json.loads(locked[0][0]) if locked[0][0] else None
            actions = _run_actions(self.dst, target_id, old, new)
            for action in actions:
                await action()
            if old != new:
                await self.dst.query(
                    f"UPDATE sync_runs SET synced = %s {_WHERE_RUN}",
                    [json.dumps(new), self.key, source_id],
                )
            return bool(actions)

        return await in_transaction(self.dst, apply)

    async def _apply_rewinds(self, source_id: int, target_id: int) -> None:
        """A run rewound on the source since its last sync (``run_rewind``: an entry in
        its extras' ``"rewinds"`` the last copied attributes lack) loses its rows past the
        earliest such step on the target too, in one transaction that also drops the
        run's digest: the metric sync then compares all its rows. The moved rows reach the
        target in the source's new run, linked ``rewound_from``. Repeating it is harmless."""
        rows = await self.src.query("SELECT extras FROM runs WHERE id = %s", [source_id])
        now = _rewinds(json_column(rows[0][0]) if rows else None)
        if not now:
            return
        before = _rewinds((await self._synced(source_id) or {}).get("extras"))
        steps = [entry["step"] for entry in now if entry not in before
                 and isinstance(entry.get("step"), int)]
        if not steps:
            return
        async def rewind() -> int:
            locked = await self.dst.query(
                "UPDATE sync_runs SET digest = NULL, digest_step = NULL, digest_progress = NULL, "
                f"copied_step = NULL, copied_progress = NULL {_WHERE_RUN} RETURNING target_run_id",
                [self.key, source_id],
            )
            if not locked:
                return 0
            gone = await count_metric_rows(self.dst, target_id, "step > %s", [min(steps)])
            await delete_metric_rows(self.dst, target_id, "step > %s", [min(steps)])
            return int(gone)

        self.summary.rows_rewound += await in_transaction(self.dst, rewind)

    async def _synced(self, source_id: int) -> dict[str, Any] | None:
        rows = await self.dst.query(
            f"SELECT synced FROM sync_runs {_WHERE_RUN}", [self.key, source_id]
        )
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    # -- metrics --------------------------------------------------------------
    async def _state(self, source_id: int) -> tuple[Any, ...] | None:
        if not self.tables:
            return None
        rows = await self.dst.query(
            "SELECT digest_step, digest_progress, digest, copied_step, copied_progress "
            f"FROM sync_runs {_WHERE_RUN}", [self.key, source_id],
        )
        return tuple(rows[0]) if rows else None

    async def _sync_metrics(
        self, source_id: int, target_id: int | None, columns: dict[str, str | None]
    ) -> int:
        """Copy the run's new and changed metric rows; return how many were (would be) written.

        A row is a key ``(step, progress)`` of either place (a column of ``metrics``, rows of
        ``metric_values``) with the values of both; the digest hashes these rows, so a long
        value changed in an old row is seen as a column's is."""
        end = await _last_key(self.src, source_id, bool(self.src_long))
        if end is None:
            return 0
        state = await self._state(source_id)
        old: Key | None = None
        if state is not None and state[2] is not None:
            old = (int(state[0]), float(state[1]))
        # The rows up to end, hashed up to end and up to old: the columns in one statement
        # (one snapshot), the long values after them (a value written between the two
        # reads is in the copy too, and makes the next digest differ: all compared).
        rows, long_names = await _read_rows(
            self.src, source_id, sorted(columns), None if self.src_long else [], _UP_TO,
            [end[0], end[0], end[1]])
        every = sorted({*columns, *long_names})  # the order of rows' values
        kinds = {**{n: self.src_long.get(n) for n in long_names}, **columns}
        used = [n for i, n in enumerate(every, 2) if any(r[i] is not None for r in rows)]
        end_digest: _Digest | None = None
        resume: Key | None = None
        stored = _Digest.parse(state[2]) if state is not None else None
        if state is not None and old is not None and stored is not None and not self.full and (
            state[3] is not None
        ):
            cut = bisect.bisect_right(rows, old, key=lambda r: (r[0], r[1]))
            before = _digest_of(rows[:cut] if cut < len(rows) else rows, every, stored.columns)
            if before is not None and before.hash == stored.hash:
                resume = min((int(state[3]), float(state[4])), old)
            if cut == len(rows) and stored.columns == used:
                end_digest = before  # the same rows, the same columns: hashed once
        if end_digest is None:
            end_digest = _digest_of(rows, every, used)
        assert end_digest is not None  # every column with a value is in used
        digest = end_digest.text()
        if resume == end:
            return 0
        if target_id is None:  # dry run, new run: every row would be copied
            return len(rows)
        target_columns = await self._target_columns()
        names = [n for n in every if n in used or n in target_columns]
        if not self.dry_run:
            await self._ensure_columns(names, kinds, set(used), target_columns)
            resume = await self._start(source_id, state, end, digest, resume)
        place = _Place(names, columns, set(long_names))
        return await self._copy_rows(source_id, target_id, place, kinds, end, digest, resume)

    async def _target_columns(self) -> dict[str, str | None]:
        """The target's metric columns (cached; only this sync's new columns change them
        in ways it cares about)."""
        if self.target_columns is None:
            self.target_columns = await queries.metric_columns(self.dst)
        return self.target_columns

    async def _ensure_columns(
        self, names: list[str], columns: dict[str, str | None], used: set[str],
        target_columns: dict[str, str | None],
    ) -> None:
        missing = [n for n in names if n not in target_columns and n in used]
        untyped = [n for n in missing if columns[n] is None]
        if untyped:
            raise SyncError(
                f"metric column(s) {', '.join(untyped)} of the source have a type sqltrack does "
                "not manage; add them to the target's metrics table first (a migration script)"
            )
        if missing:
            await self.dst.metrics.table.ensure_columns(layout.make(
                tuple(missing), tuple(columns[n] for n in missing), None, 0, 0, 0.0,
                (None,) * len(missing),
            ))
            self.target_columns = None

    async def _start(
        self, source_id: int, before: tuple[Any, ...] | None, end: Key, digest: str,
        resume: Key | None,
    ) -> Key | None:
        """Record the new digest (locking the run's state); where copying resumes."""
        async def record() -> Key | None:
            rows = await self.dst.query(
                f"UPDATE sync_runs SET digest = digest {_WHERE_RUN} RETURNING digest_step, "
                "digest_progress, digest, copied_step, copied_progress", [self.key, source_id],
            )
            if not rows:
                raise _Superseded  # the target run was deleted meanwhile
            # Another sync moved the state since it was read: compare all.
            start = resume if tuple(rows[0]) == before else None
            params = [end[0], end[1], digest, *(start or (None, None)), self.key, source_id]
            await self.dst.query(
                "UPDATE sync_runs SET digest_step = %s, digest_progress = %s, digest = %s, "
                f"copied_step = %s, copied_progress = %s {_WHERE_RUN}", params,
            )
            return start

        return await in_transaction(self.dst, record)

    async def _copy_rows(
        self, source_id: int, target_id: int, place: _Place, kinds: dict[str, str | None],
        end: Key, digest: str, after: Key | None,
    ) -> int:
        names = place.names
        written = 0
        while True:
            page, last, full = await self._page(source_id, place, end, after)
            if not page:
                if not full:
                    break
                after = last  # keys of long names read after the digest only: go on
                continue
            rows = {
                (int(r[0]), float(r[1])): [metric_value(v, kinds[n]) for v, n in zip(r[2:], names,
                                                                                     strict=True)]
                for r in page
            }
            first = (int(page[0][0]), float(page[0][1]))
            try:
                written += await self._write_page(source_id, target_id, names, rows, first,
                                                  last, end, digest)
            except _Superseded:
                break
            self.rows_done += len(page)
            self._progress(len(self.runs))
            after = last
            if not full:
                break
        return written

    async def _page(self, source_id: int, place: _Place, end: Key, after: Key | None
                    ) -> tuple[list[tuple[Any, ...]], Key, bool]:
        """The source rows of the next ``page_rows`` keys after ``after`` up to ``end`` (key
        order): ``(step, progress, *values of place.names)``, from both places; the page's
        last key; whether the page was full (more may follow)."""
        where, params = _UP_TO, [end[0], end[0], end[1]]
        if after is not None:
            where += f" AND {_AFTER}"
            params += [after[0], after[0], after[1]]
        if not place.long:
            page = await self.src.query(
                f"SELECT step, progress{_quote(self.src, place.columns)} FROM metrics "
                f"WHERE run_id = %s AND {where} ORDER BY step, progress LIMIT %s",
                [source_id, *params, self.page_rows])
            last = (int(page[-1][0]), float(page[-1][1])) if page else end
            return page, last, len(page) == self.page_rows
        name_filter, name_params = _name_filter(place.long)
        keys = await self.src.query(
            f"SELECT step, progress FROM (SELECT step, progress FROM metrics WHERE run_id = %s "
            f"AND {where} UNION SELECT step, progress FROM metric_values WHERE run_id = %s "
            f"AND {where}{name_filter}) AS k ORDER BY step, progress LIMIT %s",
            [source_id, *params, source_id, *params, *name_params, self.page_rows])
        if not keys:
            return [], end, False
        span = [keys[0][0], keys[0][0], keys[0][1], keys[-1][0], keys[-1][0], keys[-1][1]]
        rows, _ = await _read_rows(self.src, source_id, place.columns, place.long,
                                   f"{_FROM} AND {_UP_TO}", span, place.names)
        last = (int(keys[-1][0]), float(keys[-1][1]))
        return rows, last, len(keys) == self.page_rows

    async def _write_page(
        self, source_id: int, target_id: int, names: list[str], rows: dict[Key, list[Any]],
        first: Key, last: Key, end: Key, digest: str,
    ) -> int:
        """Upsert the rows of a page that differ on the target, and move the copied key.

        A name stored long on the target gets a row there only for a value (or to clear
        one the target has): a metric logged every tenth step adds no empty rows."""
        if self.dry_run:
            return len((await self._differing(target_id, names, rows, first, last))[0])
        async def write() -> int:
            moved = await self.dst.query(
                "UPDATE sync_runs SET copied_step = %s, copied_progress = %s "
                f"{_WHERE_RUN} AND digest = %s AND digest_step = %s AND digest_progress = %s "
                "RETURNING target_run_id",
                [last[0], last[1], self.key, source_id, digest, end[0], end[1]],
            )
            if not moved:
                raise _Superseded
            differing, have = await self._differing(target_id, names, rows, first, last)
            target_columns = await self._target_columns()
            prepare = self.dst.metrics.table.prepare
            prepared = []
            for key in differing:
                there = have.get(key, {})
                values = {n: v for n, v in zip(names, rows[key], strict=True)
                          if n in target_columns or v is not None or there.get(n) is not None}
                prepared.append(prepare(target_id, values, key[0], key[1], None))
            if prepared:
                # Rows of one name set together: one statement each (keys are unique here).
                prepared.sort(key=lambda row: layout.names(row))
                await self.dst.metrics.write_rows(prepared)
            return len(differing)

        return await in_transaction(self.dst, write)

    async def _differing(
        self, target_id: int, names: list[str], rows: dict[Key, list[Any]], first: Key,
        last: Key,
    ) -> tuple[list[Key], dict[Key, dict[str, Any]]]:
        """The keys of ``rows`` whose values differ on the target, and the target's values
        (wherever it stores each name) of the page's key range."""
        target_kinds = await self._target_columns()
        present = [n for n in names if n in target_kinds]
        long = [n for n in names if n not in target_kinds]
        span = [first[0], first[0], first[1], last[0], last[0], last[1]]
        found, _ = await _read_rows(self.dst, target_id, present, long, f"{_FROM} AND {_UP_TO}",
                                    span, [*present, *long])
        kinds = [*(target_kinds[n] for n in present), *(None for _ in long)]
        have = {
            (int(r[0]), float(r[1])): {n: metric_value(v, k) for v, n, k in zip(
                r[2:], [*present, *long], kinds, strict=True) if v is not None}
            for r in found
        }
        differing = []
        for key, values in rows.items():
            there = have.get(key)
            if there is None or not all(
                _same(value, there.get(name)) for name, value in zip(names, values, strict=True)
            ):
                differing.append(key)
        return differing, have

    # -- links ----------------------------------------------------------------
    async def _sync_links(self, runs_total: int) -> None:
        for table, mapping, add in (
            ("experiment_links", self.experiments, _experiments.experiment_add_link),
            ("run_links", self.runs, _runs.run_add_link),
        ):
            wanted = set()
            for from_id, kind, to_id in await self.src.query(
                f"SELECT from_id, kind, to_id FROM {table}"
            ):
                wanted.add((mapping.get(from_id), kind, mapping.get(to_id)))
            ids = sorted({i for f, _, t in wanted for i in (f, t) if i is not None})
            have = set()
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start: start + _ID_CHUNK]
                marks = ", ".join(["%s"] * len(chunk))
                have |= {tuple(r) for r in await self.dst.query(
                    f"SELECT from_id, kind, to_id FROM {table} WHERE from_id IN ({marks})", chunk
                )}
            for from_id, kind, to_id in sorted(wanted - have, key=str):
                self.summary.links_added += 1
                if not self.dry_run:
                    assert from_id is not None and to_id is not None  # every id is mapped
                    await in_transaction(self.dst, partial(add, self.dst, from_id, kind, to_id))
