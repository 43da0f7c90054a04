"""The ``sqltrack`` command line: value types, connection options, one sub-parser per command.

Commands are described by :class:`Command` (name, help, arguments, coroutine,
read-only or not); ``build_parser`` adds one sub-parser for each, so a new
command is one more entry in ``sqltrack.cli.commands.COMMANDS``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import config as _config
from ..checks import STATUSES
from .formatting import PROG

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command without options of its own."""


@dataclass(frozen=True)
class Command:
    """One ``sqltrack`` command: its sub-parser and the coroutine that runs it."""

    name: str
    help: str
    run: Callable[[AsyncClient, argparse.Namespace], Awaitable[int]]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    #: Read-only commands never create sqltrack's tables (they refuse a database without them).
    read_only: bool = False
    #: The command names and checks its own databases (``sync``: ``--from``, ``--to``); the
    #: client of the connection options is its default, not yet connected.
    connects_itself: bool = False


# -- value types --------------------------------------------------------------
def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as ``(key, value)``, the key stripped and lower-cased."""
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


def status(text: str) -> str:
    """A run status, upper-cased; one of ``sqltrack.checks.STATUSES``."""
    value = text.strip().upper()
    if value not in STATUSES:
        raise argparse.ArgumentTypeError(
            f"unknown status {text!r}: use one of {', '.join(STATUSES)}"
        )
    return value


def run_id(text: str) -> int:
    """A run id (an integer)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"run id must be an integer, not {text!r}") from None


# -- the parser ---------------------------------------------------------------
def engine(text: str) -> str:
    """An engine name: ``postgres`` (also ``postgresql``), ``sqlite`` (also ``sqlite3``)."""
    try:
        return _config.engine_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


#: A command-line option: (option strings, keywords of add_argument).
Option = tuple[tuple[str, ...], dict[str, object]]


def _postgres_option(name: str) -> Option:
    """``--NAME``: the PostgreSQL connection parameter ``NAME``."""
    return (f"--{name}",), {"help": f"PostgreSQL {name}"}


#: The connection options.
CONNECTION_OPTIONS: list[Option] = [
    (("--engine",), {"type": engine, "metavar": "{postgres,sqlite}",
                     "help": "database engine (default: sqlite with --dbpath, else postgres)"}),
    (("--dbpath",), {"help": "SQLite database file (implies --engine sqlite)"}),
    (("--config",), {"metavar": "PATH", "help": "config file of key=value lines"}),
    *(_postgres_option(name) for name in ("host", "port", "user", "dbname")),
    (("--schema",), {"help": "PostgreSQL schema (search_path)"}),
    (("-o", "--option"), {"dest": "options", "metavar": "KEY=VALUE", "type": key_value,
                          "action": "append",
                          "help": "any libpq keyword or client setting (repeatable)"}),
]


def add_connection_options(parser: argparse.ArgumentParser, after: bool = False) -> None:
    """The options naming the database: before the command, and (``after``) after it too.

    After the command, an option the command has itself keeps the command's meaning
    (``ui --host`` is the address to listen on; ``export -o`` the output file), and an
    option not given leaves the one before the command alone (``SUPPRESS``).
    """
    group = parser.add_argument_group(
        "connection (default: SQLTRACK_DSN_* environment, then the config file)"
    )
    taken = set(parser._option_string_actions) if after else set()
    for strings, keywords in CONNECTION_OPTIONS:
        free = [s for s in strings if s not in taken]
        if not free or after and strings[-1] in taken:
            continue
        options = dict(keywords)
        if after:
            options["default"] = argparse.SUPPRESS
            if options.get("dest") == "options":
                options["dest"] = "options_after"  # the list before the command stays
        elif options.get("action") == "append":
            options["default"] = []
        group.add_argument(*free, **options)  # type: ignore[arg-type]
    if not after:
        parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser(commands: Iterable[Command]) -> argparse.ArgumentParser:
    """The argument parser of the ``sqltrack`` command, with a sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and maintain a sqltrack database (PostgreSQL or SQLite).",
        epilog="Connection options go before or after the command, e.g. "
        "'sqltrack runs --dbpath runs.db' or 'sqltrack --dbpath runs.db runs'.",
    )
    add_connection_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        command_parser = sub.add_parser(command.name, help=command.help)
        command.arguments(command_parser)
        add_connection_options(command_parser, after=True)
    return parser


def client_kwargs(args: argparse.Namespace) -> dict[str, str]:
    """Keyword arguments for AsyncClient: only the connection options that were given."""
    kwargs = {
        name: getattr(args, name)
        for name in ("engine", "dbpath", "host", "port", "user", "dbname", "schema")
        if getattr(args, name) is not None
    }
    kwargs.update(dict(args.options))
    kwargs.update(dict(getattr(args, "options_after", [])))
    if "dbpath" in kwargs and "engine" not in kwargs:
        kwargs["engine"] = "sqlite"  # a database file is an SQLite database
    return kwargs


def secret_values(args: argparse.Namespace) -> set[str]:
    """Every password the command's settings may hold (options, environment, config file)."""
    given = {**dict(args.options), **dict(getattr(args, "options_after", []))}
    return _config.secret_values(args.config, given)
