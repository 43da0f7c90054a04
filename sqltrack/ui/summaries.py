"""The runs table of an experiment with the columns a user chose, in one query per page.

A column is named by a key:

- ``args.<key>`` / ``extras.<key>``: a top-level key of the run's ``args`` / ``extras``;
- ``summary.<key>``: an item of the run's summary (wandb's ``run.summary``, kept in
  ``extras["summary"]``; see ``read.summary``);
- ``tags``: the run's tags; ``comment``: its comment;
- ``last.<metric>`` / ``min.<metric>`` / ``max.<metric>``: a metric's last value
  (highest step, then progress), lowest or highest value in the run, wherever the
  metric is stored (a column of ``metrics`` or the long table ``metric_values``).

The runs, their JSON and every chosen metric summary come from one SELECT (the
last values as correlated subqueries on the metrics key, min and max from one
grouped scan per storage place), whatever the number of runs. ``filter`` is the
user's SQL boolean expression over the runs' columns; the whole SELECT then runs
read-only (see ``readonly``), as it does without a filter.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..read import queries
from ..read.summary import flat_summary
from . import readonly
from .api import PLOTTED_KINDS, BadRequest, experiment, idle_seconds
from .identity import color_of
from .readonly import User

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

#: Columns a table may have at most, and those shown when none are chosen.
MAX_COLUMNS = 40
DEFAULT_METRICS = 20
DEFAULT_SUMMARY = 10
AGGREGATES = ("last", "min", "max")
JSON_GROUPS = ("args", "extras")
#: Stands for the experiment id among ``build_sql``'s parameters.
EXPERIMENT = object()
#: The ``extras`` key where integrations record ``{column: original metric name}``.
METRIC_NAMES_KEY = "metric_names"


def parse_columns(keys: Sequence[str], metrics: dict[str, str | None]) -> list[dict[str, Any]]:
    """Column specs of ``keys`` (see the module doc); BadRequest for an unknown one."""
    keys = list(dict.fromkeys(k.strip() for k in keys if k.strip()))
    if len(keys) > MAX_COLUMNS:
        raise BadRequest(f"at most {MAX_COLUMNS} columns at once, not {len(keys)}")
    columns: list[dict[str, Any]] = []
    for key in keys:
        group, _, rest = key.partition(".")
        if key in ("tags", "comment"):
            columns.append({"key": key, "group": key, "name": key})
        elif (group in JSON_GROUPS or group == "summary") and rest:
            columns.append({"key": key, "group": group, "name": rest})
        elif group in AGGREGATES and rest in metrics:
            columns.append({"key": key, "group": group, "name": rest, "kind": metrics[rest]})
        elif group in AGGREGATES:
            raise BadRequest(f"unknown metric {rest!r} in column {key!r}")
        else:
            raise BadRequest(
                f"unknown column {key!r}: use args.<key>, extras.<key>, summary.<key>, tags, "
                "comment, last.<metric>, min.<metric> or max.<metric>"
            )
    return columns


def _last_sql(quoted: str) -> str:
    return (f"(SELECT m.{quoted} FROM metrics m WHERE m.run_id = r.id AND m.{quoted} IS NOT NULL "
            "ORDER BY m.step DESC, m.progress DESC LIMIT 1)")


def _ordered(quoted: str, kind: str | None) -> str:
    return f"CAST(m.{quoted} AS INTEGER)" if kind == "bool" else f"m.{quoted}"


def build_sql(
    columns: list[dict[str, Any]], quote: Any, status: str | None, where: str | None,
    long: frozenset[str] = frozenset(), with_args: bool = False,
) -> tuple[list[str | User], list[Any]]:
    """The one SELECT of the table: parts (see ``readonly.compose``) and parameters.

    ``long`` names the metrics stored in ``metric_values`` (the others are columns of
    ``metrics``). The experiment id's parameters are ``EXPERIMENT``. ``args`` is
    selected when a column shows one, or ``with_args`` (a search names one).
    """
    selects = ["r.id", "r.status", "r.time_started", "r.time_updated", "r.tags", "r.comment",
               "r.extras"]
    params: list[Any] = []
    if with_args or any(c["group"] == "args" for c in columns):
        selects.append("r.args")
    grouped: list[str] = []
    long_grouped: list[str] = []
    long_params: list[Any] = []
    for column in columns:
        group, name, kind = column["group"], column["name"], column.get("kind")
        if group not in AGGREGATES:
            continue
        if name in long:
            slot = queries.LONG_SLOT.get(kind or "", "value_text")
            if group == "last":
                selects.append(queries.long_latest_sql(kind))
                params.append(name)
                continue
            value = f"CAST(v.{slot} AS INTEGER)" if kind == "bool" else f"v.{slot}"
            alias = f"b{len(long_grouped)}"
            long_grouped.append(
                f"{group.upper()}(CASE WHEN v.name = %s THEN {value} END) AS {alias}")
            long_params.append(name)
            selects.append(f"b.{alias}")
        elif group == "last":
            selects.append(_last_sql(quote(name)))
        else:
            alias = f"a{len(grouped)}"
            grouped.append(f"{group.upper()}({_ordered(quote(name), kind)}) AS {alias}")
            selects.append(f"a.{alias}")
    runs: list[str | User] = ["(SELECT * FROM runs WHERE experiment_id = %s"]
    params.append(EXPERIMENT)
    if status is not None:
        runs.append(" AND status = %s")
        params.append(status)
    if where:
        runs += [" AND (\n", User(where), "\n)"]
    runs.append(") r")
    parts: list[str | User] = ["SELECT " + ", ".join(selects) + " FROM ", *runs]
    in_experiment = "IN (SELECT id FROM runs WHERE experiment_id = %s)"
    if grouped:
        parts.append(
            " LEFT JOIN (SELECT m.run_id, " + ", ".join(grouped) + " FROM metrics m "
            f"WHERE m.run_id {in_experiment} GROUP BY m.run_id) a ON a.run_id = r.id"
        )
        params.append(EXPERIMENT)
    if long_grouped:
        names = sorted(set(long_params))
        parts.append(
            " LEFT JOIN (SELECT v.run_id, " + ", ".join(long_grouped) + " FROM metric_values v "
            f"WHERE v.run_id {in_experiment} AND v.name IN ("
            + ", ".join(["%s"] * len(names)) + ") GROUP BY v.run_id) b ON b.run_id = r.id"
        )
        params += [*long_params, EXPERIMENT, *names]
    parts.append(" ORDER BY r.id")
    return parts, params


async def available(client: AsyncClient, experiment_id: int,
                    metrics: dict[str, str | None],
                    long: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """The keys of ``args`` / ``extras`` and the metrics with values in the experiment
    (``long``: the metrics stored in ``metric_values``)."""
    dialect = client.dialect
    union = " UNION ".join(
        f"SELECT '{group}', k.key FROM runs r, {dialect.json_object_keys('r.' + group)} "
        "WHERE r.experiment_id = %s"
        for group in JSON_GROUPS
    )
    found: dict[str, list[str]] = {group: [] for group in JSON_GROUPS}
    for group, key in await client.query(union, [experiment_id] * len(JSON_GROUPS)):
        found[group].append(key)
    present: set[str] = set()
    columns = [name for name in metrics if name not in long]
    if columns:
        quote = client.dialect.quote_ident
        exists = ", ".join(
            f"EXISTS (SELECT 1 FROM metrics m WHERE m.run_id IN "
            f"(SELECT id FROM runs WHERE experiment_id = %s) AND m.{quote(n)} IS NOT NULL)"
            for n in columns
        )
        (row,) = await client.query(f"SELECT {exists}", [experiment_id] * len(columns))
        present.update(name for name, has in zip(columns, row, strict=True) if has)
    if long:
        rows = await client.query(
            "SELECT DISTINCT v.name FROM metric_values v WHERE v.run_id IN "
            "(SELECT id FROM runs WHERE experiment_id = %s)", [experiment_id])
        present.update(name for (name,) in rows if name in long)
    return {**{g: sorted(keys) for g, keys in found.items()},
            "metrics": [name for name in metrics if name in present]}


async def runs_table(
    client: AsyncClient,
    experiment_id: int,
    keys: Sequence[str] = (),
    *,
    status: str | None = None,
    tags: Sequence[str] = (),
    where: str | None = None,
    search: str | None = None,
    timeout: float | None = None,
    policy: readonly.Policy = readonly.DEFAULT_POLICY,
) -> dict[str, Any]:
    """The runs table: chosen columns (default: tags, the runs' summary items and each
    numeric metric's last value); ``search``: see ``parse_search``."""
    info = await experiment(client, experiment_id)
    stored_as_columns = await queries.metric_columns(client)
    metrics = await queries.metric_kinds(client)
    long = frozenset(metrics) - frozenset(stored_as_columns)
    keys_found = await available(client, experiment_id, metrics, long)
    default = not [k for k in keys if k.strip()]
    if default:
        plotted = [n for n in keys_found["metrics"] if metrics[n] in PLOTTED_KINDS]
        keys = ["tags", *(f"last.{n}" for n in plotted[:DEFAULT_METRICS])]
    columns = parse_columns(keys, metrics)
    if where is not None:
        where = readonly.check_text(where, "filter") if where.strip() else None
    terms = parse_search(search)
    with_args = any(key not in SEARCH_KEYS for key, _ in terms if key is not None)
    parts, params = build_sql(columns, client.dialect.quote_ident, status, where, long,
                              with_args)
    params = [experiment_id if p is EXPERIMENT else p for p in params]
    result = await readonly.fetch(client, parts, params, timeout=timeout, policy=policy)
    # By id here too: the reader role's function reads the statement as a subquery, whose
    # ORDER BY the outer SELECT need not keep (Citus merges the shards' rows in any order).
    chosen = [row for row in sorted(result.rows, key=lambda r: r[0])
              if set(tags) <= set(queries._tags(row[4])) and _matches(row, terms, with_args)]
    summary_keys = sorted({key for row in chosen
                           for key in flat_summary(queries.json_column(row[6]))})
    keys_found["summary"] = summary_keys
    if default and summary_keys:  # summary items need no SQL: added after the fetch
        columns[1:1] = parse_columns([f"summary.{k}" for k in summary_keys[:DEFAULT_SUMMARY]],
                                     metrics)
    names: dict[str, str] = {}
    runs = []
    for row in chosen:
        record = _record(row, columns, with_args)
        runs.append(record)
        names.update(record.pop("metric_names"))
    for index, column in enumerate(columns):
        column["label"] = _label(column, names)
        if column["group"] == "summary":
            present = [run["values"][index] for run in runs
                       if run["values"][index] is not None]
            column["numeric"] = bool(present) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
        else:
            column["numeric"] = column["group"] in AGGREGATES and (
                column.get("kind") in PLOTTED_KINDS)
    return {
        "experiment": info,
        "engine": client.engine,
        "filters": {"status": status, "tags": list(tags), "filter": where or "",
                    "search": search or ""},
        "available": keys_found,
        "metric_names": {k: v for k, v in names.items() if k in metrics},
        "plottable": [n for n in keys_found["metrics"] if metrics[n] in PLOTTED_KINDS],
        "columns": columns,
        "runs": runs,
        "truncated": result.note,
    }


#: ``key=value`` search terms about the run itself; any other key is an arg.
SEARCH_KEYS = ("name", "tag", "status")
#: The longest search text accepted.
MAX_SEARCH = 1000

Term = tuple[str | None, str]


def parse_search(text: str | None) -> list[Term]:
    """The search box's terms, all of which a run must match (no SQL involved):

    ``word`` is part of the run's name, one of its tags or its status (any case);
    ``name=x`` / ``tag=x`` / ``status=x`` match that field exactly (any case);
    ``key=value`` matches the arg ``key`` (numbers by value: ``lr=0.1`` finds 0.1,
    ``depth=18`` finds 18; text by any case; ``true``/``false``, ``null``).
    Terms are separated by spaces; quote a term to keep its spaces (``"my run"``).
    """
    if not text or not text.strip():
        return []
    if len(text) > MAX_SEARCH:
        raise BadRequest(f"search is at most {MAX_SEARCH} characters, not {len(text)}")
    try:
        words = shlex.split(text)
    except ValueError:
        raise BadRequest(f"search has a quote without its end: {text!r}") from None
    terms: list[Term] = []
    for word in words:
        key, equals, value = word.partition("=")
        if equals and key.strip():
            terms.append((key.strip(), value.strip()))
        elif word.strip():
            terms.append((None, word.strip()))
    return terms


def _same(stored: Any, wanted: str) -> bool:
    """Whether an arg's value is what the search wrote (numbers by value)."""
    if stored is None:
        return wanted.lower() in ("null", "none", "")
    if isinstance(stored, bool):
        return wanted.lower() == str(stored).lower()
    if isinstance(stored, (int, float)):
        try:
            return float(wanted) == float(stored)
        except ValueError:
            return False
    if isinstance(stored, str):
        return stored.lower() == wanted.lower()
    return json.dumps(stored, sort_keys=True) == wanted


def _matches(row: tuple[Any, ...], terms: list[Term], with_args: bool) -> bool:
    """Whether one fetched row (see ``build_sql``) matches every search term."""
    if not terms:
        return True
    status, tags = str(row[1]), queries._tags(row[4])
    extras = queries.json_column(row[6])
    name = extras.get("name") if isinstance(extras, dict) else None
    name = name if isinstance(name, str) else ""
    args = queries.json_column(row[7]) if with_args else {}
    args = args if isinstance(args, dict) else {}
    for key, value in terms:
        wanted = value.lower()
        if key is None:
            found = (wanted in name.lower() or wanted in status.lower()
                     or any(wanted in t.lower() for t in tags))
        elif key == "name":
            found = name.lower() == wanted
        elif key == "tag":
            found = any(t.lower() == wanted for t in tags)
        elif key == "status":
            found = status.lower() == wanted
        else:
            found = key in args and _same(args[key], value)
        if not found:
            return False
    return True


def _record(row: tuple[Any, ...], columns: list[dict[str, Any]],
            with_args: bool = False) -> dict[str, Any]:
    run_id, status, started, updated, tags, comment, extras, *rest = row
    extras = queries.json_column(extras)
    extras = extras if isinstance(extras, dict) else {}
    args: Any = {}
    if with_args or any(c["group"] == "args" for c in columns):
        args, *rest = rest
        args = queries.json_column(args)
        args = args if isinstance(args, dict) else {}
    started, updated = queries.timestamp(started), queries.timestamp(updated)
    tag_list = queries._tags(tags)
    summary = flat_summary(extras)
    values: list[Any] = []
    summaries = iter(rest)
    for column in columns:
        group = column["group"]
        if group == "tags":
            values.append(", ".join(tag_list))
        elif group == "comment":
            values.append(comment)
        elif group == "args":
            values.append(args.get(column["name"]))
        elif group == "extras":
            values.append(extras.get(column["name"]))
        elif group == "summary":
            values.append(summary.get(column["name"]))
        else:
            value = next(summaries)
            kind = column.get("kind")
            values.append(queries.metric_value(value, "int" if (
                kind == "bool" and group != "last") else kind))
    name = extras.get("name")
    mapping = extras.get(METRIC_NAMES_KEY)
    return {
        "id": run_id, "status": status, "started": started, "updated": updated,
        "duration_seconds": None if started is None or updated is None
        else (updated - started).total_seconds(),
        "idle_seconds": idle_seconds(updated),
        "name": name if isinstance(name, str) else None, "tags": tag_list,
        "color": color_of(run_id), "values": values,
        "metric_names": {str(k): str(v) for k, v in mapping.items()
                         if isinstance(v, str)} if isinstance(mapping, dict) else {},
    }


def _label(column: dict[str, Any], names: dict[str, str]) -> str:
    group, name = column["group"], column["name"]
    if group in AGGREGATES:
        shown = names.get(name, name)
        return shown if group == "last" else f"{group} {shown}"
    if group in JSON_GROUPS or group == "summary":
        return f"{group}.{name}"
    return str(group)
