"""The ``sqltrack`` command: set up a database, list and inspect runs, export metrics.

Connection options come before the command (``sqltrack --engine sqlite --dbpath
runs.db runs``); any option not given falls back to ``SQLTRACK_DSN_*`` variables
and the config file, exactly as for ``AsyncClient``. Every command first names
its database in one line on stderr; only ``setup`` and ``mark-stale`` create
sqltrack's tables (the read-only commands refuse a database without them and say
how to point them elsewhere). Errors print one line to stderr and exit with
status 1 (2 for a wrong command line); passwords are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from . import config as _config
from . import queries
from .client import AsyncClient
from .environment import mask_passwords
from .errors import SchemaMissing
from .maintenance import mark_stale_runs
from .queries import (  # noqa: F401 - re-exported: the CLI's helpers live in queries
    export_columns,
    find_experiment,
    json_column,
    jsonable,
    list_experiments,
    list_runs,
    metric_columns,
    metric_rows,
    metric_summary,
    metric_value,
    timestamp,
)
from .schema import setup as _setup
from .values import STATUSES

PROG = "sqltrack"
#: Rows between progress lines when exporting.
PROGRESS_EVERY = 10_000
FORMATS = ("csv", "jsonl", "parquet")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SECRET_PATTERN = re.compile(r"((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s,;)]+)", re.I)
_URI_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@\s]+)(@)")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# -- argument parsing ---------------------------------------------------------
def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {key.strip()!r} without '='")
    return key.strip().lower(), value


def parse_duration(text: str) -> float:
    """Seconds in ``3600``, ``90s``, ``30m``, ``1.5h``, ``2d``, ``1w`` or ``1h30m``."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use seconds or units s/m/h/d/w, e.g. 3600, 30m, 1h30m"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _status(text: str) -> str:
    status = text.strip().upper()
    if status not in STATUSES:
        raise argparse.ArgumentTypeError(
            f"unknown status {text!r}: use one of {', '.join(STATUSES)}"
        )
    return status


def _run_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"run id must be an integer, not {text!r}") from None


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "connection (default: SQLTRACK_DSN_* environment, then the config file)"
    )
    group.add_argument("--engine", choices=_config.ENGINES, help="database engine")
    group.add_argument("--dbpath", help="SQLite database file")
    group.add_argument("--config", metavar="PATH", help="config file of key=value lines")
    for name in ("host", "port", "user", "dbname"):
        group.add_argument(f"--{name}", help=f"PostgreSQL {name}")
    group.add_argument("--schema", help="PostgreSQL schema (search_path)")
    group.add_argument(
        "-o", "--option", dest="options", metavar="KEY=VALUE", type=_key_value,
        action="append", default=[], help="any libpq keyword or client setting (repeatable)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("setup", help="create the base schema and apply migration scripts")
    p.add_argument("scripts", nargs="*", metavar="SCRIPT", help="SQL migration scripts, in order")

    p = sub.add_parser("experiments", help="list experiments")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--experiment", metavar="NAME|ID", help="only runs of this experiment")
    p.add_argument("--status", type=_status, help="only runs with this status")
    p.add_argument("--tag", action="append", default=[], help="only runs with this tag "
                   "(repeatable: all must be present)")
    p.add_argument("--metric", nargs="+", default=[], metavar="NAME",
                   help="show the latest value of these metrics")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("show", help="show one run in detail")
    p.add_argument("run_id", type=_run_id, metavar="RUN_ID")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("export", help="export the metrics of runs to a file")
    p.add_argument("run_ids", type=_run_id, nargs="+", metavar="RUN_ID")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="file format (default: from the file extension, else csv)")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="output file")

    p = sub.add_parser("mark-stale", help="give a final status to RUNNING runs that stopped "
                       "updating (killed processes)")
    p.add_argument("--older-than", required=True, type=parse_duration, metavar="AGE",
                   help="not updated for this long: 3600, 30m, 1h, 2d ...")
    p.add_argument("--status", type=_status, default="NODE_FAIL",
                   help="status to set (default: NODE_FAIL)")
    p.add_argument("--experiment", metavar="NAME|ID", help="only runs of this experiment")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("ui", help="serve a read-only web page of experiments, runs and "
                       "metric curves (needs the ui extra)")
    # dest differs from the connection's --host / --port, which go before the command
    p.add_argument("--host", dest="listen_host", metavar="HOST", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", dest="listen_port", metavar="PORT", type=int, default=8080,
                   help="port to listen on (default: 8080; 0: any free port)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sqltrack`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and maintain a sqltrack database (PostgreSQL or SQLite).",
        epilog="Connection options go before the command, e.g. "
        "'sqltrack --engine sqlite --dbpath runs.db runs'.",
    )
    _add_connection_options(parser)
    _add_commands(parser)
    return parser


