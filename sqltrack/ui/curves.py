"""Metric curves for the charts: every x axis at once, new points only, several runs.

Each curve carries its points' ``step`` and ``progress`` (and ``time`` when the
run logs a datetime metric, see ``time_column``), so the page switches the x axis
without asking again. ``after=(step, progress)`` returns only the rows after that
key (a live page asks for what is new since its last point). Long curves are
downsampled by index with the min/max buckets of ``downsample``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..read import queries
from .api import PLOTTED_KINDS, BadRequest, NotFound
from .downsample import downsample

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

#: Runs one compare page overlays at most.
MAX_RUNS = 20
#: Datetime metric columns taken as a run's wall time, in this order of preference.
TIME_NAMES = ("wall_time", "time", "timestamp", "_timestamp")
#: Statuses whose page keeps asking for new points.
LIVE_STATUSES = ("RUNNING",)

After = tuple[int, float] | None


def parse_after(step: str | None, progress: str | None) -> After:
    """``after_step`` / ``after_progress`` parameters (absent: from the start)."""
    if step is None or step == "":
        return None
    try:
        return int(step), float(progress or "inf")
    except ValueError:
        raise BadRequest(f"after_step must be an integer, not {step!r}") from None


def parse_afters(text: str | None) -> dict[int, tuple[int, float]]:
    """Per run ``after``: ``"12:340:0.5,13:20"`` (run:step[:progress])."""
    found: dict[int, tuple[int, float]] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        pieces = part.split(":")
        try:
            run_id, step = int(pieces[0]), int(pieces[1])
            progress = float(pieces[2]) if len(pieces) > 2 else float("inf")
        except (ValueError, IndexError):
            raise BadRequest(f"after must be run:step[:progress] items, not {part!r}") from None
        found[run_id] = (step, progress)
    return found


def wall_time(value: Any) -> str | None:
    """A time as plotly reads it: ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC."""
    stamp = queries.timestamp(value)
    if stamp is None:
        return None
    return stamp.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def time_column(kinds: dict[str, str | None]) -> str | None:
    """The datetime metric column giving the wall time of a row, if any."""
    for name in TIME_NAMES:
        if kinds.get(name) == "datetime":
            return name
    return None


def _after_sql(after: After) -> tuple[str, list[Any]]:
    if after is None:
        return "", []
    return " AND (step > %s OR (step = %s AND progress > %s))", [after[0], after[0], after[1]]


async def _rows(
    client: AsyncClient, run_id: int, columns: list[str], after: After
) -> list[tuple[Any, ...]]:
    """Rows ``(step, progress, *columns)`` of a run after the key ``after``, in key order."""
    extra, params = _after_sql(after)
    names = ", ".join(map(client.dialect.quote_ident, columns))
    return await client.query(
        f"SELECT step, progress, {names} FROM metrics WHERE run_id = %s{extra} "
        "ORDER BY step, progress",
        [run_id, *params],
    )


def curve(rows: list[tuple[Any, ...]], index: int, kind: str | None, max_points: int,
          has_time: bool) -> dict[str, Any]:
    """One metric's curve from rows ``(step, progress, [time], *values)``."""
    total = 0
    kept: list[int] = []
    ys: list[float] = []
    for position, row in enumerate(rows):
        value = row[index]
        if value is None:
            continue
        total += 1
        value = int(value) if kind == "bool" else queries.metric_value(value, kind)
        if isinstance(value, (int, float)) and math.isfinite(value):
            kept.append(position)
            ys.append(value)
    picked, ys = downsample(kept, ys, max_points)
    out = {
        "step": [rows[i][0] for i in picked],
        "progress": [rows[i][1] for i in picked],
        "y": ys, "points": len(ys), "total": total, "non_finite": total - len(kept),
        "downsampled": len(ys) < len(kept),
    }
    if has_time:
        out["time"] = [wall_time(rows[i][2]) for i in picked]
    return out


def _last_key(rows: list[tuple[Any, ...]], after: After) -> dict[str, Any] | None:
    if rows:
        return {"step": rows[-1][0], "progress": rows[-1][1]}
    return None if after is None else {"step": after[0], "progress": after[1]}


def _labels(extras: Any) -> dict[str, str]:
    extras = queries.json_column(extras)
    mapping = extras.get("metric_names") if isinstance(extras, dict) else None
    if not isinstance(mapping, dict):
        return {}
    return {str(k): v for k, v in mapping.items() if isinstance(v, str)}


def _name(extras: Any) -> str | None:
    extras = queries.json_column(extras)
    name = extras.get("name") if isinstance(extras, dict) else None
    return name if isinstance(name, str) else None


