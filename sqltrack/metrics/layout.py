"""The metric row layout: the one shape every metric write uses, from the check to the engine.

A row is one checked ``add_metrics`` call, as a flat plain tuple::

    (names, kinds, updated, run_id, step, progress, *values)

``names`` and ``kinds`` are tuples (shared by every row of a training loop that
logs the same names: the checks' fast path hands out the same objects), ``updated``
the ``time_updated`` to set (or None). ``params(row)`` is ``(run_id, step,
progress, *values)``: the statement's parameters, with no copy into another shape.

Flat and plain on purpose: a tuple of untracked objects (no values tuple inside, no
NamedTuple) leaves the garbage collector's lists at its first collection, so rows
waiting in a buffer are neither traversed again nor promoted to the old generation,
whose full collections would stall a producer for many ms.

Where each metric is stored (a column of ``metrics``, or a row of the long table
``metric_values``) is a ``Placement`` of the row's names, computed once per names
tuple by the metric table; ``column_row`` and ``long_values`` split a row by it.

Only this module knows the layout: everyone else (writer, buffer, combiner, spool,
engines) uses these accessors. A leaf: it imports nothing of sqltrack, so the
engines may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

#: One checked metric row (see the module docstring).
MetricRow = tuple[Any, ...]
#: ``(run_id, time_updated)``: a run whose ``time_updated`` a write sets.
Touch = tuple[int, datetime]

names = itemgetter(0)
"""The row's metric names (a tuple)."""
kinds = itemgetter(1)
"""The row's value kinds (``"float"``, ``"int"``, ...; None for a None value)."""
updated = itemgetter(2)
"""The ``time_updated`` the row sets, or None."""
run_id = itemgetter(3)
"""The row's run."""
step = itemgetter(4)
"""The row's step."""
progress = itemgetter(5)
"""The row's progress."""
key = itemgetter(slice(3, 6))
"""``(run_id, step, progress)``: the row's primary key in ``metrics``."""
params = itemgetter(slice(3, None))
"""``(run_id, step, progress, *values)``: the parameters of the row's upsert."""
values = itemgetter(slice(6, None))
"""The row's metric values, in the order of ``names``."""


def make(
    names: tuple[str, ...],
    kinds: tuple[str | None, ...],
    updated: datetime | None,
    run_id: int,
    step: int,
    progress: float,
    values: Iterable[Any],
) -> MetricRow:
    """A row from its parts (the checks build rows themselves, on the hot path)."""
    return (names, kinds, updated, run_id, step, progress, *values)


def touches(rows: Sequence[MetricRow]) -> list[Touch]:
    """``(run_id, time_updated)`` per run of ``rows``: the latest ``updated`` of each.

    The usual batch (one run, every row with a time) by C-level loops (``set``, ``max``
    over ``map``): it runs on the event loop's thread, beside the producer."""
    if rows and len(set(map(run_id, rows))) == 1:
        try:
            when = max(map(updated, rows))
        except TypeError:  # a row without a time (None) among others: the loop below
            pass
        else:
            return [] if when is None else [(rows[0][3], when)]
    latest: dict[int, datetime] = {}
    for row in rows:
        when = row[2]
        if when is not None:
            run = row[3]
            seen = latest.get(run)
            if seen is None or when > seen:
                latest[run] = when
    return list(latest.items())


def single_run(rows: Sequence[MetricRow]) -> int | None:
    """The run of every row, when they all belong to one (None: several runs)."""
    runs = set(map(run_id, rows))  # a C-level loop
    return runs.pop() if len(runs) == 1 else None


def step_range(rows: Sequence[MetricRow]) -> str:
    """``first..last`` step of rows, for messages."""
    return f"{rows[0][4]}..{rows[-1][4]}"


#: The value slot of each kind in ``metric_values`` (``value``, ``value_int``,
#: ``value_bool``, ``value_text``, ``value_time``).
LONG_SLOTS = {"float": 0, "int": 1, "bool": 2, "str": 3, "datetime": 4}


#: One kind's long-stored names of a placement: ``(kind, names, pick)``, ``pick(row)``
#: the row's values of those names, in that order.
LongGroup = tuple[str, tuple[str, ...], Callable[[MetricRow], tuple[Any, ...]]]


class Placement(NamedTuple):
    """Where the metrics of one names tuple are stored (None instead: all are columns).

    ``columns``: the names that are columns of ``metrics``, in row order; ``long``:
    ``(name, kind)`` of the names stored in ``metric_values`` (``kind``: the name's
    registered kind, which decides its value slot), in row order; ``long_groups``: the
    same names grouped by kind, ``(kind, names, pick)`` with ``pick(row)`` their values
    (the engines write one kind's values together, with no loop per value in Python).
    """

    columns: tuple[str, ...]
    long: tuple[tuple[str, str], ...]
    pick_columns: Callable[[MetricRow], tuple[Any, ...]]
    pick_kinds: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    pick_long: Callable[[MetricRow], tuple[Any, ...]]
    long_groups: tuple[LongGroup, ...] = ()


def _picker(positions: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function returning the items at ``positions`` as a tuple (also for 0 or 1)."""
    if len(positions) > 1:
        return itemgetter(*positions)  # type: ignore[return-value]
    if len(positions) == 1:
        (only,) = positions
        return lambda items: (items[only],)
    return lambda items: ()


def placement(names: Sequence[str], long_kinds: Mapping[str, str]) -> Placement | None:
    """The placement of ``names`` given the kinds of the long-stored names (None: every
    name is a column, the usual case)."""
    long_at = [i for i, name in enumerate(names) if name in long_kinds]
    if not long_at:
        return None
    long_set = set(long_at)
    column_at = [i for i in range(len(names)) if i not in long_set]
    by_kind: dict[str, list[int]] = {}
    for i in long_at:
        by_kind.setdefault(long_kinds[names[i]], []).append(i)
    return Placement(
        columns=tuple(names[i] for i in column_at),
        long=tuple((names[i], long_kinds[names[i]]) for i in long_at),
        pick_columns=_picker([3, 4, 5, *(6 + i for i in column_at)]),
        pick_kinds=_picker(column_at),
        pick_long=_picker([6 + i for i in long_at]),
        long_groups=tuple((kind, tuple(names[i] for i in at), _picker([6 + i for i in at]))
                          for kind, at in by_kind.items()),
    )


def column_row(row: MetricRow, where: Placement) -> MetricRow:
    """The row with only its column-stored metrics (the same layout, for ``metrics``)."""
    return (where.columns, where.pick_kinds(row[1]), row[2]) + where.pick_columns(row)


def long_values(row: MetricRow, where: Placement) -> tuple[Any, ...]:
    """The row's values of its long-stored metrics, in the order of ``where.long``."""
    return where.pick_long(row)
