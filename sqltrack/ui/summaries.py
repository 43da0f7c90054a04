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

import asyncio
import json
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..read import queries
from ..read.summary import flat_summary
from . import readonly, table_sql
from .api import PLOTTED_KINDS, BadRequest, experiment, idle_seconds
from .identity import color_of, group_key, text_of
from .readonly import User
from .table_sql import Key, Plan, Sql

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


#: The runs whose args / extras keys the column picker offers (the experiment's last).
KEY_RUNS = 1000
#: Rows per page unless the request says otherwise, and the most a page may hold.
PER_PAGE = 100
MAX_PER_PAGE = 1000
#: A sort by a JSON value counts its values first (then reads the runs of those its page
#: spans) when the first SAMPLE_RUNS matching runs hold at most MAX_CLASSES of them and so
#: do all; a page (sorted or grouped) is read so when it spans at most MAX_SPANNED values.
SAMPLE_RUNS = 1000
MAX_CLASSES = 100
MAX_SPANNED = 20


def parse_page(page: str | None, per_page: str | None) -> tuple[int, int]:
    """``page`` (from 1) and ``per_page`` (1..MAX_PER_PAGE, default PER_PAGE)."""
    try:
        number = int(page) if page else 1
        size = int(per_page) if per_page else PER_PAGE
    except ValueError:
        raise BadRequest(f"page and per_page must be integers, not {page!r}, {per_page!r}") \
            from None
    if number < 1 or not 1 <= size <= MAX_PER_PAGE:
        raise BadRequest(f"page must be 1 or more and per_page 1 to {MAX_PER_PAGE}")
    return number, size


def parse_order(text: str | None) -> bool:
    """Whether ``order`` (``asc``/``ascending``, default, or ``desc``/``descending``) is
    descending."""
    if not text or text in ("asc", "ascending"):
        return False
    if text in ("desc", "descending"):
        return True
    raise BadRequest(f"order must be asc or desc, not {text!r}")


def _runs_sql(status: str | None, where: str | None,
              conditions: Sequence[Sql] = ()) -> tuple[list[str | User], list[Any]]:
    """The experiment's runs matching the status, the user's SQL filter (over the
    columns of ``runs``) and ``conditions`` (tags, search: over ``r``, see
    ``table_sql``), as ``r``."""
    runs: list[str | User] = ["(SELECT * FROM runs WHERE experiment_id = %s"]
    params: list[Any] = [EXPERIMENT]
    if status is not None:
        runs.append(" AND status = %s")
        params.append(status)
    if where:
        runs += [" AND (\n", User(where), "\n)"]
    runs.append(") r")
    if conditions:
        runs = ["(SELECT * FROM ", *runs,
                " WHERE " + " AND ".join(c.text for c in conditions) + ") r"]
        params += [p for c in conditions for p in c.params]
    return runs, params


def build_sql(
    columns: list[dict[str, Any]], quote: Any, status: str | None, where: str | None,
    long: frozenset[str] = frozenset(), with_args: bool = False,
    plan: Plan | None = None, descending: bool = False,
    window: tuple[int, int] | None = None, keep_order: str = "",
) -> tuple[list[str | User], list[Any]]:
    """The one SELECT of the table: parts (see ``readonly.compose``) and parameters.

    ``long`` names the metrics stored in ``metric_values`` (the others are columns of
    ``metrics``). The experiment id's parameters are ``EXPERIMENT``. ``args`` is
    selected when a column shows one, or ``with_args`` (a search names one). ``plan``
    (see ``table_sql``): its conditions filter the runs; its group and sort keys order
    them (then id; see ``_order``) and are selected after the columns, so that the rows
    can be put back in order (``table_sql.put_in_order``); ``window`` = (limit, offset)
    reads one page of that order. ``keep_order``: the dialect's (the query is read
    through the page's reader, whose subqueries must keep its order).
    """
    plan = plan or Plan()
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
    for key in _keys(plan):
        for item in key.selected():
            selects.append(item.text)
            params += item.params
        if key is plan.group and key.raw is not None:
            selects.append(key.raw.text)
            params += key.raw.params
    order, order_params = _order(plan, descending)
    runs, run_params = _runs_sql(status, where, plan.conditions)
    if window is not None:  # the page's ids first: the metric subqueries run for its rows
        sorted_runs, sorted_params, every = _sorted_runs(plan, descending, runs, run_params)
        runs = ["(SELECT * FROM runs WHERE id IN (SELECT r.id FROM ", *sorted_runs,
                f" ORDER BY {every} LIMIT %s OFFSET %s)) r"]
        run_params = [*sorted_params, *window]
    params += run_params
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
    parts.append(f" ORDER BY {order}{keep_order}")  # past a byte budget: the last rows
    params += order_params
    return parts, params


