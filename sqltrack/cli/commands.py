"""The ``sqltrack`` commands: one coroutine each, registered in ``COMMANDS``.

Each command gets an open ``AsyncClient`` and the parsed arguments, prints its
result on stdout and returns the exit status; a user-facing problem is a
:class:`CliError` (one line on stderr, status 1). A new command is one
``Command`` entry (see ``sqltrack.cli.parser.Command``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RunNotFound
from ..model.maintenance import mark_stale_runs
from ..model.migrations import setup as _setup
from ..read import export as _export
from ..read import queries
from .checks import CliError
from .formatting import (
    PROG,
    describe,
    format_duration,
    format_run,
    print_json,
    table,
)
from .parser import Command, parse_duration, run_id, status
from .transfer import cmd_sync, sync_arguments

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient


def _no_run(run_id: int) -> CliError:
    return CliError(f"run {run_id} does not exist (see 'sqltrack runs')")


async def resolve_experiment(client: AsyncClient, ref: str) -> int:
    """The id of the experiment named ``ref``, else of the one whose id is ``ref``."""
    experiment_id = await queries.find_experiment(client, ref)
    if experiment_id is None:
        raise CliError(f"experiment {ref!r} does not exist (see 'sqltrack experiments')")
    return experiment_id


async def _chosen_columns(client: AsyncClient, names: Sequence[str]) -> dict[str, str | None]:
    columns = await queries.metric_kinds(client)
    unknown = [n for n in names if n not in columns]
    if unknown:
        known = ", ".join(columns) or "none yet"
        raise CliError(f"unknown metric {unknown[0]!r} (metrics: {known})")
    return {name: columns[name] for name in names}


# -- setup --------------------------------------------------------------------
def _setup_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scripts", nargs="*", metavar="SCRIPT", help="SQL migration scripts, in order")


async def cmd_setup(client: AsyncClient, args: argparse.Namespace) -> int:
    """``setup``: base schema (created, upgraded or up to date), then each script once;
    one line each."""
    await client.open()
    print(client.schema_outcome or "base schema up to date")
    for script in args.scripts:
        name = Path(script).name
        if not Path(script).is_file():
            raise CliError(f"migration script {script!r} does not exist")
        if await _setup(client, [script]):
            print(f"applied  {name}")
        else:
            print(f"skipped  {name} (applied before)")
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
                   help="show the latest value of these metrics")
    _json_argument(p)


async def cmd_runs(client: AsyncClient, args: argparse.Namespace) -> int:
    """``runs``: filtered runs with the latest value of chosen metrics, or JSON."""
    experiment_id = None
    if args.experiment is not None:
        experiment_id = await resolve_experiment(client, args.experiment)
    metrics = await _chosen_columns(client, list(dict.fromkeys(args.metric)))
    runs = await queries.list_runs(client, experiment_id, args.status, args.tag, metrics)
    if args.json:
        print_json(runs)
        return 0
    headers = ["id", "experiment", "status", "started", "updated", "duration", *metrics]
    rows = [
        [r["id"], r["experiment"], r["status"], r["started"], r["updated"],
         format_duration(r["duration_seconds"]), *r["metrics"].values()]
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
    # dest differs from the connection's --host / --port, which go before the command
    p.add_argument("--host", dest="listen_host", metavar="HOST", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", dest="listen_port", metavar="PORT", type=int, default=8080,
                   help="port to listen on (default: 8080; 0: any free port)")


async def cmd_ui(client: AsyncClient, args: argparse.Namespace) -> int:
    """``ui``: serve the read-only web page until Ctrl-C."""
    try:
        from ..ui import allowed_hosts, open_socket, serve, url_of
    except ImportError as error:
        raise CliError(str(error)) from None
    await client.open()  # a bad database fails now, not on the first request
    host, port = args.listen_host, args.listen_port
    try:
        sock = open_socket(host, port)
    except OSError as error:
        raise CliError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    if "*" in allowed_hosts(host):
        print(f"{PROG}: warning: {host} is not a loopback address: anyone who can reach "
              "it can read every experiment (the page has no login)", file=sys.stderr)
    print(f"sqltrack ui: {url_of(sock)} ({describe(client)}); Ctrl-C stops it", flush=True)
    await serve(client, host, sock=sock)
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
