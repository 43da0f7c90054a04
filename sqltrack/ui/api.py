"""What the web page shows, as JSON-ready dicts: read-only queries on one AsyncClient.

Every value reaches SQL as a parameter; metric names only as quoted identifiers
of columns that exist. A missing experiment or run raises ``NotFound``, a bad
request parameter ``BadRequest``; the app turns them into 404 and 400.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..checks import STATUSES
from ..model.runs import FORKED_FROM, REWOUND_FROM
from ..read import queries
from ..read.summary import flat_summary
from .downsample import downsample

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

#: Points per curve unless the request says otherwise, and the accepted range.
DEFAULT_POINTS = 2000
POINTS_RANGE = (10, 20_000)
#: Latest-value columns in a runs table, and runs overlaid in one comparison.
MAX_TABLE_METRICS = 20
MAX_COMPARE_RUNS = 50
#: Metric kinds drawn as curves (others are listed in the run's summary only).
PLOTTED_KINDS = ("float", "int", "bool")


class NotFound(LookupError):
    """The experiment or run does not exist."""


class BadRequest(ValueError):
    """A request parameter is not valid; the message says which and why."""


# -- request parameters -------------------------------------------------------
def parse_max_points(text: str | None) -> int:
    """``max_points`` within POINTS_RANGE (default DEFAULT_POINTS)."""
    if text is None or text == "":
        return DEFAULT_POINTS
    low, high = POINTS_RANGE
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"max_points must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"max_points must be between {low} and {high}, not {value}")
    return value


def parse_ids(text: str | None, what: str = "runs") -> list[int]:
    """Comma-separated ids, in order, without repeats."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not parts:
        raise BadRequest(f"{what} is required: a comma-separated list of run ids")
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        raise BadRequest(f"{what} must be comma-separated integers, not {text!r}") from None
    return list(dict.fromkeys(ids))


def parse_names(text: str | None) -> list[str] | None:
    """Comma-separated metric names; None when absent (meaning: all)."""
    if text is None:
        return None
    return list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))


def parse_status(text: str | None) -> str | None:
    """A run status filter (``""`` or absent: none)."""
    if not text:
        return None
    status = text.strip().upper()
    if status not in STATUSES:
        raise BadRequest(f"unknown status {text!r}: use one of {', '.join(STATUSES)}")
    return status


# -- experiments and runs -----------------------------------------------------
async def experiments(client: AsyncClient) -> dict[str, Any]:
    """Every experiment with its number of runs."""
    return {"experiments": await queries.list_experiments(client)}


async def experiment(client: AsyncClient, experiment_id: int) -> dict[str, Any]:
    """One experiment (id, name, created, tags, comment); NotFound when missing."""
    rows = await client.query(
        "SELECT id, name, time_created, tags, comment FROM experiments WHERE id = %s",
        [experiment_id],
    )
    if not rows:
        raise NotFound(f"experiment {experiment_id} does not exist")
    eid, name, created, tags, comment = rows[0]
    tags = queries.json_column(tags)
    return {"id": eid, "name": name, "created": queries.timestamp(created),
            "tags": sorted(tags) if isinstance(tags, dict) else [], "comment": comment}