def _keys(plan: Plan) -> list[Key]:
    return [key for key in (plan.group, plan.sort) if key is not None]


def _order(plan: Plan, descending: bool, values: dict[int, str] | None = None,
           single: Key | None = None) -> tuple[str, list[Any]]:
    """ORDER BY of the plan: its group (ascending), its sort key (missing values last),
    then id, and the parameters of that text; ``values``: the column of each key's
    ``once`` value (by the key's ``id``), when computed before; ``single``: a key left
    out (one value)."""
    values = values or {}
    items: list[Sql] = []
    for key, way in ((plan.group, False), (plan.sort, descending)):
        if key is not None and key is single:
            continue
        if key is not None and id(key) in values:
            items += key.order_over(way, values[id(key)])
        elif key is not None:
            items += key.order(way)
    items.append(Sql("r.id" + (" DESC" if descending else "")))
    return ", ".join(i.text for i in items), [p for i in items for p in i.params]


#: The columns of ``runs`` that a key without a ``once`` value reads (fixed_key,
#: status_key, metric_key): what the sort of every run carries (not the runs' JSON).
SORTED_COLUMNS = "r.id, r.status, r.time_started, r.time_updated, r.comment"


def _sorted_runs(plan: Plan, descending: bool, runs: list[str | User], params: list[Any]
                 ) -> tuple[list[str | User], list[Any], str]:
    """The runs ``r`` as the database sorts every one of them for a page, their
    parameters, then the ORDER BY (and its parameters, appended): a key's ``once``
    value (PostgreSQL: the JSON value its parts read three times) computed once a run,
    in a subquery that the planner keeps (``OFFSET 0``); not with a key that reads
    other tables for the run (``Key.correlated``: Citus refuses that over a subquery),
    nor for an ascending sort alone on a key an index holds (``Key.indexed``), of runs
    not filtered by tags or a search (then the planner mostly sorts the runs that pass,
    where the ``once`` value is cheaper). The plan's ``single`` key is not sorted by (the
    runs have one value of it): the runs of one value of a sort key are read in id order."""
    keys = [key for key in _keys(plan) if key is not plan.single]
    once = [key for key in keys if key.once is not None]
    if not once or _indexed(plan, descending) or any(key.correlated for key in keys):
        order, order_params = _order(plan, descending, single=plan.single)
        return runs, [*params, *order_params], order
    values = {id(key): f"r.once{i}" for i, key in enumerate(once)}
    columns = ", ".join(f"{key.once.text} AS once{i}" for i, key in enumerate(once)
                        if key.once is not None)
    order, order_params = _order(plan, descending, values, plan.single)
    return ([f"(SELECT {SORTED_COLUMNS}, " + columns + " FROM ", *runs, " OFFSET 0) r"],
            [p for key in once if key.once is not None for p in key.once.params]
            + [*params, *order_params], order)


def _indexed(plan: Plan, descending: bool) -> bool:
    """Whether the page is read in order from an index: sorted alone, ascending, by a key
    an index holds (``Key.indexed``), of runs not filtered by tags or a search."""
    return plan.group is None and plan.sort is not None and plan.sort.indexed \
        and not descending and not plan.conditions


def _spans(plan: Plan, descending: bool) -> bool:
    """Whether the page is read by the values of its key that it spans (``_narrowed``):
    grouped by a ``comparable`` key (the groups are counted anyway), or sorted by one
    alone (not read from an index) whose value's runs an index finds (``Key.contains``;
    SQLite has none: counting the values, a sort there, then reading a value's runs by
    their JSON cost more than the one sort)."""
    if plan.group is not None:
        return plan.group.comparable
    return plan.sort is not None and plan.sort.comparable \
        and plan.sort.contains is not None and not _indexed(plan, descending)


