"""The metric columns of one client's database, cached, and the check of every row.

``prepare`` turns one ``add_metrics`` call into a row (``sqltrack.metrics.layout``)
without I/O, raising before anything is written; ``ensure_columns`` creates the
columns a row still lacks. Names and kinds: ``sqltrack.metrics.names``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..checks import Auto, check_float, check_int, resolve_time
from ..client.connections import Connections
from ..engines.base import Connection, Engine
from ..errors import MetricTypeError
from . import layout
from .layout import MetricRow
from .names import FITS, KIND_OF_TYPE, check_metric_name, metric_kind

_MISSING = object()
_UTC = timezone.utc
#: names, value types, kinds of a call that passed every check (``MetricTable._checked``).
_Checked = tuple[tuple[str, ...], tuple[type, ...], tuple["str | None", ...]]


class MetricTable:
    """The metric columns of one database (cached) and the checks of each row."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        self._columns: dict[str, str | None] | None = None
        #: (names, value types, kinds) of the last call of bool, int and float values that
        #: passed every check: a call with the same names and types needs no check again
        #: (see ``prepare``); its row shares these names and kinds tuples.
        self._checked: _Checked | None = None

    def forget_columns(self) -> None:
        """Drop the column cache (migrations changed the table, or a block rolled back)."""
        self._columns = None
        self._checked = None

    def knows(self, names: Any) -> bool:
        """Whether every name has a known column (False while nothing is cached)."""
        columns = self._columns
        return columns is not None and all(name in columns for name in names)

    async def columns(self) -> dict[str, str | None]:
        """The metric columns, read again: name -> kind (None: a type not checked)."""
        self._checked = None
        self._columns = columns = await self._connections.run(_metric_columns, retry=True)
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
        the column cache deciding whether a name still needs validation.
        """
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict of name -> value, not {metrics!r}")
        if type(run_id) is not int:
            run_id = check_int(run_id, "run_id")
        if type(step) is not int:
            step = check_int(step, "step")
        if type(progress) is not float or progress != progress:
            progress = check_float(progress, "progress")
        if type(updated) is str and updated == "auto":
            updated = datetime.now(_UTC)
        else:
            updated = resolve_time(updated, "updated")
        # Fast path (a training loop logs the same names with the same types every
        # step): the names and the exact types of their values, found by C-level
        # loops, equal those of a call that passed every check against the same
        # columns. The row shares that call's names and kinds tuples (the batch write
        # groups rows by identity).
        names = tuple(metrics)
        values_now = tuple(metrics.values())
        types_now = tuple(map(type, values_now))
        checked = self._checked
        if checked is not None and checked[1] == types_now and checked[0] == names:
            return (checked[0], checked[2], updated, run_id, step, progress) + values_now
        kinds_now = tuple(map(KIND_OF_TYPE.get, types_now))
        columns = self._columns or {}
        values = []
        kinds = []
        for name, value in metrics.items():
            kind = KIND_OF_TYPE.get(type(value))
            if kind is None or kind == "str":
                value, kind = metric_kind(name, value)
            values.append(value)
            kinds.append(kind)
            column_kind = columns.get(name, _MISSING)
            if column_kind is _MISSING:
                check_metric_name(name)
            elif kind is not None and column_kind is not None and column_kind not in FITS[kind]:
                check_fit(columns, (name,), (value,), (kind,))
        kinds_row = tuple(kinds)
        plain = None not in kinds_now and "str" not in kinds_now  # bool, int, float only
        if plain and kinds_row == kinds_now and self._columns is not None:
            self._checked = (names, types_now, kinds_row)  # the same names and types pass again
        return layout.make(names, kinds_row, updated, run_id, step, progress, values)

    async def ensure_columns(self, row: MetricRow) -> None:
        """Create the missing metric columns of a row; check its values fit the columns."""
        names = layout.names(row)
        if self.knows(names):
            return
        kinds = layout.kinds(row)
        values = layout.values(row)
        columns = await self.columns()
        check_fit(columns, names, values, kinds)
        missing = [(n, k) for n, k in zip(names, kinds, strict=True) if n not in columns]
        if not missing:
            return
        for name, kind in missing:
            if kind is None:
                raise ValueError(
                    f"metric {name!r} has no column yet and its value is None: "
                    "log a first real value so its type is known"
                )
        for name, kind in missing:
            await self._connections.run(_add_metric_column, name, kind, retry=True)
        columns = await self.columns()
        for name, _ in missing:
            if name not in columns:  # SQLite: column names are case-insensitive
                clash = [c for c in columns if c.lower() == name.lower()]
                raise ValueError(
                    f"metric name {name!r} clashes with the existing column {clash!r} "
                    "(names differing only in case are one column here); use the same spelling"
                )
        check_fit(columns, names, values, kinds)


def check_fit(
    columns: Mapping[str, str | None],
    names: Sequence[str],
    values: Sequence[Any],
    kinds: Sequence[str | None],
) -> None:
    """MetricTypeError for the first value whose kind its existing column does not take."""
    for name, value, kind in zip(names, values, kinds, strict=True):
        column_kind = columns.get(name)
        if kind is None or column_kind is None:
            continue
        if column_kind not in FITS[kind]:
            raise MetricTypeError(
                f"metric {name!r}: value {value!r} ({kind}) does not fit its existing "
                f"{column_kind} column; log a {column_kind} or use another metric name"
            )


async def _metric_columns(engine: Engine, conn: Connection) -> dict[str, str | None]:
    return await engine.metric_columns(conn)


async def _add_metric_column(engine: Engine, conn: Connection, name: str, kind: str) -> None:
    await engine.add_metric_column(conn, name, kind)  # IF NOT EXISTS: idempotent
