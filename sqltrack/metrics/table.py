"""Metric names, column types and the metric write (the library's hot path).

Metrics are columns of the ``metrics`` table. A name with no column yet gets
one, typed from its first value: bool, int, float, str or datetime. Names become
SQL identifiers, so each is checked before any SQL is built: letters, digits and
underscores, not starting with a digit, at most 63 characters, and not one of
``run_id``, ``step``, ``progress``.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from ..checks import Auto, check_float, check_int, check_text, resolve_time
from ..errors import MetricTypeError

MAX_NAME_LENGTH = 63
RESERVED_NAMES = frozenset({"run_id", "step", "progress"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MISSING = object()
_UTC = timezone.utc
#: A PreparedRow from one tuple of its fields, without NamedTuple's Python ``__new__``.
_FIRST = itemgetter(0)
_UPDATED = itemgetter(2)
#: names, value types, kinds of a call that passed every check (``MetricTable._checked``).
_Checked = tuple[tuple[str, ...], tuple[type, ...], tuple["str | None", ...]]
_KIND_OF_TYPE = {float: "float", int: "int", bool: "bool", str: "str"}
#: Which existing column kinds accept a value of a given kind.
_FITS = {
    "bool": ("bool",),
    "int": ("int", "float"),
    "float": ("float",),
    "str": ("str",),
    "datetime": ("datetime",),
}


def check_metric_name(name: Any) -> str:
    """Return ``name`` if it is a safe metric column name, else raise ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"metric name {name!r} is not a str")
    if not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"metric name {name!r} is not a plain identifier: use letters, digits and "
            f"underscores, not starting with a digit, at most {MAX_NAME_LENGTH} characters"
        )
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"metric name {name!r} is reserved (run_id, step, progress)")
    return name


def metric_kind(name: str, value: Any) -> tuple[Any, str | None]:
    """The value to store and its kind (None for a NULL value)."""
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is not None:
        if kind == "str":
            check_text(value, f"value of metric {name!r}")
        return value, kind
    if value is None:
        return None, None
    if isinstance(value, datetime):
        resolve_time(value, f"value of metric {name!r}")
        return value, "datetime"
    if isinstance(value, str):
        return check_text(str(value), f"value of metric {name!r}"), "str"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value), "bool"
    if isinstance(value, numbers.Integral):
        return int(value), "int"
    if isinstance(value, numbers.Real):
        return float(value), "float"
    item = getattr(value, "item", None)  # one-element numpy arrays and torch tensors
    if callable(item):
        try:
            scalar = item()
        except Exception:  # noqa: BLE001 - torch: RuntimeError, numpy: ValueError
            raise MetricTypeError(
                f"metric {name!r}: a metric value is one scalar, not {_shape_text(value)} "
                f"of type {type(value).__name__}; log one name per element, or reduce it "
                "(.mean(), .sum())"
            ) from None
        if scalar is not value:
            return metric_kind(name, scalar)
    raise MetricTypeError(
        f"metric {name!r}: cannot store {_shape_text(value)} of type {type(value).__name__}; "
        "use one bool, int, float, str or datetime"
    )


