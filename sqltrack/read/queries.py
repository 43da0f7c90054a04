"""Read-side queries shared by the ``sqltrack`` command, the web page and the DataFrames.

Listing experiments and runs, one run in detail, metric summaries and paged metric
rows, with values normalised so both engines return the same Python values (SQLite
stores JSON and timestamps as text). Lookups of something missing return None; the
callers turn that into their own kind of error (a CLI message, an HTTP 404, ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..checks import MAX_JSON_DEPTH
from ..errors import RunNotFound

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

#: Metric rows fetched per query when reading whole series (keyset pagination).
METRIC_PAGE = 5_000


# -- values -------------------------------------------------------------------
#: Levels of dicts and lists shown by ``jsonable`` (the response around a value has a
#: few): deeper parts, which sqltrack never writes (``checks.MAX_JSON_DEPTH``) but other
#: writers may, are shown as a note, within Python's recursion limit.
SHOWN_JSON_DEPTH = MAX_JSON_DEPTH + 20
_TOO_DEEP = f"(nested deeper than {MAX_JSON_DEPTH} levels: not shown)"


def json_column(value: Any) -> Any:
    """A JSON column as Python: PostgreSQL returns objects, SQLite returns text (JSON too
    deeply nested for Python's parser: a dict with a note saying so, as the PostgreSQL
    engine loads one)."""
    if not isinstance(value, (str, bytes)):
        return value
    try:
        return json.loads(value)
    except RecursionError:
        return {"(not shown)": f"JSON nested too deeply to load ({len(value)} characters)"}


def timestamp(value: Any) -> datetime | None:
    """A timestamp column as an aware UTC datetime (SQLite stores ISO 8601 text)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def metric_value(value: Any, kind: str | None) -> Any:
    """A metric value as Python, the same on both engines."""
    if value is None:
        return None
    if kind == "float" and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            return value
    if kind == "bool" and isinstance(value, int):
        return bool(value)
    if kind == "datetime":
        return timestamp(value) or value
    return value


