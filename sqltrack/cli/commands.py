"""The ``sqltrack`` commands: one coroutine each, registered in ``COMMANDS``.

Each command gets an open ``AsyncClient`` and the parsed arguments, prints its
result on stdout and returns the exit status; a user-facing problem is a
:class:`CliError` (one line on stderr, status 1). A new command is one
``Command`` entry (see ``sqltrack.cli.parser.Command``).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import PARTITIONS_MAX
from ..errors import RunNotFound
from ..model.maintenance import mark_stale_runs
from ..model.migrations import setup as _setup
from ..model.migrations import setup_reader
from ..read import export as _export
from ..read import queries
from ..schema import base_schema_sql
from ..schema import state as _schema_state
from .checks import CliError, install_command
from .formatting import (
    PROG,
    cell,
    describe,
    format_duration,
    format_run,
    print_json,
    table,
)
from .parser import Command, parse_duration, run_id, status
from .transfer import cmd_sync, sync_arguments

#: The role of ``setup --ui-role`` and ``ui --ui-role`` unless named.
DEFAULT_READER = "sqltrack_reader"

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient
    from ..engines.base import Engine


def _no_run(run_id: int) -> CliError:
    return CliError(f"run {run_id} does not exist (see 'sqltrack runs')")


async def resolve_experiment(client: AsyncClient, ref: str) -> int:
    """The id of the experiment named ``ref``, else of the one whose id is ``ref``."""
    experiment_id = await queries.find_experiment(client, ref)
    if experiment_id is None:
        raise CliError(f"experiment {ref!r} does not exist (see 'sqltrack experiments')")
    return experiment_id


async def _logged_names(client: AsyncClient) -> dict[str, str]:
    """``{name as logged: column}`` from every run's recorded mapping (the integrations')."""
    from ..integrations.names import known_names

    found: dict[str, str] = {}
    for (extras,) in await client.query("SELECT extras FROM runs WHERE extras IS NOT NULL"):
        for column, original in known_names(extras).items():
            found.setdefault(original, column)
    return found


async def _chosen_columns(client: AsyncClient, names: Sequence[str]) -> dict[str, str]:
    """``{name as given: metric column}``: a column name, or a name as logged
    (``train/loss``: the runs' recorded mapping, else the integrations' rule); columns
    of ``metrics`` and long-stored metrics alike."""
    from ..integrations.names import column_name

    columns = await queries.metric_kinds(client)
    chosen: dict[str, str] = {}
    logged: dict[str, str] | None = None
    for name in names:
        if name in columns:
            chosen[name] = name
            continue
        if logged is None:
            logged = await _logged_names(client)
        column = logged.get(name) or column_name(name)
        if column not in columns:
            known = ", ".join(columns) or "none yet"
            raise CliError(f"unknown metric {name!r} (metrics: {known})")
        chosen[name] = column
    return chosen


def _flat(args: Any, prefix: str = "") -> dict[str, Any]:
    """Nested args as ``{"a.b": value}``."""
    if not isinstance(args, dict):
        return {}
    flat: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


async def _names_and_args(client: AsyncClient, run_ids: Sequence[int]
                          ) -> tuple[dict[int, str | None], dict[int, dict[str, Any]]]:
    """Each run's name (``extras["name"]``, as the integrations record it) and its args
    that differ between the runs (flattened with ``.``)."""
    import json

    from ..read.queries import json_column

    names: dict[int, str | None] = {}
    args: dict[int, dict[str, Any]] = {}
    for start in range(0, len(run_ids), 500):
        part = list(run_ids[start:start + 500])
        marks = ", ".join(["%s"] * len(part))
        for key, run_args, extras in await client.query(
                f"SELECT id, args, extras FROM runs WHERE id IN ({marks})", part):
            extras = json_column(extras)
            name = extras.get("name") if isinstance(extras, dict) else None
            names[key] = None if name is None else str(name)
            args[key] = _flat(json_column(run_args))
    keys = sorted({key for flat in args.values() for key in flat})
    differing = [key for key in keys if len({
        json.dumps(flat.get(key, "\0missing"), sort_keys=True, default=str)
        for flat in args.values()}) > 1]
    return names, {run_id: {k: flat[k] for k in differing if k in flat}
                   for run_id, flat in args.items()}


# -- setup --------------------------------------------------------------------
def _setup_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scripts", nargs="*", metavar="SCRIPT", help="SQL migration scripts, in order")
    p.add_argument("--ui-role", nargs="?", const=DEFAULT_READER, default=None, metavar="NAME",
                   help="PostgreSQL: create (or update) the NOLOGIN role the web page runs "
                   f"users' SQL as, allowed only to SELECT sqltrack's tables (default "
                   f"{DEFAULT_READER})")
    p.add_argument("--distribute", action="store_true",
                   help="Citus: distribute the tables of an existing database in place "
                   "(rows kept; a new database is distributed by itself)")
    p.add_argument("--partitions", type=int, default=None, metavar="N",
                   help="PostgreSQL: make metrics and metric_values hash-partitioned by "
                   "run id into N partitions, in place (rows kept; a new database gets "
                   "them from the setting partitions); refused on Citus and SQLite")


async def _distribute(client: AsyncClient) -> str | None:
    """``sqltrack setup --distribute``: distribute an existing sqltrack database on a
    Citus coordinator in place, its rows moved into the shards (one made with the setting
    ``distribute=false``, or before it was a Citus database); the setting does not stop
    it. Returns what was done; ``""`` when the tables were distributed before (nothing to
    do); None when the database is no distributed engine (no ``citus`` extension)."""
    await client.open()

    async def spread(engine: Engine, conn: Any) -> str | None:
        return await _schema_state.distribute(engine, conn, force=True)

    done = await client.connections.with_schema_lock(spread)
    return done


async def _partition(client: AsyncClient, count: int) -> str:
    """``sqltrack setup --partitions N``: convert ``metrics`` and ``metric_values`` of an
    existing database into hash partitions by run id, in place, under the schema lock;
    what was done (``""``: partitioned so before)."""
    if not 1 <= count <= PARTITIONS_MAX:
        raise CliError(f"--partitions {count}: from 1 to {PARTITIONS_MAX}")
    await client.open()

    async def split(engine: Engine, conn: Any) -> str | None:
        base_sql = base_schema_sql(engine.dialect.schema_script)
        return await _schema_state.partition(engine, conn, count, base_sql)

    try:
        done = await client.connections.with_schema_lock(split)
    except ValueError as error:  # Citus, or partitioned into another count
        raise CliError(str(error)) from None
    if done is None:
        raise CliError(f"--partitions: {describe(client)} has no partitioned tables "
                       "(PostgreSQL only)")
    return done


async def cmd_setup(client: AsyncClient, args: argparse.Namespace) -> int:
    """``setup``: base schema (created, upgraded or up to date), then each script once;
    one line each."""
    await client.open()
    print(client.schema_outcome or "base schema up to date")
    if args.distribute:
        done = await _distribute(client)
        if done is None:
            raise CliError("--distribute: this database has no citus extension (no Citus "
                           "coordinator): nothing to distribute")
        print(done or "tables distributed on Citus already: nothing to do")
    if args.partitions is not None:
        print(await _partition(client, args.partitions)
              or f"metrics and metric_values partitioned already ({args.partitions} "
              "partitions): nothing to do")
    for script in args.scripts:
        name = Path(script).name
        if not Path(script).is_file():
            raise CliError(f"migration script {script!r} does not exist")
        if await _setup(client, [script]):
            print(f"applied  {name}")
        else:
            print(f"skipped  {name} (applied before)")
    if args.ui_role is not None:
        try:
            tables = await setup_reader(client, args.ui_role)
        except ValueError as error:
            raise CliError(str(error)) from None
        print(f"reader role {args.ui_role} may SELECT {', '.join(tables)} "
              f"('sqltrack ui' runs users' SQL as it)")
    print(f"schema ready ({describe(client)})")
    return 0


# -- experiments, runs, show --------------------------------------------------
def _json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


async def cmd_experiments(client: AsyncClient, args: argparse.Namespace) -> int:
    """``experiments``: one line per experiment, or JSON."""
    experiments = await queries.list_experiments(client)
    if args.json:
        print_json(experiments)
        return 0
    print(table(
        ["id", "name", "created", "runs", "tags"],
        [[e["id"], e["name"], e["created"], e["runs"], e["tags"]] for e in experiments],
    ))
    return 0


def _runs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", metavar="NAME|ID", help="only runs of this experiment")
    p.add_argument("--status", type=status, help="only runs with this status")
    p.add_argument("--tag", action="append", default=[], help="only runs with this tag "
                   "(repeatable: all must be present)")
    p.add_argument("--metric", nargs="+", default=[], metavar="NAME",
                   help="show the latest value of these metrics (names as logged, "
                   "e.g. train/loss, or columns, e.g. train__loss)")
    _json_argument(p)


async def cmd_runs(client: AsyncClient, args: argparse.Namespace) -> int:
    """``runs``: filtered runs with the latest value of chosen metrics, or JSON."""
    experiment_id = None
    if args.experiment is not None:
        experiment_id = await resolve_experiment(client, args.experiment)
    chosen = await _chosen_columns(client, list(dict.fromkeys(args.metric)))
    columns = await queries.metric_kinds(client)
    metrics = {column: columns[column] for column in dict.fromkeys(chosen.values())}
    runs = await queries.list_runs(client, experiment_id, args.status, args.tag, metrics)
    names, differing = await _names_and_args(client, [r["id"] for r in runs])
    for r in runs:
        latest = r["metrics"]
        r["metrics"] = {name: latest[column] for name, column in chosen.items()}
        r["name"] = names.get(r["id"])
        r["args"] = differing.get(r["id"], {})
    if args.json:
        print_json(runs)
        return 0
    headers = ["id", "experiment", "name", "status", "started", "duration", "tags",
               "args", *chosen]
    rows = [
        [r["id"], r["experiment"], r["name"], r["status"], r["started"],
         format_duration(r["duration_seconds"]), r["tags"],
         " ".join(f"{k}={cell(v)}" for k, v in r["args"].items()), *r["metrics"].values()]
        for r in runs
    ]
    print(table(headers, rows))
    return 0


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", type=run_id, metavar="RUN_ID")
    _json_argument(p)


async def cmd_show(client: AsyncClient, args: argparse.Namespace) -> int:
    """``show``: everything about one run, or JSON."""
    run = await queries.get_run(client, args.run_id)
    if run is None:
        raise _no_run(args.run_id)
    if args.json:
        print_json(run)
    else:
        print(format_run(run))
    return 0


# -- export -------------------------------------------------------------------
def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_ids", type=run_id, nargs="+", metavar="RUN_ID")
    p.add_argument("--format", choices=_export.FORMATS, default=None,
                   help="file format (default: from the file extension, else csv)")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="output file")


async def cmd_export(client: AsyncClient, args: argparse.Namespace) -> int:
    """``export``: metric rows of runs to a csv, jsonl or parquet file (``sqltrack.export``)."""
    try:
        fmt = _export.export_format(args.format, args.output)
        total = await _export.export_runs(
            client, args.run_ids, args.output, fmt, progress=sys.stderr
        )
    except ImportError as error:  # parquet without pyarrow: the message says what to install
        raise CliError(str(error)) from None
    except RunNotFound as error:
        raise _no_run(error.run_id) from None
    runs = len(set(args.run_ids))
    print(f"exported {total} rows of {runs} run{'s' * (runs != 1)} to {args.output} ({fmt})")
    return 0


# -- mark-stale ---------------------------------------------------------------
def _mark_stale_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--older-than", required=True, type=parse_duration, metavar="AGE",
                   help="not updated for this long: 3600, 30m, 1h, 2d ...")
    p.add_argument("--status", type=status, default="NODE_FAIL",
                   help="status to set (default: NODE_FAIL)")
    p.add_argument("--experiment", metavar="NAME|ID", help="only runs of this experiment")
    _json_argument(p)


async def cmd_mark_stale(client: AsyncClient, args: argparse.Namespace) -> int:
    """``mark-stale``: final status for RUNNING runs that stopped updating."""
    experiment_id = None
    if args.experiment is not None:
        experiment_id = await resolve_experiment(client, args.experiment)
    ids = await mark_stale_runs(client, args.older_than, args.status, experiment_id)
    if args.json:
        print_json({"status": args.status, "older_than_seconds": args.older_than, "run_ids": ids})
    elif ids:
        print(f"marked {len(ids)} run{'s' * (len(ids) != 1)} {args.status}: "
              + ", ".join(map(str, ids)))
    else:
        age = format_duration(args.older_than)
        print(f"no stale runs (none RUNNING without an update for {age})")
    return 0


# -- ui -----------------------------------------------------------------------
def _ui_arguments(p: argparse.ArgumentParser) -> None:
    # dest differs from the connection's --host / --port (before the command; after it,
    # --host / --port are these)
    p.add_argument("--host", dest="listen_host", metavar="HOST", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", dest="listen_port", metavar="PORT", type=int, default=8080,
                   help="port to listen on (default: 8080; 0: any free port)")
    p.add_argument("--ui-role", dest="ui_role", metavar="NAME", default=DEFAULT_READER,
                   help="PostgreSQL: the role users' SQL runs as (made by 'sqltrack setup "
                   f"--ui-role'; default {DEFAULT_READER})")
    p.add_argument("--allow-superuser", action="store_true",
                   help="PostgreSQL: run users' SQL (as the reader role) even when the page's "
                   "database user is a superuser")
    p.add_argument("--media-dir", dest="media_dir", metavar="DIR", default=None,
                   help="the folder holding sqltrack-media/ (runs' images, audio and video "
                   "from the wandb-style module; default: beside a SQLite file, else the "
                   "current folder)")


async def cmd_ui(client: AsyncClient, args: argparse.Namespace) -> int:
    """``ui``: serve the read-only web page until Ctrl-C."""
    try:
        from ..ui import allowed_hosts, open_socket, serve, url_of
    except ImportError as error:
        missing = getattr(getattr(error, "__cause__", None), "name", None) or error.name
        raise CliError(f"sqltrack ui needs {missing or 'its extra'}, which is not installed: "
                       f"{install_command('ui')}") from None
    await client.open()  # a bad database fails now, not on the first request
    host, port = args.listen_host, args.listen_port
    try:
        sock = open_socket(host, port)
    except OSError as error:
        raise CliError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    address = str(sock.getsockname()[0])
    if "*" in allowed_hosts(host, address):
        shown = host if host == address else f"{host} ({address})"
        print(f"{PROG}: warning: {shown} is not a loopback address: anyone who can reach "
              "it and has the address with its token can read every experiment",
              file=sys.stderr)
    token = secrets.token_urlsafe(24)
    print(f"sqltrack ui: {url_of(sock)}?token={token} ({describe(client)}); Ctrl-C stops it",
          flush=True)
    await serve(client, host, sock=sock, reader=args.ui_role,
                allow_superuser=args.allow_superuser, token=token, media_root=args.media_dir)
    return 0


#: Every command, in the order ``sqltrack --help`` lists them.
COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command("setup", "create the base schema and apply migration scripts",
                cmd_setup, _setup_arguments),
        Command("experiments", "list experiments", cmd_experiments, _json_argument,
                read_only=True),
        Command("runs", "list runs", cmd_runs, _runs_arguments, read_only=True),
        Command("show", "show one run in detail", cmd_show, _show_arguments, read_only=True),
        Command("export", "export the metrics of runs to a file", cmd_export,
                _export_arguments, read_only=True),
        Command("mark-stale", "give a final status to RUNNING runs that stopped "
                "updating (killed processes)", cmd_mark_stale, _mark_stale_arguments),
        Command("ui", "serve a read-only web page of experiments, runs and metric curves "
                "(needs the ui extra)", cmd_ui, _ui_arguments, read_only=True),
        Command("sync", "copy new and changed experiments, runs, metrics and links from "
                "--from into --to (default: this database)", cmd_sync, sync_arguments,
                connects_itself=True),
    )
}