async def available(client: AsyncClient, experiment_id: int,
                    metrics: dict[str, str | None],
                    long: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """The keys of ``args`` / ``extras`` (in the experiment's last KEY_RUNS runs: a page
    of a 100,000-run table reads no more) and the metrics with values in the experiment
    (``long``: the metrics stored in ``metric_values``)."""
    dialect = client.dialect
    union = " UNION ".join(  # the last runs' JSON read in the LIMIT's subquery: an IN
        # list of their ids had PostgreSQL scan every run to join them (60 ms a page)
        f"SELECT '{group}', k.key FROM (SELECT r.{group} FROM runs r "
        f"WHERE r.experiment_id = %s ORDER BY r.id DESC LIMIT %s) r, "
        f"{dialect.json_object_keys('r.' + group)}"
        for group in JSON_GROUPS
    )
    found: dict[str, list[str]] = {group: [] for group in JSON_GROUPS}
    for group, key in await client.query(union, [experiment_id, KEY_RUNS] * len(JSON_GROUPS)):
        found[group].append(key)
    present: set[str] = set()
    columns = [name for name in metrics if name not in long]
    if columns:
        quote = client.dialect.quote_ident
        exists = ", ".join(  # a join: stops at the first row (an IN list is made whole)
            f"EXISTS (SELECT 1 FROM runs r JOIN metrics m ON m.run_id = r.id "
            f"WHERE r.experiment_id = %s AND m.{quote(n)} IS NOT NULL)"
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
    page: int = 1,
    per_page: int = PER_PAGE,
    sort: str | None = None,
    descending: bool = False,
    group: str | None = None,
) -> dict[str, Any]:
    """One page of the runs table: chosen columns (default: tags, the runs' summary items
    and each numeric metric's last value); ``search``: see ``parse_search``.

    Sorted by ``sort`` (``id``, ``name``, ``status``, ``started``, ``updated``,
    ``duration``, ``comment`` or a column's key; missing values last), then id. The
    database filters (tags, search: see ``table_sql``), groups, sorts and reads the page
    alone (``LIMIT``/``OFFSET``; ``read``: the rows it returned), with a count (or a
    grouped count); only what it cannot do here (``_plan``) reads every matching run
    and cuts the page in Python. ``group`` (see ``identity.parse_group``): runs sorted
    by their group first, each with its ``group``, and ``groups`` counts every group."""
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
    sort = sort or "id"
    quote = client.dialect.quote_ident
    plan = _plan(client.engine, quote, sort, terms, tags, group, metrics, long)
    groups: list[dict[str, Any]] | None = None
    if plan is not None:  # the database filters, groups, sorts and reads one page
        window = (per_page, (page - 1) * per_page)
        counted: int | None = None
        read_plan = plan
        if _spans(plan, descending):  # the key's values counted first, then their runs read
            read_plan, window, counted, groups = await _narrowed(
                client, plan, descending, status, where, window, experiment_id, timeout,
                policy)
        parts, params = build_sql(columns, quote, status, where, long, plan=read_plan,
                                  descending=descending, window=window,
                                  keep_order=client.dialect.keep_order)
        fetching = _fetch(client, parts, params, experiment_id, timeout, policy)
        if counted is not None:
            result, total = await fetching, counted
        else:  # the page and the count (or the groups) at once: two connections, two cores
            counting = (_values(client, plan.group, False, status, where, plan, experiment_id,
                                timeout, policy) if plan.group is not None
                        else _count(client, status, where, plan, experiment_id, timeout,
                                    policy))
            result, found = await asyncio.gather(fetching, counting)
            if plan.group is not None:
                assert isinstance(found, list)
                groups = _named(plan.group, found)
                total = sum(g["count"] for g in groups)
            else:
                assert isinstance(found, int)
                total = found
        slots, raw_at = _slots(plan, len(result.columns), descending)
        # Put back in order here too (one page's rows), not redundant with keep_order:
        # keep_order makes the server keep the order in practice (the byte budget cuts
        # the rows in that order; Citus needs it), but only SQLite runs this statement as
        # it is. On PostgreSQL the capped wrapper and the reader's function select from
        # it with no ORDER BY of their own, where SQL promises no order; this sort is
        # what guarantees the page's order (tests/ui/test_ui_table_pages.py checks it).
        rows = table_sql.put_in_order(list(result.rows), slots)
        chosen, with_args = rows, False
    else:  # what the database cannot do here: every matching run, sorted and cut here
        with_args = (any(key not in SEARCH_KEYS for key, _ in terms if key is not None)
                     or (group or "").startswith("args."))
        parts, params = build_sql(columns, quote, status, where, long, with_args,
                                  keep_order=client.dialect.keep_order)
        result = await _fetch(client, parts, params, experiment_id, timeout, policy)
        rows = sorted(result.rows, key=lambda r: r[0], reverse=descending)
        chosen = [row for row in rows
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
        if plan is not None and plan.group is not None:
            record["group"] = _group_text(table_sql.group_name(plan.group, row[raw_at]))
        elif group is not None:
            record["group"] = _group_of(row, group, with_args)
        runs.append(record)
        names.update(record.pop("metric_names"))
    if plan is None:
        runs = _sorted(runs, columns, sort, descending)
        if group is not None:
            counts: dict[str, int] = {}
            for record in runs:
                counts[record["group"]] = counts.get(record["group"], 0) + 1
            order = {key: index for index, key in enumerate(sorted(counts, key=_natural))}
            runs.sort(key=lambda r: order[r["group"]])
            groups = [{"key": key, "count": counts[key]} for key in order]
        total = len(runs)
        runs = runs[(page - 1) * per_page:page * per_page]
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
        "page": page, "per_page": per_page, "total": total,
        "pages": max(1, -(-total // per_page)),
        "sort": sort, "order": "descending" if descending else "ascending",
        "group": group, "groups": groups,
        "truncated": result.note,
        "read": len(result.rows),
    }


async def _fetch(client: AsyncClient, parts: list[str | User], params: list[Any],
                 experiment_id: int, timeout: float | None,
                 policy: readonly.Policy) -> readonly.Result:
    return await readonly.fetch(client, parts,
                                [experiment_id if p is EXPERIMENT else p for p in params],
                                timeout=timeout, policy=policy)


async def _count(client: AsyncClient, status: str | None, where: str | None, plan: Plan,
                 experiment_id: int, timeout: float | None, policy: readonly.Policy) -> int:
    """How many runs match the status, the SQL filter and the plan's conditions."""
    runs, params = _runs_sql(status, where, plan.conditions)
    result = await _fetch(client, ["SELECT count(*) FROM ", *runs], params, experiment_id,
                          timeout, policy)
    return int(result.rows[0][0])


#: A key's value among the matching runs: its parts (as the page's rows carry them), the
#: raw value of one of its runs (see ``table_sql.group_name``) and its number of runs.
Value = tuple[tuple[Any, ...], Any, int]


async def _values(client: AsyncClient, key: Key, descending: bool, status: str | None,
                  where: str | None, plan: Plan, experiment_id: int, timeout: float | None,
                  policy: readonly.Policy, most: int | None = None) -> list[Value] | None:
    """Every value of ``key`` among the matching runs with its count, in the page's order of
    that key (``descending`` or not, missing last): one grouped read of the key (no run
    fetched; JSON read once a run), the raw values of one run a value (JSON read once a
    value). ``most``: None when the runs hold more values than that, or the first
    SAMPLE_RUNS of them do (then they are not counted: a key of many values is sorted
    whole, as fast as it is counted)."""
    assert key.raw is not None
    runs, params = _runs_sql(status, where, plan.conditions)
    by_raw = key.raw_parts is not None  # counted by the raw value, its parts computed here
    chosen = [key.raw] if by_raw else key.selected()
    select = ", ".join(item.text for item in chosen)
    chosen_params = [p for item in chosen for p in item.params]
    parts: list[str | User] = [f"SELECT {select}, count(*)" + ("" if by_raw else ", MIN(r.id)")
                               + " FROM ", *runs]
    all_params = [*chosen_params, *params]
    if most is not None:  # the first runs' values counted first, the rest only if few
        parts += [f" WHERE (SELECT count(*) FROM (SELECT DISTINCT {select} FROM "
                  "(SELECT * FROM ", *runs, " LIMIT %s) r) d) <= %s"]
        all_params += [*chosen_params, *params, SAMPLE_RUNS, most]
    parts.append(" GROUP BY " + ", ".join(str(index + 1) for index in range(len(chosen))))
    if most is not None:
        parts.append(" LIMIT %s")
        all_params.append(most + 1)
    rows = (await _fetch(client, parts, all_params, experiment_id, timeout, policy)).rows
    if most is not None and not 0 < len(rows) <= most:
        return None
    if by_raw:
        assert key.raw_parts is not None
        ordered = table_sql.put_in_order(
            [(0, *key.raw_parts(raw), raw, count) for raw, count in rows],
            [(1, len(key.parts), descending)])
        return [(tuple(row[1:-2]), row[-2], int(row[-1])) for row in ordered]
    ordered = table_sql.put_in_order([(0, *row) for row in rows],
                                     [(1, len(chosen), descending)])
    firsts = [row[-1] for row in ordered]
    raws: dict[int, Any] = {}
    for start in range(0, len(firsts), GROUP_NAMES_PER_QUERY):
        some = firsts[start:start + GROUP_NAMES_PER_QUERY]
        raws.update(await client.query(
            f"SELECT r.id, {key.raw.text} FROM runs r WHERE r.id IN ("
            + ", ".join(["%s"] * len(some)) + ")", [*key.raw.params, *some]))
    return [(tuple(row[1:-2]), raws.get(row[-1]), int(row[-2])) for row in ordered]


def _named(key: Key, values: list[Value]) -> list[dict[str, Any]]:
    """The groups of ``values`` (a key's, in order), each named as ``identity.group_key``
    names it, with its count (values of one name counted together)."""
    counts: dict[str, int] = {}
    for _, raw, count in values:
        name = _group_text(table_sql.group_name(key, raw))
        counts[name] = counts.get(name, 0) + count
    return [{"key": name, "count": count} for name, count in counts.items()]


async def _narrowed(client: AsyncClient, plan: Plan, descending: bool, status: str | None,
                    where: str | None, window: tuple[int, int], experiment_id: int,
                    timeout: float | None, policy: readonly.Policy
                    ) -> tuple[Plan, tuple[int, int], int | None, list[dict[str, Any]] | None]:
    """The plan and window of the page's query, and the count and groups when read here.

    A page grouped or sorted by a ``comparable`` key (a JSON value) whose values are
    counted (a group's always, a sort's when few: ``_values``) reads only the runs of the
    values it spans (``table_sql.span``; at most MAX_SPANNED of them), at its offset among
    them: the database sorts those runs, not every one."""
    limit, offset = window
    key = plan.group or plan.sort
    assert key is not None
    values = await _values(client, key, descending and key is plan.sort, status, where, plan,
                           experiment_id, timeout, policy,
                           None if plan.group is not None else MAX_CLASSES)
    if values is None:
        return plan, window, None, None
    groups = _named(key, values) if plan.group is not None else None
    classes: list[tuple[Any, ...]] = []
    counts: list[int] = []
    for parts, _, count in values:  # values of equal parts (1 and true) sort as one
        if classes and classes[-1] == parts:
            counts[-1] += count
        else:
            classes.append(parts)
            counts.append(count)
    total = sum(counts)
    first, end, before = table_sql.span(counts, offset, limit)
    if end - first > MAX_SPANNED:
        return plan, window, total, groups
    condition = table_sql.class_condition(key, classes[first:end])
    narrowed = Plan([*plan.conditions, condition], plan.group, plan.sort,
                    key if end - first == 1 else None)
    return narrowed, (limit, offset - before), total, groups


#: Groups named by one statement at most.
GROUP_NAMES_PER_QUERY = 500


def _group_text(value: Any) -> str:
    """A group's name as ``identity.group_key`` writes it."""
    return "(none)" if value is None else text_of(value)


def _slots(plan: Plan, width: int, descending: bool
           ) -> tuple[list[tuple[int, int, bool]], int]:
    """Where the plan's keys sit in a row of ``width`` values (see ``build_sql``), as
    ``table_sql.put_in_order`` takes them, and the index of the group's raw value."""
    keys = _keys(plan)
    at = width - sum(len(k.selected()) + (k is plan.group) for k in keys)
    slots, raw_at = [], -1
    for key in keys:
        count = len(key.selected())
        slots.append((at, count, descending if key is plan.sort else False))
        at += count
        if key is plan.group:
            raw_at, at = at, at + 1
    return slots, raw_at


def _plan(engine: str, quote: Any, sort: str, terms: list[Term], tags: Sequence[str],
          group: str | None, metrics: dict[str, str | None],
          long: frozenset[str]) -> Plan | None:
    """What the database does for this table (see ``table_sql``); None when it cannot
    (group by tags, a sort by tags or a summary item, a search for a list or object)."""
    plan = Plan(conditions=[table_sql.tag_condition(engine, tag) for tag in tags])
    for key, value in terms:
        condition = table_sql.search_condition(engine, key, value)
        if condition is None:
            return None
        plan.conditions.append(condition)
    if group is not None:
        head, _, rest = group.partition(".")
        if group == "status":
            plan.group = table_sql.status_key(engine)
        elif group == "group":
            plan.group = table_sql.json_value(engine, "r.extras", "group")
        elif head in JSON_GROUPS:
            plan.group = table_sql.json_value(engine, f"r.{head}", rest)
        if plan.group is None:
            return None
    plan.sort = table_sql.fixed_key(engine, sort)
    if plan.sort is None:
        (column,) = parse_columns([sort], metrics)
        head, name = column["group"], column["name"]
        if head in JSON_GROUPS:
            plan.sort = table_sql.json_value(engine, f"r.{head}", name)
        elif head in AGGREGATES:
            plan.sort = table_sql.metric_key(head, name, column.get("kind"), quote(name),
                                             name in long)
    return plan if plan.sort is not None else None


def _natural(value: Any) -> tuple[int, Any]:
    """Numbers by value before text (a group key such as ``0.01`` or ``adam``)."""
    try:
        return 0, float(value)
    except (TypeError, ValueError):
        return 1, str(value)


def _sorted(runs: list[dict[str, Any]], columns: list[dict[str, Any]], sort: str,
            descending: bool) -> list[dict[str, Any]]:
    """The records by ``sort`` (missing values last), then id."""
    keys = [c["key"] for c in columns]
    if sort in keys:
        index = keys.index(sort)
        value = lambda r: r["values"][index]  # noqa: E731
    elif sort in ("id", "name", "status", "started", "updated"):
        value = lambda r: r[sort]  # noqa: E731
    elif sort == "duration":
        value = lambda r: r["duration_seconds"]  # noqa: E731
    else:
        raise BadRequest(f"unknown sort {sort!r}: use id, name, status, started, updated, "
                         "duration or a shown column's key")

    def key(run: dict[str, Any]) -> tuple[Any, ...]:
        found = value(run)
        if isinstance(found, bool):
            found = int(found)
        if isinstance(found, (int, float)):
            return (0, found, "")
        return (1, 0, "" if found is None else str(found))

    present = [r for r in runs if value(r) is not None]
    ordered = sorted(sorted(present, key=lambda r: r["id"], reverse=descending), key=key,
                     reverse=descending)
    return ordered + sorted((r for r in runs if value(r) is None), key=lambda r: r["id"],
                            reverse=descending)


def _group_of(row: tuple[Any, ...], spec: str, with_args: bool) -> str:
    """The run's group (see ``identity.group_key``) from one fetched row."""
    extras = queries.json_column(row[6])
    args = queries.json_column(row[7]) if with_args else {}
    return group_key(spec, str(row[1]), queries._tags(row[4]),
                     args if isinstance(args, dict) else {},
                     extras if isinstance(extras, dict) else {})


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