def _tags(value: Any) -> list[str]:
    tags = json_column(value)
    return sorted(tags) if isinstance(tags, dict) else []


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` with datetimes as ISO text and NaN/infinity as null (valid JSON); dicts and
    lists past SHOWN_JSON_DEPTH levels as a note."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (dict, list, tuple)) and depth >= SHOWN_JSON_DEPTH:
        return _TOO_DEEP
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        kinds = set(map(type, value))
        if kinds <= _SCALARS:  # a curve's values: no walk a value (a chart's 100,000s)
            if float in kinds and not (kinds <= _NUMBERS and math.isfinite(sum(value))):
                # numbers of a finite sum are finite (a NaN or an infinity makes it one);
                # else each one is looked at
                return [None if type(v) is float and not math.isfinite(v) else v
                        for v in value]
            return list(value)
        return [jsonable(v, depth + 1) for v in value]
    return value


#: The exact types ``jsonable`` keeps as they are (floats: when finite).
_SCALARS = frozenset({int, float, str, bool, type(None)})
_NUMBERS = frozenset({int, float})



# -- where metrics are stored -------------------------------------------------
#: The value columns of the long table ``metric_values``, and which holds each kind.
LONG_VALUES = ("value", "value_int", "value_bool", "value_text", "value_time")
LONG_SLOT = {"float": "value", "int": "value_int", "bool": "value_bool", "str": "value_text",
             "datetime": "value_time"}
#: A ``metric_values`` row (alias ``v``) that holds a value.
_PRESENT = "(" + " OR ".join(f"v.{c} IS NOT NULL" for c in LONG_VALUES) + ")"
#: Long-stored names per statement (more: every name of the run is read, then filtered).
_NAMES_PER_QUERY = 500


# -- queries ------------------------------------------------------------------
async def metric_columns(client: AsyncClient) -> dict[str, str | None]:
    """Metric columns of ``metrics``, name -> kind, sorted by name."""
    columns = await client.metrics.table.columns()
    return dict(sorted(columns.items()))


async def long_metrics(client: AsyncClient) -> dict[str, str]:
    """Metrics stored in the long table ``metric_values``, name -> kind (a name that
    also has a column is read from both places)."""
    rows = await client.query("SELECT name, kind FROM metric_names")
    return {name: kind for name, kind in rows}


async def metric_kinds(client: AsyncClient) -> dict[str, str | None]:
    """Every metric, wherever it is stored, name -> kind, sorted by name."""
    columns = await client.metrics.table.columns()
    return dict(sorted({**await long_metrics(client), **columns}.items()))


def long_latest_sql(kind: str | None) -> str:
    slot = LONG_SLOT.get(kind or "", "value_text")
    return (
        f"(SELECT v.{slot} FROM metric_values v WHERE v.run_id = r.id AND v.name = %s "
        f"AND v.{slot} IS NOT NULL ORDER BY v.step DESC, v.progress DESC LIMIT 1)"
    )


async def metric_series(
    client: AsyncClient, run_id: int, name: str
) -> list[tuple[int, float, Any]]:
    """One run's values of one metric, ``(step, progress, value)`` in key order, read
    straight from where the name lives: its column of ``metrics`` or its rows of
    ``metric_values`` (both, a long value winning, for a name in both places); [] for a
    metric that is in neither.

    The fast way to name any metric from Python: the view ``metric_values_all`` finds a
    column metric on PostgreSQL by turning every row of ``metrics`` into JSON (about 2 s
    for 1,000 rows of 800 columns); this reads the one column (docs/metric-storage.md).
    """
    table = client.metrics.table
    columns = table.known_columns()
    if columns is None or name not in columns:
        columns = await table.columns()  # a column may be new since they were read
    registered = await client.query("SELECT kind FROM metric_names WHERE name = %s", [name])
    found: dict[tuple[int, float], Any] = {}
    if name in columns:  # a name of the catalog: safe to quote
        kind = columns[name]
        quoted = client.dialect.quote_ident(name)
        for step, progress, value in await client.query(
                f"SELECT step, progress, {quoted} FROM metrics WHERE run_id = %s "
                f"AND {quoted} IS NOT NULL ORDER BY step, progress", [run_id]):
            found[(int(step), float(progress))] = metric_value(value, kind)
    if registered:
        kind = registered[0][0]
        slot = LONG_SLOT[kind]  # one of the constant value columns
        for step, progress, value in await client.query(
                f"SELECT step, progress, {slot} FROM metric_values WHERE run_id = %s "
                f"AND name = %s AND {slot} IS NOT NULL ORDER BY step, progress",
                [run_id, name]):
            found[(int(step), float(progress))] = metric_value(value, kind)
        if name in columns:
            found = dict(sorted(found.items()))
    return [(step, progress, value) for (step, progress), value in found.items()]


async def find_experiment(client: AsyncClient, ref: str | int) -> int | None:
    """The id of the experiment named ``ref``, else of the one whose id is ``ref``; None."""
    rows = await client.query("SELECT id FROM experiments WHERE name = %s", [str(ref)])
    if not rows and str(ref).strip().isdigit():
        rows = await client.query("SELECT id FROM experiments WHERE id = %s", [int(ref)])
    return rows[0][0] if rows else None


async def list_experiments(client: AsyncClient) -> list[dict[str, Any]]:
    """Every experiment with its number of runs, oldest first."""
    # A join, not a correlated subquery per experiment (Citus refuses one over a
    # reference table: experiments there).
    rows = await client.query(
        "SELECT e.id, e.name, e.time_created, COALESCE(c.n, 0), e.tags, e.comment "
        "FROM experiments e LEFT JOIN (SELECT experiment_id, COUNT(*) AS n FROM runs "
        "GROUP BY experiment_id) c ON c.experiment_id = e.id ORDER BY e.id"
    )
    return [
        {"id": i, "name": name, "created": timestamp(created), "runs": runs,
         "tags": _tags(tags), "comment": comment}
        for i, name, created, runs, tags, comment in rows
    ]


def _latest_sql(quoted: str) -> str:
    return (
        f"(SELECT m.{quoted} FROM metrics m WHERE m.run_id = r.id AND m.{quoted} IS NOT NULL "
        "ORDER BY m.step DESC, m.progress DESC LIMIT 1)"
    )


async def list_runs(
    client: AsyncClient,
    experiment_id: int | None = None,
    status: str | None = None,
    tags: Sequence[str] = (),
    metrics: dict[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """Runs (oldest first) with the latest value of each metric in ``metrics`` (columns
    of ``metrics`` or long-stored metrics)."""
    metrics = metrics or {}
    columns = await metric_columns(client) if metrics else {}
    selects = []
    params: list[Any] = []
    for name, kind in metrics.items():
        if name in columns:
            selects.append(_latest_sql(client.dialect.quote_ident(name)))
        else:
            selects.append(long_latest_sql(kind))
            params.append(name)
    sql = (
        "SELECT r.id, e.name, r.status, r.time_started, r.time_updated, r.tags"
        + "".join(", " + s for s in selects)
        + " FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE 1 = 1"
    )
    if experiment_id is not None:
        sql += " AND r.experiment_id = %s"
        params.append(experiment_id)
    if status is not None:
        sql += " AND r.status = %s"
        params.append(status)
    runs = [_run_record(row, metrics) for row in await client.query(sql + " ORDER BY r.id", params)]
    return [run for run in runs if set(tags) <= set(run["tags"])]


def _run_record(row: Sequence[Any], metrics: dict[str, str | None]) -> dict[str, Any]:
    run_id, experiment, status, started, updated, tags, *latest = row
    started, updated = timestamp(started), timestamp(updated)
    values = zip(metrics.items(), latest, strict=True)
    return {
        "id": run_id, "experiment": experiment, "status": status, "started": started,
        "updated": updated, "duration_seconds": _seconds(started, updated), "tags": _tags(tags),
        "metrics": {name: metric_value(value, kind) for (name, kind), value in values},
    }


async def get_run(client: AsyncClient, run_id: int) -> dict[str, Any] | None:
    """Everything about one run except its metric rows; None when it does not exist."""
    rows = await client.query(
        "SELECT r.id, r.experiment_id, e.name, r.status, r.time_created, r.time_started, "
        "r.time_updated, r.comment, r.tags, r.args, r.env, r.extras "
        "FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = %s",
        [run_id],
    )
    if not rows:
        return None
    (rid, exp_id, exp_name, status, created, started, updated, comment,
     tags, args, env, extras) = rows[0]
    started, updated = timestamp(started), timestamp(updated)
    links = await client.query(
        "SELECT from_id, kind, to_id FROM run_links WHERE from_id = %s OR to_id = %s "
        "ORDER BY kind, from_id, to_id",
        [run_id, run_id],
    )
    return {
        "id": rid, "experiment_id": exp_id, "experiment": exp_name, "status": status,
        "created": timestamp(created), "started": started, "updated": updated,
        "duration_seconds": _seconds(started, updated), "comment": comment,
        "tags": _tags(tags), "args": json_column(args) or {},
        "env_keys": sorted(json_column(env) or {}), "extras": json_column(extras) or {},
        "links": [{"from": f, "kind": k, "to": t} for f, k, t in links],
        "metrics": await metric_summary(client, run_id),
    }


def _aggregates(quoted: str, kind: str | None) -> list[str]:
    """COUNT, MIN, MAX and the last value of one column (MIN/MAX only for ordered kinds)."""
    value = f"CAST({quoted} AS INTEGER)" if kind == "bool" else quoted
    ordered = kind is not None
    return [
        f"COUNT({quoted})",
        f"MIN({value})" if ordered else "NULL",
        f"MAX({value})" if ordered else "NULL",
        f"(SELECT m.{quoted} FROM metrics m WHERE m.run_id = %s AND m.{quoted} IS NOT NULL "
        "ORDER BY m.step DESC, m.progress DESC LIMIT 1)",
    ]


async def metric_summary(client: AsyncClient, run_id: int) -> list[dict[str, Any]]:
    """count / min / max / last of each metric the run has values in (sorted by name)."""
    summary = await _column_summary(client, run_id)
    summary += await _long_summary(client, run_id, {s["metric"] for s in summary})
    return sorted(summary, key=lambda s: s["metric"])


async def _long_summary(
    client: AsyncClient, run_id: int, done: set[str]
) -> list[dict[str, Any]]:
    """``metric_summary`` of the run's long-stored metrics."""
    kinds = await long_metrics(client)
    if not kinds:
        return []
    aggregates = ", ".join(
        f"COUNT(v.{c}), MIN(v.{c}), MAX(v.{c})"
        for c in ("value", "value_int", "CAST(v.value_bool AS INTEGER)", "value_text",
                  "value_time")
    ).replace("v.CAST(v.value_bool AS INTEGER)", "CAST(v.value_bool AS INTEGER)")
    rows = await client.query(
        f"SELECT v.name, {aggregates} FROM metric_values v WHERE v.run_id = %s "
        "GROUP BY v.name", [run_id])
    last_rows = await client.query(
        f"SELECT v.name, {', '.join('v.' + c for c in LONG_VALUES)} FROM metric_values v "
        f"WHERE v.run_id = %s AND {_PRESENT} AND NOT EXISTS (SELECT 1 FROM metric_values w "
        "WHERE w.run_id = v.run_id AND w.name = v.name AND (w.step > v.step OR "
        "(w.step = v.step AND w.progress > v.progress)) AND "
        + _PRESENT.replace("v.", "w.") + ")", [run_id])
    last = {name: values for name, *values in last_rows}
    summary = []
    for name, *figures in rows:
        kind = kinds.get(name)
        if name in done or kind is None:
            continue
        slot = LONG_VALUES.index(LONG_SLOT[kind])
        count, low, high = figures[3 * slot: 3 * slot + 3]
        if count:
            summary.append({
                "metric": name, "count": count, "min": metric_value(low, kind),
                "max": metric_value(high, kind),
                "last": metric_value(last.get(name, [None] * 5)[slot], kind),
            })
    return summary


async def _column_summary(client: AsyncClient, run_id: int) -> list[dict[str, Any]]:
    """``metric_summary`` of the run's metrics that are columns of ``metrics``."""
    everything = list((await metric_columns(client)).items())
    summary = []
    # Four figures a metric, in statements of at most 1,600 result columns (PostgreSQL's
    # 1,664 target entries, SQLite's 2,000 result columns).
    for start in range(0, len(everything), _SUMMARY_COLUMNS):
        summary += await _column_summary_part(client, run_id,
                                              dict(everything[start:start + _SUMMARY_COLUMNS]))
    return summary


#: Metric columns per statement of ``metric_summary``.
_SUMMARY_COLUMNS = 400


async def _column_summary_part(
    client: AsyncClient, run_id: int, columns: dict[str, str | None]
) -> list[dict[str, Any]]:
    selects = [
        s for name, kind in columns.items()
        for s in _aggregates(client.dialect.quote_ident(name), kind)
    ]
    sql = f"SELECT {', '.join(selects)} FROM metrics WHERE run_id = %s"
    (row,) = await client.query(sql, [run_id] * len(columns) + [run_id])
    summary = []
    for index, (name, kind) in enumerate(columns.items()):
        count, low, high, last = row[4 * index: 4 * index + 4]
        if count:
            summary.append({
                "metric": name, "count": count, "min": metric_value(low, kind),
                "max": metric_value(high, kind), "last": metric_value(last, kind),
            })
    return summary


async def export_columns(client: AsyncClient, run_ids: Sequence[int]) -> dict[str, str | None]:
    """The metrics (columns first, then long-stored ones, each sorted by name) with at
    least one value in these runs."""
    columns = await metric_columns(client)
    marks = ", ".join(["%s"] * len(run_ids))
    found: dict[str, str | None] = {}
    if columns:
        counts = ", ".join(f"COUNT({client.dialect.quote_ident(n)})" for n in columns)
        (row,) = await client.query(
            f"SELECT {counts} FROM metrics WHERE run_id IN ({marks})", list(run_ids)
        )
        found = {name: kind for (name, kind), count in zip(columns.items(), row, strict=True)
                 if count}
    kinds = await long_metrics(client)
    if kinds:
        rows = await client.query(
            f"SELECT DISTINCT v.name FROM metric_values v WHERE v.run_id IN ({marks}) "
            f"AND {_PRESENT}", list(run_ids))
        for name in sorted(r[0] for r in rows):
            if name not in found and name in kinds:
                found[name] = kinds[name]
    return found


async def metric_rows(
    client: AsyncClient, run_ids: Sequence[int], columns: dict[str, str | None]
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Pages of metric rows ``(run_id, step, progress, *columns)``, in key order.

    Keyset pagination over the primary key keeps memory bounded on both engines.
    ``columns`` may name long-stored metrics too (see ``_placed_rows``).
    """
    stored = await metric_columns(client)
    both = await long_among(client, [name for name in columns if name in stored])
    if both or any(name not in stored for name in columns):
        async for page in _placed_rows(client, run_ids, columns, stored, both):
            yield page
        return
    names = "".join(", " + client.dialect.quote_ident(n) for n in columns)
    base = f"SELECT run_id, step, progress{names} FROM metrics WHERE run_id = %s"
    order = f" ORDER BY step, progress LIMIT {METRIC_PAGE}"
    kinds = ["int", "int", "float", *columns.values()]
    for run_id in run_ids:
        rows = await client.query(base + order, [run_id])
        while rows:
            yield [tuple(metric_value(v, k) for v, k in zip(r, kinds, strict=True)) for r in rows]
            if len(rows) < METRIC_PAGE:
                break
            step, progress = rows[-1][1], rows[-1][2]
            rows = await client.query(
                base + " AND (step > %s OR (step = %s AND progress > %s))" + order,
                [run_id, step, step, progress],
            )


_AFTER_KEY = "(step > %s OR (step = %s AND progress > %s))"
_FROM_KEY = "(step > %s OR (step = %s AND progress >= %s))"
_TO_KEY = "(step < %s OR (step = %s AND progress <= %s))"


async def long_among(client: AsyncClient, names: Sequence[str]) -> set[str]:
    """Those of ``names`` registered in ``metric_names`` (stored long, for some runs at
    least: a name's column may have been made by another process after it was
    registered, and both places then hold its values)."""
    found: set[str] = set()
    for start in range(0, len(names), _NAMES_PER_QUERY):
        part = list(names[start:start + _NAMES_PER_QUERY])
        marks = ", ".join(["%s"] * len(part))
        rows = await client.query(f"SELECT name FROM metric_names WHERE name IN ({marks})", part)
        found.update(name for (name,) in rows)
    return found


async def _placed_rows(
    client: AsyncClient, run_ids: Sequence[int], columns: dict[str, str | None],
    stored: dict[str, str | None], both: set[str],
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """``metric_rows`` when some metrics are long-stored (``both``: those also columns):
    each page's keys are the next ``METRIC_PAGE`` keys of either place, then the values
    of both places in that key range are read and put together (a long value wins over
    a column's of the same key)."""
    quote = client.dialect.quote_ident
    in_columns = [n for n in columns if n in stored]
    long = [n for n in columns if n not in stored or n in both]
    position = {name: index for index, name in enumerate(columns)}
    slot = {name: LONG_VALUES.index(LONG_SLOT.get(columns[name] or "", "value_text"))
            for name in long}
    by_name = len(long) <= _NAMES_PER_QUERY
    name_filter = (f" AND v.name IN ({', '.join(['%s'] * len(long))})" if by_name else "")
    name_params = list(long) if by_name else []
    for run_id in run_ids:
        last: tuple[Any, Any] | None = None
        while True:
            after = "" if last is None else " AND " + _AFTER_KEY
            after_params = [] if last is None else [last[0], last[0], last[1]]
            parts = []
            params: list[Any] = []
            if in_columns:
                parts.append(f"SELECT step, progress FROM metrics WHERE run_id = %s{after}")
                params += [run_id, *after_params]
            parts.append(f"SELECT v.step, v.progress FROM metric_values v WHERE v.run_id = %s"
                         f"{name_filter}{after}")
            params += [run_id, *name_params, *after_params]
            keys = await client.query(
                f"SELECT step, progress FROM ({' UNION '.join(parts)}) AS k "
                f"ORDER BY step, progress LIMIT {METRIC_PAGE}", params)
            if not keys:
                break
            first, last = (keys[0][0], keys[0][1]), (keys[-1][0], keys[-1][1])
            span = " AND " + _FROM_KEY + " AND " + _TO_KEY
            span_params = [first[0], first[0], first[1], last[0], last[0], last[1]]
            rows: dict[tuple[Any, Any], list[Any]] = {
                (s, p): [None] * len(columns) for s, p in keys}
            if in_columns:
                names = "".join(", " + quote(n) for n in in_columns)
                for step, progress, *values in await client.query(
                        f"SELECT step, progress{names} FROM metrics WHERE run_id = %s{span}",
                        [run_id, *span_params]):
                    row = rows.get((step, progress))
                    if row is not None:
                        for name, value in zip(in_columns, values, strict=True):
                            row[position[name]] = metric_value(value, columns[name])
            long_rows = await client.query(
                f"SELECT v.step, v.progress, v.name, {', '.join('v.' + c for c in LONG_VALUES)} "
                f"FROM metric_values v WHERE v.run_id = %s{name_filter}{span}",
                [run_id, *name_params, *span_params])
            for step, progress, name, *values in long_rows:
                row = rows.get((step, progress))
                if row is not None and name in slot:
                    value = values[slot[name]]
                    if value is not None:
                        row[position[name]] = metric_value(value, columns[name])
            yield [(run_id, key[0], float(key[1]), *values) for key, values in rows.items()]
            if len(keys) < METRIC_PAGE:
                break


async def check_runs(client: AsyncClient, run_ids: Sequence[int]) -> None:
    """Raise RunNotFound for the first of ``run_ids`` not in the database (TypeError: not an id).

    The one run check of the read side (DataFrames, export, the CLI).
    """
    for run_id in run_ids:
        if not isinstance(run_id, int) or isinstance(run_id, bool):
            raise TypeError(f"run ids must be integers, not {run_id!r}")
    if not run_ids:
        return
    marks = ", ".join(["%s"] * len(run_ids))
    rows = await client.query(f"SELECT id FROM runs WHERE id IN ({marks})", list(run_ids))
    found = {row[0] for row in rows}
    missing = [run_id for run_id in run_ids if run_id not in found]
    if missing:
        raise RunNotFound(missing[0])