async def run_curves(
    client: AsyncClient, run_id: int, names: list[str] | None, max_points: int,
    after: After = None,
) -> dict[str, Any]:
    """Curves of a run's numeric metrics (default: those it has), after ``after``."""
    found = await client.query("SELECT status, extras FROM runs WHERE id = %s", [run_id])
    if not found:
        raise NotFound(f"run {run_id} does not exist")
    status, extras = found[0]
    kinds = await queries.metric_columns(client)
    numeric = [n for n, k in kinds.items() if k in PLOTTED_KINDS]
    if names is not None:
        unknown = [n for n in names if n not in numeric]
        if unknown:
            raise BadRequest(f"run has no numeric metric {unknown[0]!r} "
                             f"(metrics: {', '.join(numeric) or 'none'})")
    chosen = numeric if names is None else names
    clock = time_column(kinds)
    metrics: dict[str, Any] = {}
    rows: list[tuple[Any, ...]] = []
    if chosen:
        rows = await _rows(client, run_id, [*([clock] if clock else []), *chosen], after)
        first = 3 if clock else 2
        for offset, name in enumerate(chosen):
            line = curve(rows, first + offset, kinds[name], max_points, clock is not None)
            if line["total"] or names is not None or after is not None:
                metrics[name] = line
    return {
        "run_id": run_id, "status": status, "live": status in LIVE_STATUSES,
        "axes": ["step", "progress", *(["time"] if clock else [])], "time_metric": clock,
        "labels": _labels(extras), "last": _last_key(rows, after), "max_points": max_points,
        "metrics": metrics,
    }


async def compare_curves(
    client: AsyncClient, run_ids: Sequence[int], names: list[str] | None, max_points: int,
    afters: dict[int, tuple[int, float]] | None = None,
) -> dict[str, Any]:
    """Curves of several runs, one entry per metric, each with a curve per run."""
    if len(run_ids) > MAX_RUNS:
        raise BadRequest(f"overlay at most {MAX_RUNS} runs at once, not {len(run_ids)}")
    afters = afters or {}
    kinds = await queries.metric_columns(client)
    numeric = [n for n, k in kinds.items() if k in PLOTTED_KINDS]
    for name in names or []:
        if name not in numeric:
            known = ", ".join(numeric) or "none yet"
            raise BadRequest(f"unknown or non-numeric metric {name!r} (metrics: {known})")
    marks = ", ".join(["%s"] * len(run_ids))
    info = {
        row[0]: row
        for row in await client.query(
            "SELECT r.id, r.status, r.extras, e.name, e.id FROM runs r "
            f"JOIN experiments e ON e.id = r.experiment_id WHERE r.id IN ({marks})",
            list(run_ids),
        )
    }
    missing = [r for r in run_ids if r not in info]
    if missing:
        raise NotFound(f"run {missing[0]} does not exist")
    chosen = numeric if names is None else names
    clock = time_column(kinds)
    labels: dict[str, str] = {}
    runs = []
    curves: dict[str, dict[str, Any]] = {name: {} for name in chosen}
    for run_id in run_ids:
        _, status, extras, experiment, experiment_id = info[run_id]
        labels.update(_labels(extras))
        after = afters.get(run_id)
        rows: list[tuple[Any, ...]] = []
        if chosen:
            rows = await _rows(client, run_id, [*([clock] if clock else []), *chosen], after)
        first = 3 if clock else 2
        for offset, name in enumerate(chosen):
            curves[name][str(run_id)] = curve(rows, first + offset, kinds[name], max_points,
                                              clock is not None)
        runs.append({"id": run_id, "status": status, "name": _name(extras),
                     "experiment": experiment, "experiment_id": experiment_id,
                     "live": status in LIVE_STATUSES, "last": _last_key(rows, after)})
    if names is None and not afters:  # by default, the metrics some run has
        curves = {n: c for n, c in curves.items() if any(x["total"] for x in c.values())}
    return {"runs": runs, "axes": ["step", "progress", *(["time"] if clock else [])],
            "time_metric": clock, "labels": labels, "max_points": max_points,
            "metrics": curves}


async def system_metrics(
    client: AsyncClient, run_id: int, max_points: int, after: datetime | str | None = None
) -> dict[str, Any]:
    """The run's ``system_metrics`` readings, one curve per name, x = wall time."""
    if not await client.query("SELECT 1 FROM runs WHERE id = %s", [run_id]):
        raise NotFound(f"run {run_id} does not exist")
    sql = "SELECT name, time, value FROM system_metrics WHERE run_id = %s"
    params: list[Any] = [run_id]
    if after is not None:
        sql += " AND time > %s"
        params.append(after)
    rows = await client.query(sql + " ORDER BY name, time", params)
    series: dict[str, tuple[list[Any], list[float]]] = {}
    last: str | None = None  # the latest time, as the database wrote it (for ``after``)
    latest: datetime | None = None
    for name, stamp, value in rows:
        moment = queries.timestamp(stamp)
        if moment is not None and (latest is None or moment > latest):
            latest = moment
            last = stamp if isinstance(stamp, str) else moment.isoformat()
        if value is None or not math.isfinite(value):
            continue
        xs, ys = series.setdefault(name, ([], []))
        xs.append(wall_time(stamp))
        ys.append(value)
    out = {}
    for name, (xs, ys) in series.items():
        kept_x, kept_y = downsample(xs, ys, max_points)
        out[name] = {"time": kept_x, "y": kept_y, "points": len(kept_y), "total": len(ys)}
    return {"run_id": run_id, "last": last, "metrics": out}