def client_kwargs(args: argparse.Namespace) -> dict[str, str]:
    """Keyword arguments for AsyncClient: only the connection options that were given."""
    kwargs = {
        name: getattr(args, name)
        for name in ("engine", "dbpath", "host", "port", "user", "dbname", "schema")
        if getattr(args, name) is not None
    }
    kwargs.update(dict(args.options))
    return kwargs


# -- secrets ------------------------------------------------------------------
def _secret_values(args: argparse.Namespace) -> set[str]:
    """Every password the settings may contain (given, environment or config file)."""
    values = {v for k, v in args.options if k in _config.SECRET_KEYS}
    values |= {
        v for k, v in os.environ.items()
        if k.startswith(_config.ENV_PREFIX) and k[len(_config.ENV_PREFIX):].lower()
        in _config.SECRET_KEYS
    }
    try:
        file_values = _config._file_values(args.config)
    except Exception:
        file_values = {}
    values |= {str(v) for k, v in file_values.items() if k in _config.SECRET_KEYS}
    return {v for v in values if v}


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without passwords: ``password=...``, URI passwords and known secret values."""
    text = _SECRET_PATTERN.sub(r"\1***", text)
    text = _URI_PASSWORD.sub(r"\1***\3", text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


# -- values -------------------------------------------------------------------
def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m07s``, ``2h05m00s``, ``1d02h03m``."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    sign, total = ("-", -total) if total < 0 else ("", total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{sign}{minutes}m{secs:02d}s"
    return f"{sign}{secs}s"


def cell(value: Any) -> str:
    """One value as table text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return " ".join(str(value).split())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows aligned in columns under a header; numbers right-aligned."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(
            isinstance(r[i], (int, float)) and not isinstance(r[i], bool) or r[i] is None
            for r in rows
        )
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        columns = zip(values, widths, numeric, strict=True)
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in columns).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in texts)])


def print_json(value: Any, out: TextIO | None = None) -> None:
    """Print ``value`` as indented JSON."""
    print(json.dumps(jsonable(value), indent=2, ensure_ascii=False, default=str),
          file=out or sys.stdout)


# -- queries ------------------------------------------------------------------
async def _chosen_columns(client: AsyncClient, names: Sequence[str]) -> dict[str, str | None]:
    columns = await metric_columns(client)
    unknown = [n for n in names if n not in columns]
    if unknown:
        known = ", ".join(columns) or "none yet"
        raise CliError(f"unknown metric {unknown[0]!r} (metrics: {known})")
    return {name: columns[name] for name in names}


async def resolve_experiment(client: AsyncClient, ref: str) -> int:
    """The id of the experiment named ``ref``, else of the one whose id is ``ref``."""
    experiment_id = await find_experiment(client, ref)
    if experiment_id is None:
        raise CliError(f"experiment {ref!r} does not exist (see 'sqltrack experiments')")
    return experiment_id


async def get_run(client: AsyncClient, run_id: int) -> dict[str, Any]:
    """Everything about one run except its metric rows; CliError when it does not exist."""
    run = await queries.get_run(client, run_id)
    if run is None:
        raise CliError(f"run {run_id} does not exist (see 'sqltrack runs')")
    return run


async def _check_runs(client: AsyncClient, run_ids: Sequence[int]) -> None:
    marks = ", ".join(["%s"] * len(run_ids))
    rows = await client.query(f"SELECT id FROM runs WHERE id IN ({marks})", list(run_ids))
    missing = sorted(set(run_ids) - {r[0] for r in rows})
    if missing:
        raise CliError(f"run {missing[0]} does not exist (see 'sqltrack runs')")


