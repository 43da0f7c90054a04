"""Metric curves for the charts: every x axis at once, new points only, several runs.

Each curve carries its points' ``step`` and ``progress`` (and ``time`` when the
run logs a datetime metric, see ``time_column``), so the page switches the x axis
without asking again. ``after=(step, progress)`` returns only the rows after that
key (a live page asks for what is new since its last point). Long curves are
downsampled by the database: the lowest and highest value of each bucket of steps
plus the first and last points (``Dialect.curve_extremes``), so at most
``max_points`` rows a curve leave it, on both engines, for column and long-stored
metrics alike. A compare reads its runs together: their last keys in one statement,
their curves' ends and counts 20 curves a statement, their buckets' extremes
``curve_steps_per_statement`` steps a statement, side by side on the pool's connections
(on PostgreSQL one row a curve, ``Dialect.curve_points_of``).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from ..engines.base import FINITE as _FINITE
from ..engines.base import CurveSet
from ..read import queries
from .api import PLOTTED_KINDS, BadRequest, NotFound
from .identity import aggregate, color_of, differing_args, display_name, group_key

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

#: Runs one compare page overlays at most.
MAX_RUNS = 20
#: Datetime metric columns taken as a run's wall time, in this order of preference.
TIME_NAMES = ("wall_time", "time", "timestamp", "_timestamp")
#: Statuses whose page keeps asking for new points.
LIVE_STATUSES = ("RUNNING",)

After = tuple[int, float] | None
#: No rows at all (the run had none when its last key was read).
NOTHING = "nothing"
#: The last key a curve read may return (inclusive), ``NOTHING`` or None (no bound).
Until = tuple[int, float] | str | None


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


def _after_sql(after: After, until: Until = None) -> tuple[str, list[Any]]:
    """The rows after the key ``after`` and up to the key ``until`` (``NOTHING``: none)."""
    sql, params = "", []
    if after is not None:
        sql, params = " AND (step > %s OR (step = %s AND progress > %s))", [
            after[0], after[0], after[1]]
    if until is NOTHING:
        sql += " AND 1 = 0"
    elif until is not None:
        sql += " AND (step < %s OR (step = %s AND progress <= %s))"
        params += [until[0], until[0], until[1]]
    return sql, params


def _until(last: dict[str, Any] | None) -> Until:
    """The bound of a curve read made after ``_last`` read ``last``: the rows up to that
    key. A live page asks next for the rows after ``last``, so a row committed between
    the two reads must not be in this answer (it would be skipped for good: the next
    ask starts past it) nor be left out of the next one."""
    return NOTHING if last is None else (last["step"], last["progress"])


#: Step values per ``IN`` list when reading the time of the points kept.
_IN_LIST = 500


class _Place:
    """Where one metric of one run is read: ``FROM table WHERE base`` (params) holds its
    rows, ``where`` those with a value; its value expression and the condition that a
    value is finite. Metrics of one ``table`` and ``base`` are read together."""

    table: str
    params: list[Any]

    def __init__(self, client: AsyncClient, run_id: int, name: str, kind: str | None,
                 columns: dict[str, str | None], after: After, until: Until = None) -> None:
        if name in columns:
            value = client.dialect.quote_ident(name)
            self.table, self.params, base = "metrics", [run_id], "run_id = %s"
        else:
            value = queries.LONG_SLOT.get(kind or "", "value_text")
            self.table, self.params = "metric_values", [run_id, name]
            base = "run_id = %s AND name = %s"
        extra, params = _after_sql(after, until)
        self.base = base + extra
        self.where = f"{self.base} AND {value} IS NOT NULL"
        self.params += params
        self.value = f"CAST({value} AS INTEGER)" if kind == "bool" else value
        self.float = kind == "float"
        self.finite = f"{value} {_FINITE}" if self.float else "1 = 1"


#: A curve's points as columns (steps, progresses, values; in key order), its number of
#: values and of finite values.
Points = tuple[list[int], list[float], list[Any], int, int]


class _Long:
    """A curve longer than ``max_points``: its ends and its buckets of steps, whose
    extremes are being read (``found``; ``counts`` and ``odd`` by bucket, or for the
    buckets whose extremes are finite only their sum, ``counted``)."""

    def __init__(self, place: _Place, ends: list[Any], low: int, width: int) -> None:
        self.place, self.ends, self.low, self.width = place, ends, low, width
        self.found: dict[tuple[int, float], Any] = {}
        self.counts: dict[int, int] = {}
        self.counted = 0
        self.odd: set[int] = set()  # buckets whose extreme is NaN or infinite: asked again
        self.total = 0  # its values (the counts before the odd buckets are asked again)


class _Read(NamedTuple):
    """Long curves of one table, run and range of steps whose extremes are read together:
    the rows ``where`` (with their first curve's params), ``buckets`` from step ``start``."""

    longs: list[_Long]
    where: str
    values: list[str]
    start: int
    buckets: int


#: Curves whose ends and counts one statement reads at most: five compound terms and up
#: to 40 parameters each (SQLite allows 500 terms, and before 3.32 999 parameters).
_STATS_PLACES = 20


async def _stats(client: AsyncClient, places: Sequence[_Place], max_points: int,
                 side_by_side: bool) -> list[dict[int, Sequence[Any]]]:
    """Each curve's first and last finite points ``(step, progress, y)`` (keys 0, 1),
    first and last steps (2, 3) and number of values up to ``max_points + 1`` (4): one
    statement for up to ``_STATS_PLACES`` curves whose values are of one type (a
    ``UNION ALL`` column has one type), so a compare's runs are read together
    (``side_by_side``: see ``_gather``); a long curve's rows are not fetched."""
    found: list[dict[int, Sequence[Any]]] = [{} for _ in places]
    by_type: dict[bool, list[int]] = {}
    for index, place in enumerate(places):
        by_type.setdefault(place.float, []).append(index)

    async def read(part: list[int]) -> None:
        terms: list[str] = []
        params: list[Any] = []
        for n, index in enumerate(part):
            place = places[index]
            frm = f"FROM {place.table} WHERE {place.where}"
            terms += [f"SELECT * FROM (SELECT {5 * n + k:d} AS k, step, progress, "
                      f"{place.value} AS y {frm}{finite} ORDER BY step{order}, "
                      f"progress{order} LIMIT 1) e{5 * n + k:d}"
                      for k, (finite, order) in enumerate((
                          (f" AND {place.finite}", ""), (f" AND {place.finite}", " DESC"),
                          ("", ""), ("", " DESC")))]
            terms.append(f"SELECT {5 * n + 4:d}, COUNT(*), NULL, NULL FROM (SELECT 1 AS "
                         f"one {frm} LIMIT {max_points + 1:d}) e{5 * n + 4:d}")
            params += place.params * 5
        for row in await client.query(" UNION ALL ".join(terms), params):
            n, k = divmod(row[0], 5)
            found[part[n]][k] = row[1:]

    await _gather(side_by_side, [
        partial(read, indexes[first:first + _STATS_PLACES])
        for indexes in by_type.values() for first in range(0, len(indexes), _STATS_PLACES)])
    return found


async def _points(client: AsyncClient, places: Sequence[_Place], max_points: int,
                  side_by_side: bool) -> list[Points]:
    """Each curve's points (at most ``max_points``): the whole curve when it fits, else
    the first and last finite points and the lowest and highest of each bucket of
    steps, chosen by the database (``Dialect.curve_extremes_of``), in one read of the
    rows for the curves of one table and run that span the same steps; every run's
    curves at once (``_stats``, then the extremes of all of them). ``side_by_side``:
    statements run at once on the pool's connections (else one by one on the task's)."""
    out: list[Points | None] = [None] * len(places)
    buckets = (max_points - 2) // 2
    groups: dict[tuple[Any, ...], dict[int, _Long]] = {}
    short = []
    stats = await _stats(client, places, max_points, side_by_side)
    for index, (place, by) in enumerate(zip(places, stats, strict=True)):
        if by[4][0] <= max_points:
            short.append(index)
            continue
        ends = [tuple(by[k]) for k in (0, 1) if k in by]
        low, high = by[2][0], by[3][0]
        width = max(1, -(-(high - low + 1) // buckets))
        key = (place.table, place.base, *place.params, low, width)
        groups.setdefault(key, {})[index] = _Long(place, ends, low, width)

    async def whole(index: int) -> None:
        place = places[index]
        head = await client.query(
            f"SELECT step, progress, {place.value} FROM {place.table} WHERE {place.where} "
            f"ORDER BY step, progress LIMIT {max_points:d}", place.params)
        kept = [row for row in head if _finite(row[2])]
        out[index] = ([int(r[0]) for r in kept], [float(r[1]) for r in kept],
                      [r[2] for r in kept], len(head), len(kept))

    await _gather(side_by_side, [partial(whole, index) for index in short])
    await _extremes(client, side_by_side, [
        _Read(list(group.values()), first.place.base, [x.place.value for x in group.values()],
              first.low, buckets)
        for group in groups.values() for first in [next(iter(group.values()))]])
    longs = [long for group in groups.values() for long in group.values()]
    for long in longs:
        long.total = long.counted + sum(long.counts.values())
    # the buckets whose extreme is not finite, asked again for their finite values
    odd = [(long, sorted(long.odd)) for long in longs if long.odd]
    for long, buckets_of in odd:
        long.odd = set()
        for bucket in buckets_of:
            long.counts[bucket] = 0
    await _extremes(client, side_by_side, [
        _Read([long], f"{long.place.where} AND {long.place.finite}", [long.place.value],
              long.low + bucket * long.width, 1)
        for long, buckets_of in odd for bucket in buckets_of])
    for group in groups.values():
        for index, long in group.items():
            out[index] = _finish(long)
    return [points for points in out if points is not None]


async def _gather(side_by_side: bool, calls: Sequence[Callable[[], Awaitable[Any]]]
                  ) -> list[Any]:
    """The calls' results: ``side_by_side`` at once (``asyncio.gather``: their statements
    on the pool's connections), else one by one in the caller's task (on the connection
    it holds); a single call always so."""
    if side_by_side and len(calls) > 1:
        return list(await asyncio.gather(*(call() for call in calls)))
    return [await call() for call in calls]


async def _extremes(client: AsyncClient, side_by_side: bool, reads: Sequence[_Read]) -> None:
    """Each long curve's lowest and highest points of its ``reads``' buckets into its
    ``found``, ``counts`` (``counted``) and ``odd``: the statements of
    ``Dialect.curve_points_of`` for all the reads (one row a curve), else of
    ``curve_extremes_of`` (a row a bucket and extreme); ``side_by_side``: at once, see
    ``_gather``."""
    if not reads:
        return
    sets = [CurveSet(read.longs[0].place.table, read.where, read.longs[0].place.params,
                     read.values, read.start, read.longs[0].width, read.buckets)
            for read in reads]
    by_curve = client.dialect.curve_points_of(sets)
    statements = client.dialect.curve_extremes_of(sets) if by_curve is None else by_curve

    async def read(sql: str, params: list[Any], covered: list[int]) -> None:
        # each value k of the statement: its curve and the index of its first bucket
        # (the curves of a read share low and width); its rows taken in as they come,
        # while the other statements run
        targets = [(long, (reads[index].start - long.low) // long.width)
                   for index in covered for long in reads[index].longs]
        rows = await client.query(sql, params)
        if by_curve is not None:
            for k, counted, odd, steps, progresses, ys in rows:
                long, offset = targets[k]
                long.counted += counted
                for bucket, count in odd or ():
                    long.counts[bucket + offset] = count
                    long.odd.add(bucket + offset)
                if steps is not None:  # integral floats written as integers: made floats
                    keys = zip(json.loads(steps), json.loads(progresses, parse_int=float),
                               strict=True)
                    long.found.update(zip(keys, json.loads(ys, parse_int=float), strict=True))
            return
        isfinite = math.isfinite
        for k, bucket, y, step, progress, count in rows:
            long, offset = targets[k]
            bucket += offset
            if count:
                long.counts[bucket] = long.counts.get(bucket, 0) + count
            if y is None or step is None:
                continue
            if isfinite(y):
                long.found[(int(step), float(progress))] = y
            else:
                long.odd.add(bucket)

    await _gather(side_by_side, [partial(read, *statement) for statement in statements])


def _finish(long: _Long) -> Points:
    """A long curve's points once its buckets are read (the odd ones again), with its
    ends."""
    for step, progress, y in long.ends:
        long.found[(int(step), float(progress))] = y
    found = long.found
    keys = sorted(found)
    return ([s for s, _ in keys], [p for _, p in keys], [found[key] for key in keys],
            long.total, long.counted + sum(long.counts.values()))


def _finite(value: Any) -> bool:
    return value is not None and (not isinstance(value, float) or math.isfinite(value))


async def _times(client: AsyncClient, run_id: int, clock: str, kinds: dict[str, str | None],
                 columns: dict[str, str | None], steps: set[int]) -> dict[tuple[int, float], Any]:
    """The clock metric's value at the given steps, by key."""
    place = _Place(client, run_id, clock, kinds.get(clock), columns, None)
    found: dict[tuple[int, float], Any] = {}
    ordered = sorted(steps)
    for start in range(0, len(ordered), _IN_LIST):
        part = ordered[start:start + _IN_LIST]
        rows = await client.query(
            f"SELECT step, progress, {place.value} FROM {place.table} WHERE {place.where} "
            f"AND step IN ({', '.join(['%s'] * len(part))})", [*place.params, *part])
        found.update({(int(s), float(p)): v for s, p, v in rows})
    return found


def _line(points: Points, kind: str | None) -> dict[str, Any]:
    """A curve as the API gives it (``time`` added by the caller with a clock)."""
    steps, progresses, values, total, finite = points
    if kind in ("int", "bool"):
        ys = [int(queries.metric_value(v, "int")) for v in values]
    else:  # floats as they come (most values of a long curve), others converted
        ys = [v if type(v) is float else float(queries.metric_value(v, "float"))
              for v in values]
    return {"step": steps, "progress": progresses, "y": ys, "points": len(ys),
            "total": total, "non_finite": total - finite, "downsampled": len(ys) < finite}


async def _read_runs(client: AsyncClient, run_ids: Sequence[int], names: Sequence[str],
                     kinds: dict[str, str | None], columns: dict[str, str | None],
                     max_points: int, afters: dict[int, tuple[int, float]],
                     clock: str | None, side_by_side: bool,
                     ) -> list[tuple[dict[str, dict[str, Any]], dict[str, Any] | None]]:
    """Each run's curves of ``names`` (downsampled by the database; the rows after its
    ``afters`` key) and its last key: the last keys first (the curves stop at them, see
    ``_until``), then every curve of every run together (``_points``; ``side_by_side``:
    see ``_gather``)."""
    lasts = await _last(client, run_ids, afters)
    places = [_Place(client, run_id, name, kinds.get(name), columns, afters.get(run_id),
                     _until(lasts[run_id]))
              for run_id in run_ids for name in names]
    found = iter(await _points(client, places, max_points, side_by_side))
    lines = [{name: _line(next(found), kinds.get(name)) for name in names} for _ in run_ids]
    if clock is not None:
        async def clocked(run_id: int, line: dict[str, Any]) -> None:
            times = await _times(client, run_id, clock, kinds, columns, set(line["step"]))
            line["time"] = [wall_time(times.get(key))
                            for key in zip(line["step"], line["progress"], strict=True)]

        await _gather(side_by_side, [partial(clocked, run_id, line) for run_id, by_name in zip(
            run_ids, lines, strict=True) for line in by_name.values()])
    return [(by_name, lasts[run_id]) for run_id, by_name in zip(run_ids, lines, strict=True)]


async def _last(client: AsyncClient, run_ids: Sequence[int],
                afters: dict[int, tuple[int, float]]) -> dict[int, dict[str, Any] | None]:
    """The greatest key of each run's metric rows (either place) after its ``afters``
    key, by run: one statement for all the runs and both places."""
    unique = list(dict.fromkeys(run_ids))
    terms: list[str] = []
    params: list[Any] = []
    for n, run_id in enumerate(unique):
        extra, more = _after_sql(afters.get(run_id))
        for table in ("metrics", "metric_values"):
            terms.append(f"SELECT * FROM (SELECT {n:d} AS r, step, progress FROM {table} "
                         f"WHERE run_id = %s{extra} ORDER BY step DESC, progress DESC "
                         f"LIMIT 1) l{len(terms):d}")
            params += [run_id, *more]
    keys: dict[int, list[tuple[int, float]]] = {}
    for n, step, progress in await client.query(" UNION ALL ".join(terms), params):
        keys.setdefault(unique[n], []).append((int(step), float(progress)))
    out: dict[int, dict[str, Any] | None] = {}
    for run_id in unique:
        after = afters.get(run_id)
        if run_id in keys:
            step, progress = max(keys[run_id])
            out[run_id] = {"step": step, "progress": progress}
        else:
            out[run_id] = None if after is None else {"step": after[0], "progress": after[1]}
    return out


#: Column metrics tried one by one (a run lacking one costs a read of its rows); with
#: more candidates, one ``queries.export_columns`` read finds the run's metrics first.
_PROBE = 4


async def _present(client: AsyncClient, run_ids: Sequence[int], numeric: list[str],
                   columns: dict[str, str | None]) -> list[str]:
    """The metrics of ``numeric`` worth reading for these runs (by default)."""
    if sum(1 for n in numeric if n in columns) <= _PROBE and not any(
            n not in columns for n in numeric):
        return numeric
    found = await queries.export_columns(client, list(run_ids))
    return [n for n in numeric if n in found]


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
    kinds = await queries.metric_kinds(client)
    columns = await queries.metric_columns(client)
    numeric = [n for n, k in kinds.items() if k in PLOTTED_KINDS]
    if names is not None:
        unknown = [n for n in names if n not in numeric]
        if unknown:
            raise BadRequest(f"run has no numeric metric {unknown[0]!r} "
                             f"(metrics: {', '.join(numeric) or 'none'})")
    chosen = (await _present(client, [run_id], numeric, columns)
              if names is None and after is None else numeric if names is None else names)
    clock = time_column(kinds)
    (lines, last), = await _read_runs(client, [run_id], chosen, kinds, columns, max_points,
                                      {} if after is None else {run_id: after}, clock,
                                      side_by_side=False)
    metrics = {name: line for name, line in lines.items()
               if line["total"] or names is not None or after is not None}
    return {
        "run_id": run_id, "status": status, "live": status in LIVE_STATUSES,
        "axes": ["step", "progress", *(["time"] if clock else [])], "time_metric": clock,
        "labels": _labels(extras), "last": last,
        "max_points": max_points,
        "metrics": metrics,
    }


async def compare_curves(
    client: AsyncClient, run_ids: Sequence[int], names: list[str] | None, max_points: int,
    afters: dict[int, tuple[int, float]] | None = None,
    group: str | None = None, band: str = "minmax",
) -> dict[str, Any]:
    """Curves of several runs, one entry per metric, each with a curve per run; each run
    with its colour, display name and the args that differ across these runs. ``group``
    (see ``identity.parse_group``): also one line per group and metric, with its band."""
    if len(run_ids) > MAX_RUNS:
        raise BadRequest(f"overlay at most {MAX_RUNS} runs at once, not {len(run_ids)}")
    afters = afters or {}
    kinds = await queries.metric_kinds(client)
    columns = await queries.metric_columns(client)
    numeric = [n for n, k in kinds.items() if k in PLOTTED_KINDS]
    for name in names or []:
        if name not in numeric:
            known = ", ".join(numeric) or "none yet"
            raise BadRequest(f"unknown or non-numeric metric {name!r} (metrics: {known})")
    marks = ", ".join(["%s"] * len(run_ids))
    info = {
        row[0]: row
        for row in await client.query(
            "SELECT r.id, r.status, r.extras, e.name, e.id, r.args, r.tags FROM runs r "
            f"JOIN experiments e ON e.id = r.experiment_id WHERE r.id IN ({marks})",
            list(run_ids),
        )
    }
    missing = [r for r in run_ids if r not in info]
    if missing:
        raise NotFound(f"run {missing[0]} does not exist")
    chosen = (await _present(client, run_ids, numeric, columns)
              if names is None and not afters else numeric if names is None else names)
    clock = time_column(kinds)
    labels: dict[str, str] = {}
    runs = []
    curves: dict[str, dict[str, Any]] = {name: {} for name in chosen}
    args = {rid: _mapping(row[5]) for rid, row in info.items()}
    differing = differing_args([args[rid] for rid in run_ids])

    # every run's curves read together (a few statements whatever the number of runs),
    # those of the buckets at once on the pool's connections (SQLite's queue in its worker)
    read_runs = await _read_runs(client, run_ids, chosen, kinds, columns, max_points, afters,
                                 clock, side_by_side=True)
    for run_id, (lines, last) in zip(run_ids, read_runs, strict=True):
        _, status, extras, experiment, experiment_id, _, tags = info[run_id]
        labels.update(_labels(extras))
        for name in chosen:
            curves[name][str(run_id)] = lines[name]
        run_name = _name(extras)
        runs.append({"id": run_id, "status": status, "name": run_name,
                     "label": display_name(run_id, run_name, args[run_id], differing),
                     "color": color_of(run_id),
                     "args": {k: args[run_id].get(k) for k in differing},
                     "group": None if group is None else group_key(
                         group, status, queries._tags(tags), args[run_id],
                         _mapping(extras)),
                     "experiment": experiment, "experiment_id": experiment_id,
                     "live": status in LIVE_STATUSES,
                     "last": last})
    if names is None and not afters:  # by default, the metrics some run has
        curves = {n: c for n, c in curves.items() if any(x["total"] for x in c.values())}
    return {"runs": runs, "axes": ["step", "progress", *(["time"] if clock else [])],
            "time_metric": clock, "labels": labels, "max_points": max_points,
            "differing": differing, "metrics": curves,
            **({} if group is None else {"group": group, "band": band,
                                         "groups": _groups(runs, curves, band)})}


def _mapping(value: Any) -> dict[str, Any]:
    value = queries.json_column(value)
    return value if isinstance(value, dict) else {}


def _groups(runs: list[dict[str, Any]], curves: dict[str, dict[str, Any]],
            band: str) -> dict[str, list[dict[str, Any]]]:
    """Per metric, one aggregated line per group (``identity.aggregate``), in the order
    the groups' first runs come; a group's colour is its first run's."""
    members: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        members.setdefault(run["group"], []).append(run)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, per_run in curves.items():
        lines = []
        for key, group_runs in members.items():
            drawn = [per_run[str(r["id"])] for r in group_runs
                     if per_run.get(str(r["id"]), {}).get("points")]
            if not drawn:
                continue
            line = aggregate([(c["step"], c["y"]) for c in drawn], band)
            lines.append({"key": key, "color": group_runs[0]["color"],
                          "runs": [{"id": r["id"], "label": r["label"]} for r in group_runs],
                          **line})
        out[name] = lines
    return out


#: What ``/api/runs/{id}/system`` gives: a line per rank and host, or min/mean/max across them.
SYSTEM_VIEWS = ("ranks", "stats")


def parse_view(text: str | None) -> str:
    """The system metrics' ``view`` (default ``ranks``)."""
    if not text:
        return "ranks"
    if text not in SYSTEM_VIEWS:
        raise BadRequest(f"view must be one of {', '.join(SYSTEM_VIEWS)}, not {text!r}")
    return text


_NO_OFFSET = timedelta(0)


def _plotted_time(stamp: Any) -> str | None:
    """``wall_time`` of a reading, at once for the text SQLite keeps of a UTC time
    (``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00``, as ``Dialect.timestamp`` writes it) and for
    a PostgreSQL time of a UTC session: a run has hundreds of thousands of them."""
    if isinstance(stamp, datetime) and stamp.utcoffset() == _NO_OFFSET:
        return stamp.replace(tzinfo=None).isoformat(sep=" ")
    if (isinstance(stamp, str) and stamp.endswith("+00:00") and stamp[10:11] == "T"
            and (len(stamp) == 25 or (len(stamp) == 32 and stamp[19] == "."
                                      and stamp[20:26] != "000000"))):
        try:
            datetime.fromisoformat(stamp)  # a time indeed
        except ValueError:
            return None
        return f"{stamp[:10]} {stamp[11:-6]}"
    return wall_time(stamp)


#: Equal-width buckets of time a long per-rank line is split into (``max_points`` over
#: this); each gives at most two points, so a line has at most about half ``max_points``.
_BUCKETS_PER_POINTS = 4


def _long_line(row: Sequence[Any], buckets: int) -> tuple[Any, ...] | None:
    """``Dialect.line_extremes``' line of a found row ``(rank, host, name, _, _, first,
    last)``: a range of milliseconds from a bit before its first finite reading to a bit
    after its last (the database rounds them its own way); None if a time is unreadable."""
    rank, host, name, _, _, first, last = row
    low, high = queries.timestamp(first), queries.timestamp(last)
    if low is None or high is None:
        return None
    start = math.floor(low.timestamp() * 1000) - 1
    span = math.ceil(high.timestamp() * 1000) + 2 - start
    return (rank, host, name, first, last, start, max(span, buckets))


async def system_metrics(
    client: AsyncClient, run_id: int, max_points: int, after: datetime | str | None = None,
    view: str = "ranks",
) -> dict[str, Any]:
    """The run's ``system_metrics`` readings over wall time: ``ranks`` (every rank and
    host that wrote some) and ``metrics``, by name, either a curve per (rank, host) (view
    ``ranks``, the readings after ``after`` only when given; a curve of more than
    ``max_points`` finite readings downsampled by the database in one pass: its first
    and last readings and the lowest and highest of each of ``max_points // 4`` equal
    buckets of its time, see ``Dialect.line_extremes``)
    or the min/mean/max across them per bucket of time (view ``stats``, see
    :func:`system_stats`)."""
    if not await client.query("SELECT 1 FROM runs WHERE id = %s", [run_id]):
        raise NotFound(f"run {run_id} does not exist")
    ranks_sql = ("SELECT DISTINCT rank, host FROM system_metrics WHERE run_id = %s "
                 "ORDER BY rank, host")
    if view == "stats":
        if after is not None:
            raise BadRequest("after is for view=ranks: view=stats is read whole")
        ranks = [{"rank": int(rank), "host": host}
                 for rank, host in await client.query(ranks_sql, [run_id])]
        return {"run_id": run_id, "view": view, "ranks": ranks,
                **await system_stats(client, run_id, max_points)}
    since, params = ("", [run_id]) if after is None else (" AND time > %s", [run_id, after])
    # one read of the lines (after ``after``): their ranks, latest time, finite readings
    # and the first and last of these
    found = await client.query(
        f"SELECT rank, host, name, MAX(time), SUM(CASE WHEN value {_FINITE} THEN 1 ELSE 0 END), "
        f"MIN(CASE WHEN value {_FINITE} THEN time END), "
        f"MAX(CASE WHEN value {_FINITE} THEN time END) "
        f"FROM system_metrics WHERE run_id = %s{since} GROUP BY rank, host, name "
        "ORDER BY rank, host, name", params)
    pairs = (dict.fromkeys((int(row[0]), row[1]) for row in found) if after is None
             else await client.query(ranks_sql, [run_id]))
    ranks = [{"rank": int(rank), "host": host} for rank, host in pairs]
    latest = max((row[3] for row in found), default=None)
    moment = queries.timestamp(latest)  # the latest time, as the database wrote it
    last = latest if isinstance(latest, str) or moment is None else moment.isoformat()
    where = f"run_id = %s AND value {_FINITE}{since}"
    buckets = max(1, max_points // _BUCKETS_PER_POINTS)
    totals = {(row[2], int(row[0]), row[1]): int(row[4] or 0) for row in found}
    long = [line for line in (_long_line(row, buckets) for row in found
                              if int(row[4] or 0) > max_points) if line is not None]
    keys = [(name, rank, host) for rank, host, name, *_ in long]  # line_extremes' lines
    found_rows: list[tuple[Any, Any, Any]] = []  # (line's key, time, value), in order
    for sql, values in client.dialect.line_extremes(where, params, long, buckets):
        found_rows += [(keys[k], stamp, value) for k, stamp, value in
                       await client.query(sql, values)]
    if len(long) < sum(1 for total in totals.values() if total):
        # the lines that fit, read whole (every line when none is long)
        sql = f"SELECT name, rank, host, time, value FROM system_metrics WHERE {where}"
        if long:
            marks = ", ".join(["(%s, %s, %s)"] * len(long))
            sql += f" AND (rank, host, name) NOT IN (VALUES {marks})"
        found_rows += [((name, rank, host), stamp, value) for name, rank, host, stamp, value
                       in await client.query(sql + " ORDER BY name, rank, host, time",
                                             [*params, *(x for line in long for x in line[:3])])]
    out: dict[str, list[dict[str, Any]]] = {}
    lines: dict[tuple[str, int, str], dict[str, Any]] = {}
    previous = None
    for key, stamp, value in found_rows:
        if (key, stamp) == previous:
            continue  # a reading kept as its bucket's lowest and highest
        previous = (key, stamp)
        line = lines.get(key)
        if line is None:
            name, rank, host = key
            line = lines[key] = {"rank": int(rank), "host": host, "time": [], "y": [],
                                 "points": 0, "total": totals.get((name, int(rank), host), 0)}
        line["time"].append(_plotted_time(stamp))
        line["y"].append(float(value))
        line["points"] += 1
    for key in sorted(lines):
        out.setdefault(key[0], []).append(lines[key])
    return {"run_id": run_id, "view": "ranks", "ranks": ranks, "last": last, "metrics": out}


def _stamp_ms(ms: float) -> str:
    """Milliseconds since 1970 as plotly reads a time (UTC)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.replace(tzinfo=None).isoformat(sep=" ")


async def system_stats(client: AsyncClient, run_id: int, max_points: int) -> dict[str, Any]:
    """Min, mean and max across ranks (and hosts) of each system metric, per bucket of
    time, computed by the database: each rank's readings in a bucket are averaged first
    (a rank sampled twice there counts once), then the buckets' min / mean / max across
    ranks and their number of ranks (``ranks``; fewer when one missed the bucket). A
    bucket is as wide as the slowest rank's sampling interval, or wider so that a metric
    has at most ``max_points`` of them (``bucket_seconds``); x is the mean time of its
    readings. Buckets start at multiples of the width since 1970, so they stay put as the
    run grows. NaN and infinity are left out."""
    stamp = client.dialect.epoch_ms("time")
    spans = await client.query(
        f"SELECT MIN({stamp}), MAX({stamp}), COUNT(*) FROM system_metrics "
        "WHERE run_id = %s GROUP BY rank, host, name", [run_id])
    if not spans:
        return {"bucket_seconds": None, "last": None, "metrics": {}}
    low = min(int(s[0]) for s in spans)
    high = max(int(s[1]) for s in spans)
    intervals = [(int(hi) - int(lo)) / (n - 1) for lo, hi, n in spans if n > 1]
    interval = math.ceil(max(intervals)) if intervals else 1000
    width = max(1, interval, -(-(high - low) // max_points))
    rows = await client.query(
        "SELECT name, i, MIN(v), AVG(v), MAX(v), COUNT(*), AVG(t), SUM(n) FROM ("
        f"SELECT name, rank, host, {stamp} / %s AS i, AVG(value) AS v, AVG({stamp}) AS t, "
        f"COUNT(*) AS n FROM system_metrics WHERE run_id = %s AND value {_FINITE} "
        "GROUP BY name, rank, host, i) AS per_rank GROUP BY name, i ORDER BY name, i",
        [width, run_id])
    out: dict[str, dict[str, Any]] = {}
    for name, _, least, mean, most, ranks, moment, count in rows:
        line = out.setdefault(name, {"time": [], "min": [], "mean": [], "max": [],
                                     "ranks": [], "points": 0, "total": 0})
        line["time"].append(_stamp_ms(float(moment)))
        line["min"].append(float(least))
        line["mean"].append(float(mean))
        line["max"].append(float(most))
        line["ranks"].append(int(ranks))
        line["points"] += 1
        line["total"] += int(count)
    return {"bucket_seconds": width / 1000, "last": _stamp_ms(high), "metrics": out}
