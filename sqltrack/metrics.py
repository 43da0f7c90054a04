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
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import MetricTypeError
from .values import Auto, check_float, check_int, check_text, resolve_time

if TYPE_CHECKING:
    from .client import AsyncClient

MAX_NAME_LENGTH = 63
RESERVED_NAMES = frozenset({"run_id", "step", "progress"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
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
    item = getattr(value, "item", None)  # 0-d numpy arrays and torch tensors
    if callable(item):
        try:
            return metric_kind(name, item())
        except (TypeError, ValueError):
            pass
    raise MetricTypeError(
        f"metric {name!r}: cannot store {value!r} of type {type(value).__name__}; "
        "use bool, int, float, str or datetime"
    )


class MetricTable:
    """The metric columns of one client's database, cached, and the metric write."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._columns: dict[str, str | None] | None = None

    def forget_columns(self) -> None:
        """Drop the column cache (after migrations changed the table)."""
        self._columns = None

    async def _refresh(self) -> dict[str, str | None]:
        self._columns = await self.client._run("metric_columns")
        return self._columns

    async def write(
        self,
        run_id: int,
        metrics: Mapping[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> None:
        """Upsert the ``(run_id, step, progress)`` row with these metric values."""
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict of name -> value, not {metrics!r}")
        run_id = check_int(run_id, "run_id")
        step = check_int(step, "step")
        progress = check_float(progress, "progress")
        updated = resolve_time(updated, "updated")
        names = tuple(metrics)
        values = []
        kinds = []
        for name, value in metrics.items():
            value, kind = metric_kind(name, value)
            values.append(value)
            kinds.append(kind)

        columns = self._columns
        if columns is None or any(name not in columns for name in names):
            for name in names:
                check_metric_name(name)
            columns = await self._refresh()
        self._check_fit(columns, names, values, kinds)
        missing = [(n, k) for n, k in zip(names, kinds, strict=True) if n not in columns]
        if missing:
            for name, kind in missing:
                if kind is None:
                    raise ValueError(
                        f"metric {name!r} has no column yet and its value is None: "
                        "log a first real value so its type is known"
                    )
            for name, kind in missing:
                await self.client._run("add_metric_column", name, kind)
            columns = await self._refresh()
            self._check_fit(columns, names, values, kinds)

        await self.client._run(
            "write_metrics", names, run_id, step, progress, values, updated
        )

    @staticmethod
    def _check_fit(columns, names, values, kinds) -> None:
        for name, value, kind in zip(names, values, kinds, strict=True):
            column_kind = columns.get(name)
            if kind is None or column_kind is None:
                continue
            if column_kind not in _FITS[kind]:
                raise MetricTypeError(
                    f"metric {name!r}: value {value!r} ({kind}) does not fit its existing "
                    f"{column_kind} column; log a {column_kind} or use another metric name"
                )