# -- export writers -----------------------------------------------------------
def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class CsvWriter:
    """Comma-separated values with a header row."""

    def __init__(self, path: Path, columns: list[str], kinds: list[str | None]) -> None:
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(columns)

    def write(self, rows: list[tuple]) -> None:
        self._csv.writerows([_csv_value(v) for v in row] for row in rows)

    def close(self) -> None:
        self._file.close()


class JsonlWriter:
    """One JSON object per line (NaN and infinity as null)."""

    def __init__(self, path: Path, columns: list[str], kinds: list[str | None]) -> None:
        self._file = open(path, "w", encoding="utf-8")
        self._columns = columns

    def write(self, rows: list[tuple]) -> None:
        for row in rows:
            record = jsonable(dict(zip(self._columns, row, strict=True)))
            self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        self._file.close()


class ParquetWriter:
    """Apache Parquet through pyarrow, one row group per page."""

    def __init__(self, path: Path, columns: list[str], kinds: list[str | None]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {
            "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
            "str": pa.string(), "datetime": pa.timestamp("us", tz="UTC"),
        }
        self._pa = pa
        self._text = [kind not in types for kind in kinds]
        fields = zip(columns, kinds, strict=True)
        self._schema = pa.schema([(c, types.get(k, pa.string())) for c, k in fields])
        self._writer = pq.ParquetWriter(str(path), self._schema)

    def write(self, rows: list[tuple]) -> None:
        arrays = []
        for index, field in enumerate(self._schema):
            values = [row[index] for row in rows]
            if self._text[index]:
                values = [None if v is None else str(v) for v in values]
            arrays.append(self._pa.array(values, type=field.type))
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


WRITERS: dict[str, Callable[..., Any]] = {
    "csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter,
}


def export_format(requested: str | None, path: str) -> str:
    """The export format: as requested, else from the file extension, else csv."""
    fmt = requested or {".jsonl": "jsonl", ".parquet": "parquet"}.get(Path(path).suffix, "csv")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise CliError(
                "parquet export needs pyarrow, which is not installed: "
                "pip install 'sqltrack[parquet]' (or use --format csv / jsonl)"
            ) from None
    return fmt


async def export(
    client: AsyncClient, run_ids: Sequence[int], fmt: str, path: str,
    progress: TextIO | None = None,
) -> int:
    """Write the metric rows of runs to ``path``; return the number of rows.

    The file appears complete or not at all (written aside, then renamed).
    """
    run_ids = list(dict.fromkeys(run_ids))
    await _check_runs(client, run_ids)
    columns = await export_columns(client, run_ids)
    names = ["run_id", "step", "progress", *columns]
    kinds = ["int", "int", "float", *columns.values()]
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    writer = WRITERS[fmt](partial, names, kinds)
    total = 0
    try:
        async for rows in metric_rows(client, run_ids, columns):
            writer.write(rows)
            before, total = total, total + len(rows)
            if progress is not None and total // PROGRESS_EVERY > before // PROGRESS_EVERY:
                print(f"exported {total} rows ...", file=progress, flush=True)
        writer.close()
        os.replace(partial, target)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return total


# -- commands -----------------------------------------------------------------
async def cmd_setup(client: AsyncClient, args: argparse.Namespace) -> int:
    """``setup``: base schema (created, upgraded or up to date), then each script once;
    one line each."""
    engine = await client._opened_engine()
    print(engine.schema_outcome or "base schema up to date")
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


async def cmd_experiments(client: AsyncClient, args: argparse.Namespace) -> int:
    """``experiments``: one line per experiment, or JSON."""
    experiments = await list_experiments(client)
    if args.json:
        print_json(experiments)
        return 0
    print(table(
        ["id", "name", "created", "runs", "tags"],
        [[e["id"], e["name"], e["created"], e["runs"], e["tags"]] for e in experiments],
    ))
    return 0


async def cmd_runs(client: AsyncClient, args: argparse.Namespace) -> int:
    """``runs``: filtered runs with the latest value of chosen metrics, or JSON."""
    experiment_id = None
    if args.experiment is not None:
        experiment_id = await resolve_experiment(client, args.experiment)
    metrics = await _chosen_columns(client, list(dict.fromkeys(args.metric)))
    runs = await list_runs(client, experiment_id, args.status, args.tag, metrics)
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


def _show_mapping(title: str, mapping: dict[str, Any]) -> list[str]:
    if not mapping:
        return [f"{title:<10} -"]
    lines = [title]
    width = max(len(str(k)) for k in mapping)
    for key, value in mapping.items():
        text = json.dumps(jsonable(value), ensure_ascii=False, default=str)
        lines.append(f"  {str(key):<{width}}  {text}")
    return lines


def _show_links(run: dict[str, Any]) -> list[str]:
    if not run["links"]:
        return ["links      -"]
    lines = ["links"]
    for link in run["links"]:
        if link["from"] == run["id"]:
            lines.append(f"  --{link['kind']}--> run {link['to']}")
        else:
            lines.append(f"  <--{link['kind']}-- run {link['from']}")
    return lines


def format_run(run: dict[str, Any]) -> str:
    """The text of ``sqltrack show``."""
    fields = [
        ("experiment", f"{run['experiment']} (id {run['experiment_id']})"),
        ("status", run["status"]), ("created", cell(run["created"])),
        ("started", cell(run["started"])), ("updated", cell(run["updated"])),
        ("duration", format_duration(run["duration_seconds"])),
        ("comment", cell(run["comment"])), ("tags", cell(run["tags"])),
    ]
    lines = [f"run {run['id']}"] + [f"{k:<10} {v or '-'}" for k, v in fields]
    lines += _show_mapping("args", run["args"])
    keys = ", ".join(run["env_keys"]) or "-"
    lines += textwrap.wrap(keys, 88, initial_indent="env keys   ", subsequent_indent=" " * 11)
    lines += _show_mapping("extras", run["extras"])
    lines += _show_links(run)
    if not run["metrics"]:
        lines.append("metrics    -")
    else:
        lines.append("metrics")
        rows = [[m["metric"], m["count"], m["min"], m["max"], m["last"]] for m in run["metrics"]]
        summary = table(["metric", "count", "min", "max", "last"], rows)
        lines += ["  " + line for line in summary.splitlines()]
    return "\n".join(lines)


async def cmd_show(client: AsyncClient, args: argparse.Namespace) -> int:
    """``show``: everything about one run, or JSON."""
    run = await get_run(client, args.run_id)
    if args.json:
        print_json(run)
    else:
        print(format_run(run))
    return 0


async def cmd_export(client: AsyncClient, args: argparse.Namespace) -> int:
    """``export``: metric rows of runs to a csv, jsonl or parquet file."""
    fmt = export_format(args.format, args.output)
    folder = Path(args.output).absolute().parent
    if not folder.is_dir():
        raise CliError(f"cannot write {args.output!r}: folder {str(folder)!r} does not exist")
    total = await export(client, args.run_ids, fmt, args.output, progress=sys.stderr)
    runs = len(set(args.run_ids))
    print(f"exported {total} rows of {runs} run{'s' * (runs != 1)} to {args.output} ({fmt})")
    return 0


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


async def cmd_ui(client: AsyncClient, args: argparse.Namespace) -> int:
    """``ui``: serve the read-only web page until Ctrl-C."""
    try:
        from .ui import allowed_hosts, open_socket, serve, url_of
    except ImportError as error:
        raise CliError(str(error)) from None
    await client._opened_engine()  # a bad database fails now, not on the first request
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


COMMANDS = {
    "setup": cmd_setup,
    "experiments": cmd_experiments,
    "runs": cmd_runs,
    "show": cmd_show,
    "export": cmd_export,
    "mark-stale": cmd_mark_stale,
    "ui": cmd_ui,
}


# -- connecting and running ---------------------------------------------------
#: Commands that only read: they never create tables (only ``setup`` does).
READ_ONLY = frozenset({"experiments", "runs", "show", "export", "ui"})
#: How to point a command at another database (part of the "no tables" error).
WHERE_HINT = (
    "point sqltrack elsewhere with '--engine sqlite --dbpath FILE' or "
    "'--host HOST --dbname NAME [--schema NAME]' before the command, "
    "SQLTRACK_DSN_* variables (SQLTRACK_DSN_ENGINE, SQLTRACK_DSN_DBPATH, SQLTRACK_DSN_HOST, ...) "
    "or a sqltrack.conf file; or create the tables here with 'sqltrack setup'"
)


def describe(client: AsyncClient) -> str:
    """Where the client connects, without secrets."""
    settings = client.settings
    if settings.engine == "sqlite":
        return f"sqlite {settings.params['dbpath']}"
    shown = " ".join(
        f"{k}={'***' if k in _config.SECRET_KEYS else v}"
        for k, v in settings.params.items()
        if k in ("host", "port", "user", "dbname", "password")
    )
    schema = f" schema={settings.schema}" if settings.schema else ""
    return mask_passwords(f"postgres {shown}{schema}")


def target_line(client: AsyncClient) -> str:
    """One line naming the database a command works on: engine, host/database or file, schema.

    Defaults are spelled out (the file's absolute path, libpq's local socket, the
    ``public`` schema) so a newcomer sees which database was picked for them.
    """
    settings = client.settings
    if settings.engine == "sqlite":
        path = settings.params["dbpath"]
        shown = path if path == ":memory:" or path.startswith("file:") else str(
            Path(path).absolute()
        )
        return f"{PROG}: database: sqlite file {shown}"
    params = settings.params
    host = params.get("host") or os.environ.get("PGHOST") or "local socket (default)"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    schema = settings.schema or "public (default)"
    text = (f"{PROG}: database: postgres host={host} port={port} "
            f"user={params.get('user', '')} dbname={params.get('dbname', '')} schema={schema}")
    return mask_passwords(text)


def _check_sqlite_exists(client: AsyncClient) -> None:
    path = client.settings.params["dbpath"]
    if path == ":memory:" or path.startswith("file:"):
        return
    if not Path(path).is_file():
        raise CliError(f"no SQLite database at {str(Path(path).absolute())!r}: {WHERE_HINT}")


async def _check_postgres(client: AsyncClient) -> None:
    """Connect once, directly, so a wrong setting fails at once with the server's reason."""
    import psycopg

    params = dict(client.settings.params)
    params.setdefault("connect_timeout", "10")
    try:
        conn = await psycopg.AsyncConnection.connect(**params)
    except psycopg.Error as error:
        raise CliError(f"cannot connect to {describe(client)}: {_one_line(error)}") from None
    await conn.close()


async def run_command(args: argparse.Namespace) -> int:
    """Open a client for the command, run it, close the client.

    The target database is named on stderr first. Only ``setup`` (and ``mark-stale``,
    which writes) may create sqltrack's tables; read-only commands refuse a
    database without them.
    """
    client = AsyncClient(
        args.config, create_schema=args.command not in READ_ONLY, **client_kwargs(args)
    )
    print(target_line(client), file=sys.stderr, flush=True)
    try:
        if client.engine == "sqlite" and args.command != "setup":
            _check_sqlite_exists(client)
        if client.engine == "postgres":
            await _check_postgres(client)
        if args.command in READ_ONLY:
            try:
                await client._opened_engine()
            except SchemaMissing:
                raise CliError(
                    f"no sqltrack tables in {describe(client)}: {WHERE_HINT}"
                ) from None
        return await COMMANDS[args.command](client, args)
    finally:
        await client.close()


def _quiet_driver_logs() -> None:
    # psycopg_pool logs each failed connection attempt; the CLI reports one error itself.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sqltrack`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    _quiet_driver_logs()
    try:
        return asyncio.run(run_command(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``sqltrack runs | head``)
        _silence_stdout()
        return 1
    except Exception as error:
        if args.debug:
            raise
        print(f"{PROG}: error: {_error_text(error, args)}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _error_text(error: Exception, args: argparse.Namespace) -> str:
    """One masked line for an error; unexpected kinds name their type."""
    text = _one_line(error)
    if not isinstance(error, (CliError, ValueError, LookupError, OSError)):
        module = type(error).__module__.split(".")[0]
        if module not in ("sqltrack", "psycopg", "psycopg_pool", "sqlite3"):
            text = f"{type(error).__name__}: {text} (run with --debug for the traceback)"
    return mask(text, _secret_values(args))
