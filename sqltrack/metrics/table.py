"""Where each metric of one client's database is stored (cached), and the check of every row.

A metric is a column of ``metrics`` (the names that have one, up to the column budget
``metric_columns``) or lives in the long table ``metric_values`` (names past the
budget, and names whose column could not be created at once because a reader held
the table: those are registered in ``metric_names`` for good). Either way its first
value decides its kind, and a value of another kind is a ``MetricTypeError``.

``prepare`` turns one ``add_metrics`` call into a row (``sqltrack.metrics.layout``)
without I/O, raising before anything is written; ``ensure_columns`` gives every name
of a row its place (creating columns, registering long names); ``placement`` tells
the engine where a row's names go. Names and kinds: ``sqltrack.metrics.names``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..checks import INT64_MAX, INT64_MIN, Auto, check_float, check_int, resolve_time
from ..client.connections import Connections
from ..engines.base import Connection, Engine
from ..errors import MetricTypeError
from . import layout
from .layout import MetricRow, Placement
from .names import FITS, KIND_OF_TYPE, check_metric_name, metric_kind

_MISSING = object()
_UTC = timezone.utc
#: names, value types, kinds of a call that passed every check, and the positions of its
#: int values (their range is checked on every call) and of its float values (a -0.0 is
#: stored as 0.0) (``MetricTable._checked``).
_Checked = tuple[tuple[str, ...], tuple[type, ...], tuple["str | None", ...], tuple[int, ...],
                 tuple[int, ...]]
#: Seconds a new column waits for the table's lock (PostgreSQL) before its name goes to
#: the long table instead: behind an open reader, every writer queues behind the ALTER.
COLUMN_LOCK_TIMEOUT = 0.2
#: After a column lock was not granted, seconds during which new names go straight to
#: the long table (the reader is likely still there; no writer stalls again meanwhile).
COLUMN_RETRY_AFTER = 30.0
#: Names per statement of the registry's look-ups and inserts.
_CHUNK = 500
#: Known names tuples remembered (``MetricTable.knows``); past this many, it starts over.
_KNOWN_NAME_SETS = 64


class MetricTable:
    """Where each metric is stored (cached: columns and long names) and the checks of each row."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        #: The metric columns of ``metrics``: name -> kind (None: a type not checked).
        self._columns: dict[str, str | None] | None = None
        #: The long-stored names met so far (registered in ``metric_names``): name -> kind.
        self._long: dict[str, str] = {}
        #: Every known name's kind, wherever it is stored (the checks read this one).
        self._kinds: dict[str, str | None] | None = None
        self._placements: dict[tuple[str, ...], Placement | None] = {}
        #: No column is tried before this time (``time.monotonic``): see COLUMN_RETRY_AFTER.
        self._no_columns_until = 0.0
        #: (names, value types, kinds) of the last call of bool, int and float values that
        #: passed every check: a call with the same names and types needs no check again
        #: (see ``prepare``); its row shares these names and kinds tuples.
        self._checked: _Checked | None = None
        #: Names tuples found known (a name's place is never forgotten but by
        #: ``forget_columns``): a training loop's next call is known by one set look-up,
        #: not by a look-up per name (10,000 names: about 0.2 ms a call).
        self._known_names: set[tuple[str, ...]] = set()
        #: The last names tuple found known (the checks' fast path hands out the same
        #: tuple every call of a training loop: known by identity, no hashing).
        self._last_known: tuple[str, ...] | None = None

    def forget_columns(self) -> None:
        """Drop the cache (migrations changed the table, or a block rolled back)."""
        self._columns = None
        self._kinds = None
        self._long = {}
        self._placements = {}
        self._checked = None
        self._known_names = set()
        self._last_known = None

    def knows(self, names: tuple[str, ...]) -> bool:
        """Whether every name has a known place (False while nothing is cached)."""
        if names is self._last_known:
            return True
        known = self._known_names
        if names in known:
            self._last_known = names
            return True
        kinds = self._kinds
        if kinds is None or not all(map(kinds.__contains__, names)):
            return False
        if len(known) >= _KNOWN_NAME_SETS:
            known.clear()
        known.add(names)
        self._last_known = names
        return True

    def placement(self, names: tuple[str, ...]) -> Placement | None:
        """Where the metrics of ``names`` (all known) are stored; None: all are columns."""
        if not self._long:
            return None
        try:
            return self._placements[names]
        except KeyError:
            where = self._placements[names] = layout.placement(names, self._long)
            return where

    def known_columns(self) -> dict[str, str | None] | None:
        """The metric columns as last read, name -> kind (None: not read yet). Columns are
        never dropped by sqltrack, so a name found here is a column; one not found may be
        new since: read ``columns()`` again."""
        return self._columns

    def long_names(self) -> dict[str, str]:
        """The long-stored names this table met so far, name -> kind."""
        return dict(self._long)

    async def columns(self) -> dict[str, str | None]:
        """The metric columns, read again: name -> kind (None: a type not checked)."""
        self._checked = None
        self._columns = columns = await self._connections.run(_metric_columns, retry=True)
        self._kinds = {**self._long, **columns}
        return columns

    def prepare(
        self,
        run_id: int,
        metrics: Mapping[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> MetricRow:
        """Check one add_metrics call without I/O and return its row; raise before
        anything is written.

        This is the hot path of every add_metrics: one pass over the values, with
        the cache of known names deciding whether a name still needs validation.
        """
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict of name -> value, not {metrics!r}")
        if type(run_id) is not int or not INT64_MIN <= run_id <= INT64_MAX:
            run_id = check_int(run_id, "run_id")
        if type(step) is not int or not INT64_MIN <= step <= INT64_MAX:
            step = check_int(step, "step")
        if type(progress) is not float or progress != progress:
            progress = check_float(progress, "progress")
        elif progress == 0.0:
            progress = 0.0  # no -0.0 (see metric_kind)
        if type(updated) is str and updated == "auto":
            updated = datetime.now(_UTC)
        else:
            updated = resolve_time(updated, "updated")
        # Fast path (a training loop logs the same names with the same types every
        # step): the names and the exact types of their values, found by C-level
        # loops, equal those of a call that passed every check against the same
        # columns. The row shares that call's names and kinds tuples (the batch write
        # groups rows by identity). Only the range of ints and the sign of a zero float
        # depend on the value: checked here on every call.
        names = tuple(metrics)
        values_now = tuple(metrics.values())
        types_now = tuple(map(type, values_now))
        checked = self._checked
        if checked is not None and checked[1] == types_now and checked[0] == names:
            for index in checked[3]:
                if not INT64_MIN <= values_now[index] <= INT64_MAX:
                    metric_kind(names[index], values_now[index])  # raises, naming it
            if not all(values_now):  # a zero (a C-level loop about twice as fast as
                # ``0.0 in``: a truth test per value, no comparison): maybe a -0.0
                values_now = _positive_zeros(values_now, checked[4])
            return (checked[0], checked[2], updated, run_id, step, progress) + values_now
        kinds_now = tuple(map(KIND_OF_TYPE.get, types_now))
        known = self._kinds or {}
        values = []
        kinds = []
        for name, value in metrics.items():
            kind = KIND_OF_TYPE.get(type(value))
            if kind != "bool":
                value, kind = metric_kind(name, value)
            values.append(value)
            kinds.append(kind)
            known_kind = known.get(name, _MISSING)
            if known_kind is _MISSING:
                check_metric_name(name)
            elif kind is not None and known_kind is not None and known_kind not in FITS[kind]:
                check_fit(known, (name,), (value,), (kind,), self._long)
        kinds_row = tuple(kinds)
        plain = None not in kinds_now and "str" not in kinds_now  # bool, int, float only
        if plain and kinds_row == kinds_now and self._kinds is not None:
            ints = tuple(i for i, t in enumerate(types_now) if t is int)
            floats = tuple(i for i, t in enumerate(types_now) if t is float)
            self._checked = (names, types_now, kinds_row, ints, floats)  # pass again
        return layout.make(names, kinds_row, updated, run_id, step, progress, values)

    async def ensure_columns(self, row: MetricRow) -> None:
        """Give every metric of a row its place: a new column while the budget lasts and
        the table's lock comes at once, else the long table; check its values fit."""
        names = layout.names(row)
        if self.knows(names):
            return
        kinds = layout.kinds(row)
        values = layout.values(row)
        columns = await self.columns()
        unknown = [n for n in names if n not in columns and n not in self._long]
        if unknown:
            await self._learn_long(unknown)
        check_fit(self._known(), names, values, kinds, self._long)
        missing = [(n, k) for n, k in zip(names, kinds, strict=True)
                   if n not in columns and n not in self._long]
        if not missing:
            return
        for name, kind in missing:
            if kind is None:
                raise ValueError(
                    f"metric {name!r} has no column yet and its value is None: "
                    "log a first real value so its type is known"
                )
        if self._connections.engine.dialect.case_insensitive_names:
            _check_case_clash(columns, [n for n, _ in missing])
        wanted: list[tuple[str, str]] = [(n, k) for n, k in missing if k is not None]
        room = self._room(columns)
        new_columns = wanted[:room] if time.monotonic() >= self._no_columns_until else []
        if new_columns:
            granted = await self._connections.run(
                _add_metric_columns, new_columns, COLUMN_LOCK_TIMEOUT, retry=True)
            if not granted:
                self._no_columns_until = time.monotonic() + COLUMN_RETRY_AFTER
            columns = await self.columns()
            if granted:
                for name, _ in new_columns:
                    if name not in columns:  # SQLite: column names are case-insensitive
                        clash = [c for c in columns if c.lower() == name.lower()]
                        if clash:
                            raise ValueError(
                                f"metric name {name!r} clashes with the existing column "
                                f"{clash!r} (names differing only in case are one column "
                                "here); use the same spelling"
                            )
        to_long = [(n, k) for n, k in wanted if n not in columns]
        if to_long:
            await self._register_long(to_long)
        check_fit(self._known(), names, values, kinds, self._long)

    def _known(self) -> dict[str, str | None]:
        self._kinds = {**self._long, **(self._columns or {})}
        return self._kinds

    def _room(self, columns: Mapping[str, Any]) -> int:
        """How many more metric columns ``metrics`` may get (the budget, and the engine's
        hard limit with dropped columns and a margin)."""
        engine = self._connections.engine
        budget = self._connections.settings.metric_columns - len(columns)
        hard = engine.dialect.max_columns - 100 - 3 - len(columns) - engine.dropped_columns
        return max(0, min(budget, hard))

    async def _learn_long(self, names: Sequence[str]) -> None:
        """The kinds of those of ``names`` that are registered long-stored names."""
        found = await self._connections.run(_registered, list(names), retry=True)
        self._long.update(found)
        self._placements = {}

    async def _register_long(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Register long-stored names (insert if absent, then read back: another process
        may have registered a name first, its kind wins)."""
        found = await self._connections.run(_register, list(pairs), retry=True)
        self._long.update(found)
        self._placements = {}
        self._checked = None


def _positive_zeros(values: tuple[Any, ...], floats: tuple[int, ...]) -> tuple[Any, ...]:
    """``values`` with each -0.0 at the positions ``floats`` made 0.0 (a new tuple only when
    there is one)."""
    for index in floats:
        if values[index] == 0.0 and math.copysign(1.0, values[index]) < 0:
            return tuple(v + 0.0 if i in floats else v for i, v in enumerate(values))
    return values


def _check_case_clash(columns: Mapping[str, Any], new: Sequence[str]) -> None:
    """ValueError, before any DDL, for a new name that differs only in case from a column
    or from another new name: the engine's columns would be one (SQLite)."""
    spelled = {c.lower(): c for c in columns}
    for name in new:
        other = spelled.setdefault(name.lower(), name)
        if other != name:
            raise ValueError(
                f"metric name {name!r} clashes with {other!r} (names differing only in case "
                "are one column here); use the same spelling"
            )


def check_fit(
    columns: Mapping[str, str | None],
    names: Sequence[str],
    values: Sequence[Any],
    kinds: Sequence[str | None],
    long: Mapping[str, str] | None = None,
) -> None:
    """MetricTypeError for the first value whose kind its metric does not take (the kind
    of its column, or of its first value for a long-stored metric: ``long``)."""
    for name, value, kind in zip(names, values, kinds, strict=True):
        column_kind = columns.get(name)
        if kind is None or column_kind is None:
            continue
        if column_kind not in FITS[kind]:
            where = ("values (stored in metric_values)" if long and name in long
                     else "column")
            raise MetricTypeError(
                f"metric {name!r}: value {value!r} ({kind}) does not fit its existing "
                f"{column_kind} {where}; log a {column_kind} or use another metric name"
            )


async def _metric_columns(engine: Engine, conn: Connection) -> dict[str, str | None]:
    return await engine.metric_columns(conn)


async def _add_metric_columns(
    engine: Engine, conn: Connection, columns: list[tuple[str, str]], lock_timeout: float
) -> bool:
    return await engine.add_metric_columns(conn, columns, lock_timeout)  # idempotent


async def _registered(engine: Engine, conn: Connection, names: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(names), _CHUNK):
        chunk = names[start:start + _CHUNK]
        marks = ", ".join(["%s"] * len(chunk))
        query = engine.dialect.sql(f"SELECT name, kind FROM metric_names WHERE name IN ({marks})")
        found.update((name, kind) for name, kind in await engine.fetch(conn, query, chunk))
    return found


async def _register(
    engine: Engine, conn: Connection, pairs: list[tuple[str, str]]
) -> dict[str, str]:
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start:start + _CHUNK]
        marks = ", ".join(["(%s, %s)"] * len(chunk))
        query = engine.dialect.sql(
            f"INSERT INTO metric_names (name, kind) VALUES {marks} ON CONFLICT DO NOTHING")
        await engine.fetch(conn, query, [value for pair in chunk for value in pair])
    return await _registered(engine, conn, [name for name, _ in pairs])
