"""Runs and metrics as DataFrames (pandas or polars), for notebooks and analysis.

    frame = await runs_frame(client, "resnet", expand_json=["args"])
    curves = await metrics_frame(client, frame["id"].tolist(), ["train_loss"])

The blocking twins live in ``sqltrack_sync.analysis`` (generated), for a
``sqltrack.Client``. pandas and polars are optional: install the ``pandas`` or
``polars`` extra; neither is imported before one of these functions needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ExperimentNotFound
from . import queries
from .frames import check_backend, make_frame

if TYPE_CHECKING:
    import pandas
    import polars

    from ..client.async_client import AsyncClient

#: The JSON columns of ``runs`` that ``runs_frame(expand_json=...)`` can expand.
JSON_COLUMNS = ("tags", "args", "env", "extras")
#: The columns of ``runs_frame`` before any expansion, with their types.
RUN_COLUMNS = {
    "id": "int", "experiment_id": "int", "status": "str", "time_created": "datetime",
    "time_started": "datetime", "time_updated": "datetime", "comment": "str",
    "tags": None, "args": None, "env": None, "extras": None,
}
KEY_COLUMNS = {"run_id": "int", "step": "int", "progress": "float"}


async def runs_frame(
    client: AsyncClient,
    experiment: int | str | None = None,
    expand_json: bool | list[str] = False,
    backend: str = "pandas",
) -> pandas.DataFrame | polars.DataFrame:
    """The runs of an experiment (by id or name; None: every run) as a DataFrame.

    One row per run, oldest first, with the columns of the ``runs`` table;
    timestamps are timezone-aware (UTC) and the JSON columns ``tags``, ``args``,
    ``env`` and ``extras`` hold decoded objects. ``expand_json=True`` (or a list
    of those column names) replaces each JSON column by one column per key,
    prefixed with the column name: ``args.lr``, ``extras.gpu.name`` (nested
    objects are flattened with dots), ``tags.best`` (True where the run has the
    tag, else False). ``backend`` is ``"pandas"`` or ``"polars"``.
    """
    check_backend(backend)
    expand = _expanded_columns(expand_json)
    sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
    params: list[Any] = []
    if experiment is not None:
        experiment_id = await _experiment_id(client, experiment)
        sql += " WHERE experiment_id = %s"
        params.append(experiment_id)
    rows = await client.query(sql + " ORDER BY id", params)
    columns: dict[str, list[Any]] = {name: [] for name in RUN_COLUMNS}
    for row in rows:
        for (name, kind), value in zip(RUN_COLUMNS.items(), row, strict=True):
            columns[name].append(_run_value(value, kind))
    kinds = dict(RUN_COLUMNS)
    for name in expand:
        _expand(columns, kinds, name)
    return make_frame(columns, kinds, backend)


async def metrics_frame(
    client: AsyncClient,
    run_ids: int | list[int],
    metrics: list[str] | None = None,
    shape: Literal["long", "wide"] = "wide",
    backend: str = "pandas",
) -> pandas.DataFrame | polars.DataFrame:
    """The metric rows of runs as a DataFrame.

    ``shape="wide"``: one row per ``(run_id, step, progress)`` with one column per
    metric (rows where all chosen metrics are missing are left out).
    ``shape="long"``: columns ``run_id, step, progress, metric, value``, one row
    per value that is present. ``metrics`` chooses the metrics (default: every
    metric with a value in these runs), wherever each is stored (a column of
    ``metrics`` or the long table ``metric_values``). Rows come by run (in the order
    given), then step and progress. Unknown runs raise RunNotFound, unknown
    metrics ValueError.
    """
    check_backend(backend)
    if shape not in ("long", "wide"):
        raise ValueError(f"unknown shape {shape!r}: use 'wide' or 'long'")
    ids = [run_ids] if isinstance(run_ids, int) else list(dict.fromkeys(run_ids))
    await queries.check_runs(client, ids)
    columns = await _metric_kinds(client, ids, metrics)
    names = list(columns)
    data: dict[str, list[Any]] = {
        name: [] for name in [*KEY_COLUMNS, *(names if shape == "wide" else ["metric", "value"])]
    }
    async for page in queries.metric_rows(client, ids, columns):
        for run_id, step, progress, *values in page:
            if shape == "wide":
                if all(v is None for v in values):
                    continue
                for key, value in zip(data, (run_id, step, progress, *values), strict=True):
                    data[key].append(value)
                continue
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    for key, item in zip(data, (run_id, step, progress, name, value),
                                         strict=True):
                        data[key].append(item)
    kinds: dict[str, str | None] = {**KEY_COLUMNS, "metric": "str"}
    if shape == "wide":
        kinds.update(columns)
    else:
        kinds["value"] = _common_kind(columns.values())
    return make_frame(data, kinds, backend)


async def query_frame(
    client: AsyncClient,
    sql: str,
    parameters: Sequence[Any] | dict[str, Any] = (),
    backend: str = "pandas",
) -> pandas.DataFrame | polars.DataFrame:
    """The result of any SQL query as a DataFrame (column names from the query).

    ``sql`` uses the driver's own placeholders: ``%s`` / ``%(name)s`` on
    PostgreSQL, ``?`` / ``:name`` on SQLite. Values come as the driver returns
    them (SQLite returns timestamps and JSON as text).
    """
    check_backend(backend)
    async with client.cursor() as cursor:
        await cursor.execute(sql, parameters or None)
        description = cursor.description
        rows = await cursor.fetchall() if description else []
    names = [column[0] for column in description or ()]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    if len(columns) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"the query returns duplicate column names {duplicated}: "
                         "give them distinct aliases (AS ...)")
    return make_frame(columns, {}, backend)


# -- helpers ------------------------------------------------------------------
def _expanded_columns(expand_json: bool | Sequence[str]) -> list[str]:
    if expand_json is True:
        return list(JSON_COLUMNS)
    if expand_json is False or expand_json is None:
        return []
    if isinstance(expand_json, str):
        expand_json = [expand_json]
    unknown = [c for c in expand_json if c not in JSON_COLUMNS]
    if unknown:
        raise ValueError(
            f"cannot expand {unknown[0]!r}: expand_json takes True or a list of "
            f"{', '.join(JSON_COLUMNS)}"
        )
    return list(dict.fromkeys(expand_json))


async def _experiment_id(client: AsyncClient, experiment: int | str) -> int:
    if isinstance(experiment, int) and not isinstance(experiment, bool):
        rows = await client.query("SELECT id FROM experiments WHERE id = %s", [experiment])
        found = rows[0][0] if rows else None
    elif isinstance(experiment, str):
        found = await queries.find_experiment(client, experiment)
    else:
        raise TypeError(f"experiment must be an id or a name, not {experiment!r}")
    if found is None:
        raise ExperimentNotFound(experiment)
    return int(found)


def _run_value(value: Any, kind: str | None) -> Any:
    if kind == "datetime":
        return queries.timestamp(value)
    if kind is None:  # a JSON column
        return queries.json_column(value)
    return value


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value


def _expand(columns: dict[str, list[Any]], kinds: dict[str, str | None], name: str) -> None:
    """Replace the JSON column ``name`` by one column per (flattened) key, in place."""
    flat_rows = []
    for value in columns[name]:
        flat: dict[str, Any] = {}
        if isinstance(value, dict):
            for key, item in value.items():
                _flatten(f"{name}.{key}", item, flat)
        flat_rows.append(flat)
    keys = sorted({key for flat in flat_rows for key in flat})
    missing = False if name == "tags" else None
    position = list(columns).index(name)
    items = list(columns.items())
    expanded = [(key, [flat.get(key, missing) for flat in flat_rows]) for key in keys]
    items[position:position + 1] = expanded
    columns.clear()
    columns.update(items)
    del kinds[name]
    if name == "tags":
        kinds.update({key: "bool" for key in keys})


async def _metric_kinds(
    client: AsyncClient, run_ids: list[int], metrics: Sequence[str] | None
) -> dict[str, str | None]:
    if metrics is None:
        return await queries.export_columns(client, run_ids) if run_ids else {}
    if isinstance(metrics, str):
        metrics = [metrics]
    known = await queries.metric_kinds(client)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(
            f"unknown metric {unknown[0]!r} (metrics: {', '.join(known) or 'none yet'})"
        )
    return {name: known[name] for name in dict.fromkeys(metrics)}


def _common_kind(kinds: Any) -> str | None:
    """The type of a long frame's value column: one kind, floats for numbers, else mixed."""
    distinct: set[str | None] = set(kinds)
    if len(distinct) == 1:
        return distinct.pop()
    if distinct <= {"int", "float"}:
        return "float"
    return None
