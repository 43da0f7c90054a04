"""Shared by the sync tests: a source with every kind of data, and a row-by-row comparison.

The comparison reads both databases with the raw drivers (sqlite3, psycopg), maps
ids through the target's ``sync_runs`` (and experiment names), and lists every
difference: experiments, runs and their attributes, metric rows and column types, links.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import sqltrack
from sqltrack.copy.transfer import SyncSummary, sync

from .helpers import json_value, read_raw

#: Column types as the raw drivers report them -> kind.
_SQLITE_KINDS = {"BOOLEAN": "bool", "INTEGER": "int", "REAL": "float", "TEXT": "str",
                 "TIMESTAMP": "datetime"}
_PG_KINDS = {"boolean": "bool", "bigint": "int", "double precision": "float", "text": "str",
             "timestamp with time zone": "datetime"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


async def populate(client: sqltrack.AsyncClient, runs: int = 3, steps: int = 50,
                   prefix: str = "") -> list[int]:
    """Experiments, runs with every attribute, metrics of every kind, links; the run ids."""
    first = await sqltrack.AsyncExperiment.create(client, name=f"{prefix}mnist")
    await sqltrack.experiment_set_comment(client, first.id, "digits")
    await sqltrack.experiment_add_tags(client, first.id, "vision", "small")
    second = await sqltrack.AsyncExperiment.create(client, name=f"{prefix}cifar")
    await sqltrack.experiment_add_link(client, second.id, "follows", first.id)
    await sqltrack.AsyncExperiment.create(client, name=f"{prefix}empty")
    ids = []
    for number in range(runs):
        experiment = first if number % 2 == 0 else second
        run = await experiment.get_run()
        ids.append(run.id)
        await run.start(started=T0 + timedelta(minutes=number), updated=T0)
        await run.add_tags("baseline", f"n{number}")
        await run.add_args({"lr": 0.1 * (number + 1), "layers": [64, 32], "name": "net"})
        await run.add_env({"HOST": f"node{number}", "EMPTY": ""})
        await run.add_extras({"nested": {"a": 1, "b": None}})
        await run.set_comment(f"run {number}: ünïcode")
        await fill_metrics(run, 0, steps)
        await run.add_metrics({"when": T0 + timedelta(seconds=number)}, step=0)
        await run.add_metrics({"phase": "eval", "acc": 0.5}, step=steps // 2, progress=0.5)
        await run.stop(("COMPLETED", "FAILED", "RUNNING")[number % 3], updated=T0)
    await sqltrack.run_add_link(client, ids[-1], "resumes", ids[0])
    return ids


async def sync_databases(source_kw: dict[str, Any], target_kw: dict[str, Any],
                         **options: Any) -> SyncSummary:
    """``sync`` from the database of ``source_kw`` to that of ``target_kw`` (client
    keyword arguments), each through a client of its own, closed afterwards."""
    source, target = sqltrack.AsyncClient(**source_kw), sqltrack.AsyncClient(**target_kw)
    try:
        return await sync(source, target, **options)
    finally:
        await source.close()
        await target.close()


async def fill_metrics(run: sqltrack.AsyncRun, start: int, stop: int) -> None:
    """Rows of float/int/bool/str metrics (and a NaN, infinities and gaps) for steps start..stop."""
    for step in range(start, stop):
        values: dict[str, Any] = {"loss": 1.0 / (step + 1), "seen": step * 32,
                                  "best": step % 7 == 0, "phase": "train"}
        if step % 10 == 3:
            values["loss"] = math.nan
        if step % 10 == 4:
            values["loss"] = math.inf
        if step % 5 == 1:
            del values["seen"]
        await run.add_metrics(values, step=step, updated=None)


# -- reading ------------------------------------------------------------------
def _kinds(kw: dict[str, Any]) -> dict[str, str | None]:
    if kw["engine"] == "sqlite":
        rows = read_raw(kw, "SELECT name, type FROM pragma_table_info('metrics')")
        return {n: _SQLITE_KINDS.get(str(t).upper()) for n, t in rows
                if n not in ("run_id", "step", "progress")}
    rows = read_raw(kw, "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = 'metrics'")
    return {n: _PG_KINDS.get(t) for n, t in rows if n not in ("run_id", "step", "progress")}


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(timezone.utc)


def _value(value: Any, kind: str | None) -> Any:
    if value is None:
        return None
    if kind == "float":
        return float(value)  # SQLite keeps a NaN as the text 'NaN'
    if kind == "bool":
        return bool(value)
    if kind == "datetime":
        return _time(value)
    return value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def source_key(kw: dict[str, Any]) -> str:
    return read_raw(kw, "SELECT source_key FROM sync_source")[0][0]


def run_map(source_kw: dict[str, Any], target_kw: dict[str, Any]) -> dict[int, int]:
    rows = read_raw(target_kw, "SELECT source_run_id, target_run_id FROM sync_runs "
                               "WHERE source_key = %s", [source_key(source_kw)])
    return dict(rows)


def metric_row_count(kw: dict[str, Any]) -> int:
    return read_raw(kw, "SELECT COUNT(*) FROM metrics")[0][0]


def differences(source_kw: dict[str, Any], target_kw: dict[str, Any]) -> list[str]:
    """Every way the target differs from the source (empty: equal, after id remapping)."""
    problems: list[str] = []
    mapping = run_map(source_kw, target_kw)
    experiments = {}
    target_experiments = {
        name: (i, _time(c), comment, json_value(tags))
        for i, name, c, comment, tags in read_raw(
            target_kw, "SELECT id, name, time_created, comment, tags FROM experiments")
    }
    for i, name, created, comment, tags in read_raw(
            source_kw, "SELECT id, name, time_created, comment, tags FROM experiments"):
        there = target_experiments.get(name)
        if there is None:
            problems.append(f"experiment {name!r} missing")
            continue
        experiments[i] = there[0]
        if there[1:] != (_time(created), comment, json_value(tags)):
            problems.append(f"experiment {name!r}: {there[1:]} != "
                            f"{(_time(created), comment, json_value(tags))}")
    columns = "experiment_id, status, time_created, time_started, time_updated, comment, " \
              "tags, args, env, extras"
    source_runs = read_raw(source_kw, f"SELECT id, {columns} FROM runs ORDER BY id")
    if sorted(mapping) != [r[0] for r in source_runs]:
        problems.append(f"mapped source runs {sorted(mapping)} != {[r[0] for r in source_runs]}")
    for row in source_runs:
        target_id = mapping.get(row[0])
        found = read_raw(target_kw, f"SELECT id, {columns} FROM runs WHERE id = %s", [target_id])
        if not found:
            problems.append(f"run {row[0]}: no target run")
            continue
        want, got = _run_values(row, experiments), _run_values(found[0], None)
        if want != got:
            problems.append(f"run {row[0]} -> {target_id}: {got} != {want}")
    source_kinds, target_kinds = _kinds(source_kw), _kinds(target_kw)
    for source_id, target_id in mapping.items():
        problems += _metric_differences(source_kw, target_kw, source_id, target_id,
                                        source_kinds, target_kinds)
    for table, ids in (("run_links", mapping), ("experiment_links", experiments)):
        want = {(ids.get(f), k, ids.get(t)) for f, k, t in
                read_raw(source_kw, f"SELECT from_id, kind, to_id FROM {table}")}
        targets = set(ids.values())
        got = {tuple(r) for r in read_raw(target_kw, f"SELECT from_id, kind, to_id FROM {table}")
               if r[0] in targets or r[2] in targets}
        if want != got:
            problems.append(f"{table}: {got} != {want}")
    return problems


def _run_values(row: tuple, experiments: dict[int, int] | None) -> tuple:
    _, experiment, status, created, started, updated, comment, tags, args, env, extras = row
    if experiments is not None:
        experiment = experiments.get(experiment)
    return (experiment, status, _time(created), _time(started), _time(updated), comment,
            *(json_value(v) for v in (tags, args, env, extras)))


def _long_kind(values: tuple) -> tuple[Any, str | None]:
    """The value of a ``metric_values`` row and its kind (one slot holds it)."""
    for value, kind in zip(values, ("float", "int", "bool", "str", "datetime"), strict=True):
        if value is not None:
            return value, kind
    return None, None


def metric_values_of(kw: dict[str, Any], run_id: int, kinds: dict[str, str | None]
                     ) -> tuple[dict[tuple, dict[str, Any]], dict[str, str | None]]:
    """A run's metric values wherever stored: ``{(step, progress): {name: value}}`` (keys:
    the rows of ``metrics`` and the keys of ``metric_values`` that hold a value) and
    ``{name: kind}`` of the names with a value (a long value wins over a column's)."""
    names = list(kinds)
    quoted = "".join(f', "{n}"' for n in names)
    rows: dict[tuple, dict[str, Any]] = {}
    used: dict[str, str | None] = {}
    for r in read_raw(kw, f"SELECT step, progress{quoted} FROM metrics WHERE run_id = %s",
                      [run_id]):
        values = rows.setdefault((r[0], float(r[1])), {})
        for name, value in zip(names, r[2:], strict=True):
            if value is not None:
                values[name] = _value(value, kinds[name])
                used[name] = kinds[name]
    for step, progress, name, *slots in read_raw(
            kw, "SELECT step, progress, name, value, value_int, value_bool, value_text, "
                "value_time FROM metric_values WHERE run_id = %s", [run_id]):
        value, kind = _long_kind(tuple(slots))
        if value is not None:
            rows.setdefault((step, float(progress)), {})[name] = _value(value, kind)
            used[name] = kind
    return rows, used


def _metric_differences(source_kw, target_kw, source_id, target_id, source_kinds,
                        target_kinds) -> list[str]:
    """The run's metric values, wherever each database stores them (a column of
    ``metrics`` or rows of ``metric_values``), compared key by key."""
    problems = []
    want, want_kinds = metric_values_of(source_kw, source_id, source_kinds)
    got, got_kinds = metric_values_of(target_kw, target_id, target_kinds)
    for name, kind in want_kinds.items():
        if got_kinds.get(name, kind) != kind:
            problems.append(f"metric {name}: {got_kinds.get(name)} on the target, "
                            f"{kind} on the source")
    if set(want) != set(got):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        problems.append(f"run {source_id}: metric keys missing {missing[:5]}, extra {extra[:5]}")
    for key, values in want.items():
        there = got.get(key)
        if there is None:
            continue
        for name in sorted(set(values) | set(there)):
            if name not in want_kinds:
                continue  # a metric the source does not have: the target's own
            a, b = values.get(name), there.get(name)
            if not ((a is None and b is None) or (a is not None and b is not None
                                                  and _equal(a, b))):
                problems.append(f"run {source_id} step {key} {name}: {b!r} != {a!r}")
    return problems