async def experiment_runs(
    client: AsyncClient, experiment_id: int, status: str | None = None,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """The runs of an experiment with the latest value of each metric they have."""
    info = await experiment(client, experiment_id)
    columns = dict(list((await queries.metric_columns(client)).items())[:MAX_TABLE_METRICS])
    runs = await queries.list_runs(client, experiment_id, status, tags, columns)
    present = [name for name in columns if any(r["metrics"][name] is not None for r in runs)]
    for run in runs:
        run["metrics"] = {name: run["metrics"][name] for name in present}
    return {
        "experiment": info,
        "filters": {"status": status, "tags": list(tags)},
        "metrics": present,
        "plottable": [name for name in present if columns[name] in PLOTTED_KINDS],
        "runs": runs,
    }


async def run(client: AsyncClient, run_id: int) -> dict[str, Any]:
    """One run in detail (env keys only, never env values); NotFound when missing."""
    found = await queries.get_run(client, run_id)
    if found is None:
        raise NotFound(f"run {run_id} does not exist")
    kinds = await queries.metric_columns(client)
    found["plottable"] = [
        m["metric"] for m in found["metrics"] if kinds.get(m["metric"]) in PLOTTED_KINDS
    ]
    found["summary"] = flat_summary(found["extras"])
    found["idle_seconds"] = idle_seconds(found["updated"])
    found["history"] = await history(client, run_id, found["extras"])
    return found


#: Derived runs (forks, rewound rows) listed on a run's page at most.
MAX_HISTORY_RUNS = 200


def _mark(extras: Any, key: str) -> dict[str, Any]:
    """``extras[key]`` of a derived run (``{"step", "time"}``), or {} when not an object."""
    value = extras.get(key) if isinstance(extras, dict) else None
    return value if isinstance(value, dict) else {}


async def history(client: AsyncClient, run_id: int, extras: Any) -> dict[str, Any]:
    """The run's rewinds and forks, from ``run_links`` and the extras the rewinds and forks
    wrote: ``rewinds`` (``extras["rewinds"]``, each with ``run``: the run holding the rows
    it moved, matched by step and time, or None), ``rewound_from`` (this run holds the rows
    a rewind of that run moved), ``forked_from`` (``{"run", "step", "time"}``) and
    ``forks`` (the runs forked from this one). Values come as the extras hold them."""
    links = await client.query(
        "SELECT from_id, kind, to_id FROM run_links "
        "WHERE (from_id = %s OR to_id = %s) AND kind IN (%s, %s) "
        f"ORDER BY from_id, to_id LIMIT {MAX_HISTORY_RUNS + 1:d}",
        [run_id, run_id, REWOUND_FROM, FORKED_FROM])
    others = {link[0] for link in links if link[0] != run_id}
    found: dict[int, Any] = {}
    if others:  # two plain reads (no join of the two tables: Citus-clean)
        marks = ", ".join(["%s"] * len(others))
        found = dict(await client.query(
            f"SELECT id, extras FROM runs WHERE id IN ({marks})", sorted(others)))
    out: dict[str, Any] = {"rewinds": [], "rewound_from": None, "forked_from": None,
                           "forks": [], "more": len(links) > MAX_HISTORY_RUNS}
    moved: list[tuple[int, dict[str, Any]]] = []  # runs holding rows of this run's rewinds
    own = _mark(extras, REWOUND_FROM), _mark(extras, FORKED_FROM)
    for from_id, kind, to_id in links[:MAX_HISTORY_RUNS]:
        other = queries.json_column(found.get(from_id))
        if from_id == run_id:  # this run was made by a rewind or a fork of ``to_id``
            mark = own[0] if kind == REWOUND_FROM else own[1]
            out[kind] = {"run": to_id, "step": mark.get("step"), "time": mark.get("time")}
        elif kind == REWOUND_FROM:
            moved.append((from_id, _mark(other, REWOUND_FROM)))
        else:
            mark = _mark(other, FORKED_FROM)
            out["forks"].append({"run": from_id, "step": mark.get("step"),
                                 "time": mark.get("time")})
    entries = extras.get("rewinds") if isinstance(extras, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        entry = entry if isinstance(entry, dict) else {}
        held = next((rid for rid, mark in moved if mark.get("step") == entry.get("step")
                     and mark.get("time") == entry.get("time")), None)
        out["rewinds"].append({"step": entry.get("step"), "time": entry.get("time"),
                               "rows": entry.get("rows"), "run": held})
    return out


def idle_seconds(updated: datetime | None) -> float | None:
    """Seconds since the run's ``time_updated`` (None when never set): the page shows a
    RUNNING run idle for longer than its setting as "not responding"."""
    if updated is None:
        return None
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=timezone.utc)
    return round((datetime.now(timezone.utc) - updated).total_seconds(), 3)


# -- metric curves ------------------------------------------------------------
async def run_metrics(
    client: AsyncClient, run_id: int, names: list[str] | None, max_points: int
) -> dict[str, Any]:
    """Curves of a run's numeric metrics (``names``, default all it has), downsampled."""
    if not await client.query("SELECT 1 FROM runs WHERE id = %s", [run_id]):
        raise NotFound(f"run {run_id} does not exist")
    kinds = await queries.metric_columns(client)
    numeric = [name for name, kind in kinds.items() if kind in PLOTTED_KINDS]
    chosen = _chosen(numeric, names)
    curves: dict[str, Any] = {}
    axis = "step"
    if chosen:
        quoted = ", ".join(client.dialect.quote_ident(n) for n in chosen)
        rows = await client.query(
            f"SELECT step, progress, {quoted} FROM metrics WHERE run_id = %s "
            "ORDER BY step, progress",
            [run_id],
        )
        axis = _axis(rows)
        xs = [row[0 if axis == "step" else 1] for row in rows]
        for index, name in enumerate(chosen, start=2):
            ys = [row[index] for row in rows]
            curve = _curve(xs, ys, kinds[name], max_points)
            if curve["total"] or names is not None:  # by default, the metrics the run has
                curves[name] = curve
    return {"run_id": run_id, "x": axis, "max_points": max_points, "metrics": curves}


async def compare(
    client: AsyncClient, run_ids: list[int], metric: str | None, max_points: int
) -> dict[str, Any]:
    """One metric of several runs, each curve downsampled."""
    if len(run_ids) > MAX_COMPARE_RUNS:
        raise BadRequest(f"compare at most {MAX_COMPARE_RUNS} runs at once")
    kinds = await queries.metric_columns(client)
    if not metric:
        raise BadRequest("metric is required: the name of the metric to compare")
    if kinds.get(metric) not in PLOTTED_KINDS:
        known = ", ".join(n for n, k in kinds.items() if k in PLOTTED_KINDS) or "none yet"
        raise BadRequest(f"unknown or non-numeric metric {metric!r} (metrics: {known})")
    marks = ", ".join(["%s"] * len(run_ids))
    found = {
        rid: (name, eid, status)
        for rid, name, eid, status in await client.query(
            "SELECT r.id, e.name, e.id, r.status FROM runs r "
            f"JOIN experiments e ON e.id = r.experiment_id WHERE r.id IN ({marks})",
            run_ids,
        )
    }
    missing = [r for r in run_ids if r not in found]
    if missing:
        raise NotFound(f"run {missing[0]} does not exist")
    quoted = client.dialect.quote_ident(metric)
    fetched = {}
    for run_id in run_ids:
        fetched[run_id] = await client.query(
            f"SELECT step, progress, {quoted} FROM metrics "
            f"WHERE run_id = %s AND {quoted} IS NOT NULL ORDER BY step, progress",
            [run_id],
        )
    # One x axis for all: progress only when every run needs it (see _axis).
    axes = {_axis(rows) for rows in fetched.values() if rows}
    axis = "progress" if axes == {"progress"} else "step"
    runs = []
    for run_id, rows in fetched.items():
        xs = [row[0 if axis == "step" else 1] for row in rows]
        experiment_name, experiment_id, status = found[run_id]
        runs.append({"id": run_id, "experiment": experiment_name,
                     "experiment_id": experiment_id, "status": status,
                     **_curve(xs, [row[2] for row in rows], kinds[metric], max_points)})
    return {"metric": metric, "x": axis, "max_points": max_points, "runs": runs}


def _chosen(plottable: list[str], names: list[str] | None) -> list[str]:
    if names is None:
        return plottable
    unknown = [n for n in names if n not in plottable]
    if unknown:
        raise BadRequest(
            f"run has no numeric metric {unknown[0]!r} (metrics: {', '.join(plottable) or 'none'})"
        )
    return names


def _axis(rows: list[tuple[Any, ...]]) -> str:
    """``step``, unless every row has the same step and progress tells them apart."""
    if len(rows) > 1 and rows[0][0] == rows[-1][0] and rows[0][1] != rows[-1][1]:
        return "progress"
    return "step"


def _curve(xs: list[Any], values: list[Any], kind: str | None, max_points: int) -> dict[str, Any]:
    """A downsampled curve of the finite numbers in ``values`` (None: no value at that x).

    NaN and infinity have no point on a curve: they are left out and counted.
    """
    total = len(values)
    if None in values:
        present = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        xs, values = [x for x, _ in present], [v for _, v in present]
        total = len(values)
    ys = [int(v) for v in values] if kind == "bool" else values
    if not _all_finite(ys):
        finite = [
            (x, y) for x, y in zip(xs, (queries.metric_value(v, kind) for v in ys), strict=True)
            if isinstance(y, (int, float)) and math.isfinite(y)
        ]
        xs, ys = [x for x, _ in finite], [y for _, y in finite]
    kept = len(ys)
    xs, ys = downsample(xs, ys, max_points)
    return {"x": xs, "y": ys, "points": len(ys), "total": total,
            "non_finite": total - kept, "downsampled": len(ys) < kept}


def _all_finite(values: list[Any]) -> bool:
    """Whether every value is a finite number (one pass in C, for long series)."""
    try:
        return math.isfinite(math.fsum(values))
    except (TypeError, OverflowError):  # text (SQLite's 'NaN'), or sums too large
        return False