def _shape_text(value: Any) -> str:
    """A short description of a value that is not a scalar (no import of numpy or torch)."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        try:
            return f"a value of shape {tuple(shape)}"
        except TypeError:
            pass
    if isinstance(value, (list, tuple, set, dict)):
        return f"a {type(value).__name__} of {len(value)} elements"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class PreparedRow(NamedTuple):
    """One checked add_metrics call, ready to be written."""

    names: tuple[str, ...]
    values: tuple[Any, ...]
    kinds: tuple[str | None, ...]
    step: int
    progress: float
    updated: datetime | None


#: A checked row as buffers and batch writes hold it: one flat plain tuple
#: ``(names, kinds, updated, step, progress, *values)`` (``engines.base.BatchRow``;
#: see ``MetricTable.prepare_fields`` for why flat and plain).
RowFields = tuple[Any, ...]


def as_row(fields: RowFields) -> PreparedRow:
    """The PreparedRow of a flat row."""
    return PreparedRow(fields[0], fields[5:], fields[1], fields[3], fields[4], fields[2])


def as_rows(rows: Iterable[RowFields]) -> list[PreparedRow]:
    """The PreparedRows of flat rows."""
    return list(map(as_row, rows))


def flat_row(row: PreparedRow) -> RowFields:
    """The flat row of a PreparedRow."""
    return (row.names, row.kinds, row.updated, row.step, row.progress, *row.values)


class MetricStore(Protocol):
    """Where metric rows go: the statements MetricTable needs (``AsyncClient`` has them)."""

    async def metric_columns(self) -> dict[str, str | None]: ...

    async def add_metric_column(self, name: str, kind: str) -> None: ...

    async def write_metrics(
        self,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> None: ...

    async def write_metrics_batch(
        self,
        names: tuple[str, ...],
        run_id: int,
        rows: Sequence[RowFields],
        updated: datetime | None,
    ) -> None: ...

    def write_metrics_blocking(
        self,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> bool: ...


class MetricTable:
    """The metric columns of one client's database, cached, and the metric write."""

    def __init__(self, client: MetricStore) -> None:
        self.client = client
        self._columns: dict[str, str | None] | None = None
        #: (names, value types, kinds) of the last call of bool, int and float values that
        #: passed every check: a call with the same names and types needs no check again
        #: (see ``prepare``); its row shares these names and kinds tuples.
        self._checked: _Checked | None = None

    def forget_columns(self) -> None:
        """Drop the column cache (after migrations changed the table)."""
        self._columns = None
        self._checked = None

    async def _refresh(self) -> dict[str, str | None]:
        self._checked = None
        self._columns = columns = await self.client.metric_columns()
        return columns

    def prepare(
        self,
        metrics: Mapping[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> PreparedRow:
        """Check one add_metrics call without I/O; raise before anything is written."""
        return as_row(self.prepare_fields(metrics, step, progress, updated))

    def prepare_fields(
        self,
        metrics: Mapping[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> RowFields:
        """``prepare``, the row flat: ``(names, kinds, updated, step, progress, *values)``.

        This is the hot path of every add_metrics: one pass over the values, with
        the column cache deciding whether a name still needs validation. A flat
        plain tuple of untracked objects (no values tuple inside, no NamedTuple)
        leaves the garbage collector's lists at its first collection, so rows
        waiting in a buffer are neither traversed again nor promoted to the old
        generation, whose full collections would stall the producer for many ms.
        """
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict of name -> value, not {metrics!r}")
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
            return (checked[0], checked[2], updated, step, progress) + values_now
        kinds_now = tuple(map(_KIND_OF_TYPE.get, types_now))
        columns = self._columns or {}
        values = []
        kinds = []
        for name, value in metrics.items():
            kind = _KIND_OF_TYPE.get(type(value))
            if kind is None or kind == "str":
                value, kind = metric_kind(name, value)
            values.append(value)
            kinds.append(kind)
            column_kind = columns.get(name, _MISSING)
            if column_kind is _MISSING:
                check_metric_name(name)
            elif kind is not None and column_kind is not None and column_kind not in _FITS[kind]:
                self._check_fit(columns, (name,), (value,), (kind,))
        kinds_row = tuple(kinds)
        plain = None not in kinds_now and "str" not in kinds_now  # bool, int, float only
        if plain and kinds_row == kinds_now and self._columns is not None:
            self._checked = (names, types_now, kinds_row)  # the same names and types pass again
        return (names, kinds_row, updated, step, progress, *values)

    async def ensure_columns(self, row: PreparedRow) -> None:
        """Create the missing metric columns of a row; check its values fit the columns."""
        columns = self._columns
        if columns is not None and all(name in columns for name in row.names):
            return
        columns = await self._refresh()
        self._check_fit(columns, row.names, row.values, row.kinds)
        missing = [(n, k) for n, k in zip(row.names, row.kinds, strict=True) if n not in columns]
        if not missing:
            return
        new: list[tuple[str, str]] = []
        for name, kind in missing:
            if kind is None:
                raise ValueError(
                    f"metric {name!r} has no column yet and its value is None: "
                    "log a first real value so its type is known"
                )
            new.append((name, kind))
        for name, kind in new:
            await self.client.add_metric_column(name, kind)
        columns = await self._refresh()
        for name, _ in missing:
            if name not in columns:  # SQLite: column names are case-insensitive
                clash = [c for c in columns if c.lower() == name.lower()]
                raise ValueError(
                    f"metric name {name!r} clashes with the existing column {clash!r} "
                    "(names differing only in case are one column here); use the same spelling"
                )
        self._check_fit(columns, row.names, row.values, row.kinds)

    async def write(
        self,
        run_id: int,
        metrics: Mapping[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> None:
        """Upsert the ``(run_id, step, progress)`` row with these metric values."""
        run_id = check_int(run_id, "run_id")
        row = self.prepare(metrics, step, progress, updated)
        await self.ensure_columns(row)
        await self.client.write_metrics(
            row.names, run_id, row.step, row.progress, row.values, row.updated
        )

    def write_blocking(
        self,
        run_id: int,
        metrics: Mapping[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> bool:
        """``write`` in the calling thread, without the event loop, when it can be done there.

        False, having written nothing, when a metric has no column yet (``write``
        creates it) or the store cannot write from this thread (see
        ``Statements.write_metrics_blocking``). Bad names or values raise here.
        """
        columns = self._columns
        if columns is None or any(name not in columns for name in metrics):
            return False
        run_id = check_int(run_id, "run_id")
        row = self.prepare(metrics, step, progress, updated)
        return self.client.write_metrics_blocking(
            row.names, run_id, row.step, row.progress, row.values, row.updated
        )

    async def write_batch(self, run_id: int, rows: Sequence[RowFields]) -> None:
        """Write flat rows (``prepare_fields``) in order: one statement (or hop) per run
        of equal names.

        Within such a group the last row of a ``(step, progress)`` wins, as it
        would with one upsert per row; across groups, upserts merge columns. The
        rows go to the engine as they are: it builds their parameters once.
        """
        if not rows:
            return
        groups: list[Sequence[RowFields]]
        if list(map(_FIRST, rows)).count(rows[0][0]) == len(rows):
            # The usual batch (one name set; the fast path of ``prepare_fields`` even
            # shares the names tuple, so ``count`` compares by identity): no loop per row.
            await self.ensure_columns(as_row(rows[0]))
            groups = [rows]
        else:
            checked: set[tuple[str, ...]] = set()
            groups = []
            group: list[RowFields] = []
            names: tuple[str, ...] | None = None
            for row in rows:
                if row[0] != names:
                    names = row[0]
                    group = []
                    groups.append(group)
                    if names not in checked:
                        checked.add(names)
                        await self.ensure_columns(as_row(row))
                group.append(row)
        # Datetimes are never false: filter(None) drops the rows without a touch.
        updated = max(filter(None, map(_UPDATED, rows)), default=None)
        # Each group is one idempotent statement (or hop), so each may be retried
        # after a lost connection; applied in order, they give the same end state.
        for index, group_rows in enumerate(groups):
            touch = updated if index == len(groups) - 1 else None
            await self.client.write_metrics_batch(group_rows[0][0], run_id, group_rows, touch)

    @staticmethod
    def _check_fit(
        columns: Mapping[str, str | None],
        names: Sequence[str],
        values: Sequence[Any],
        kinds: Sequence[str | None],
    ) -> None:
        for name, value, kind in zip(names, values, kinds, strict=True):
            column_kind = columns.get(name)
            if kind is None or column_kind is None:
                continue
            if column_kind not in _FITS[kind]:
                raise MetricTypeError(
                    f"metric {name!r}: value {value!r} ({kind}) does not fit its existing "
                    f"{column_kind} column; log a {column_kind} or use another metric name"
                )
