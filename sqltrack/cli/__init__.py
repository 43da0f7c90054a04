"""The ``sqltrack`` command: set up a database, list and inspect runs, export metrics.

Connection options come before or after the command (``sqltrack --dbpath runs.db
runs`` or ``sqltrack runs --dbpath runs.db``; ``--dbpath`` alone means SQLite); any
option not given falls back to ``SQLTRACK_DSN_*`` variables and the config file,
exactly as for ``AsyncClient``. A config file that names a server is named in one
line on stderr (``sqltrack: connection settings from config file PATH (host=...)``;
the library's ``ConfigFileHost`` warning, printed as that line). Every command first names
its database in one line on stderr; only ``setup`` and ``mark-stale`` create
sqltrack's tables (the read-only commands refuse a database without them and say
how to point them elsewhere). Errors print one line to stderr and exit with
status 1 (2 for a wrong command line); passwords are never printed.

Modules: ``parser`` (command line), ``commands`` (one coroutine per command, the
``COMMANDS`` registry), ``formatting`` (what is printed); exports are written by
the library module ``sqltrack.read.export``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from ..client.async_client import AsyncClient
from ..config import ConfigFileHost
from ..environment import mask_passwords
from ..errors import SchemaMissing
from . import parser as _parser
from .checks import WHERE_HINT, CliError, check_database
from .commands import COMMANDS
from .formatting import PROG, describe, one_line, target_line
from .parser import client_kwargs, parse_duration, secret_values

#: The project's one masking function, under the name the CLI has always used.
mask = mask_passwords

__all__ = [
    "COMMANDS", "CliError", "build_parser", "client_kwargs", "main", "mask", "parse_duration",
    "run_command",
]

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sqltrack`` command (every command in ``COMMANDS``)."""
    return _parser.build_parser(COMMANDS.values())


async def run_command(args: argparse.Namespace) -> int:
    """Open a client for the command, run it, close the client.

    The target database is named on stderr first. Only commands that are not
    read-only (``setup``, and ``mark-stale``, which writes) may create sqltrack's
    tables; read-only commands refuse a database without them.
    """
    command = COMMANDS[args.command]
    client = AsyncClient(args.config, create_schema=not command.read_only, **client_kwargs(args))
    if command.connects_itself:
        try:
            return await command.run(client, args)
        finally:
            await client.close()
    print(target_line(client), file=sys.stderr, flush=True)
    try:
        await check_database(client, must_exist=args.command != "setup")
        if command.read_only:
            try:
                await client.open()
            except SchemaMissing:
                raise CliError(
                    f"no sqltrack tables in {describe(client)}: {WHERE_HINT}"
                ) from None
        return await command.run(client, args)
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
    with warnings.catch_warnings():
        warnings.simplefilter("always", ConfigFileHost)  # each client's file (sync has two)
        show = warnings.showwarning

        def show_warning(message: Warning | str, category: type[Warning], filename: str,
                         lineno: int, file: TextIO | None = None, line: str | None = None,
                         ) -> None:
            """sqltrack's config-file notice as its one line on stderr; others as usual."""
            if issubclass(category, ConfigFileHost):
                print(mask_passwords(str(message)), file=sys.stderr, flush=True)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_warning
        return _run(args)


def _run(args: Any) -> int:
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
    text = one_line(error)
    if not isinstance(error, (CliError, ValueError, LookupError, OSError)):
        module = type(error).__module__.split(".")[0]
        if module not in ("sqltrack", "psycopg", "psycopg_pool", "sqlite3"):
            text = f"{type(error).__name__}: {text} (run with --debug for the traceback)"
    return mask_passwords(text, secret_values(args))
