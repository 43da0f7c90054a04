"""Metric names from frameworks, mapped to metric columns (one rule for every integration).

Frameworks log names such as ``train/loss``, ``lr-SGD``, ``val_acc_epoch`` or
``eval/f1@5``; metric columns must be plain identifiers. :func:`column_name`
maps a name to its column:

1. each ``/`` becomes ``__`` (``train/loss`` -> ``train__loss``);
2. every other character that is not an ASCII letter, digit or ``_`` becomes
   ``_`` (``lr-SGD`` -> ``lr_SGD``, ``eval/f1@5`` -> ``eval__f1_5``);
3. a name that is empty or starts with a digit gets a leading ``_``;
4. ``run_id``, ``step`` and ``progress`` (any case) get a trailing ``_``;
5. a result longer than 63 characters keeps its first 54, then ``_`` and 8 hex
   digits of the original name's SHA-1.

A name that is already a plain identifier keeps its name. Two different names
of one run that map to one column (compared ignoring case, as SQLite compares
column names), such as ``Loss`` and ``loss`` or ``a/b`` and ``a__b``, are both
kept: the first keeps its column, the later one gets a distinct column, its
column followed by ``_`` and 8 hex digits of the name's SHA-1 (shortened as in
rule 5 to fit 63 characters): ``loss`` -> ``loss_<hash>``.
Each run's mapping, ``{column: original name}`` for every metric an integration
wrote, is kept in the run's ``extras`` under :data:`EXTRAS_KEY`
(``"metric_names"``), so analyses and the web page can show the original names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

#: The key of the run's ``extras`` that holds ``{column: original name}``.
EXTRAS_KEY = "metric_names"
MAX_LENGTH = 63
RESERVED = frozenset({"run_id", "step", "progress"})
_OTHER = re.compile(r"[^A-Za-z0-9_]")


class MetricNameCollision(ValueError):
    """Two different metric names map to the same column (no longer raised by
    :class:`MetricNames`, which gives the later name a distinct column; kept for code
    that catches it)."""

    def __init__(self, name: str, other: str, column: str) -> None:
        super().__init__(
            f"metric names {other!r} and {name!r} both map to the column {column!r} "
            "(see sqltrack.integrations.names); rename one of them"
        )
        self.name, self.other, self.column = name, other, column


def _distinct(name: str, column: str, attempt: int) -> str:
    """A column for ``name`` other than ``column``: a hash suffix (attempt > 0: salted)."""
    salted = name if attempt == 0 else f"{name}\x00{attempt}"
    digest = hashlib.sha1(salted.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{column[:MAX_LENGTH - 9]}_{digest}"


def column_name(name: str) -> str:
    """The metric column for a framework's metric ``name`` (the rule in the module doc)."""
    if not isinstance(name, str):
        raise ValueError(f"metric name {name!r} is not a str")
    column = _OTHER.sub("_", name.replace("/", "__"))
    if not column or column[0].isdigit():
        column = "_" + column
    if column.lower() in RESERVED:
        column += "_"
    if len(column) > MAX_LENGTH:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        column = f"{column[:MAX_LENGTH - 9]}_{digest}"
    return column


class MetricNames:
    """One run's mapping from framework names to columns, checked for collisions.

    ``known`` is a mapping already recorded for the run (``{column: original}``, e.g.
    read back from its extras when a requeued job resumes it).
    """

    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        self.originals: dict[str, str] = {}  # column -> original name
        self._columns: dict[str, str] = {}  # original name -> column
        self._by_folded: dict[str, str] = {}  # column.lower() -> original name
        self.changed = False
        for column, original in (known or {}).items():
            if isinstance(column, str) and isinstance(original, str):
                self.originals[column] = original
                self._columns[original] = column
                self._by_folded[column.lower()] = original

    def column(self, name: str) -> str:
        """The column for ``name``: :func:`column_name`, or a distinct one when another
        name of the run has that column already (ignoring case)."""
        column = self._columns.get(name)
        if column is not None:
            return column
        base = column = column_name(name)
        attempt = 0
        while self._by_folded.get(column.lower(), name) != name:
            column = _distinct(name, base, attempt)
            attempt += 1
        self._columns[name] = column
        self._by_folded[column.lower()] = name
        self.originals[column] = name
        self.changed = True
        return column

    def columns(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """``metrics`` keyed by column (all names checked before anything is returned)."""
        return {self.column(name): value for name, value in metrics.items()}


#: What a per-rank metric's name gets: ``throughput`` of rank 1 is ``throughput/rank1``
#: (column ``throughput__rank1``).
RANK_SUFFIX = "/rank{rank}"


def rank_name(name: str, rank: int) -> str:
    """``name`` of rank ``rank``, as every integration stores per-rank metrics:
    ``throughput`` -> ``throughput/rank1`` (its column: ``throughput__rank1``)."""
    return name + RANK_SUFFIX.format(rank=int(rank))


def known_names(extras: Any) -> dict[str, str]:
    """The ``{column: original}`` mapping in a run's extras (JSON text or a dict)."""
    if isinstance(extras, (str, bytes)):
        try:
            extras = json.loads(extras)
        except ValueError:
            return {}
    if not isinstance(extras, Mapping):
        return {}
    names = extras.get(EXTRAS_KEY)
    return dict(names) if isinstance(names, Mapping) else {}
