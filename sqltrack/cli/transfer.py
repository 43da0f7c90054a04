"""``sqltrack sync``: copy what is new or changed from one database to another.

``sqltrack sync --from SOURCE [--to TARGET]``. Each of SOURCE and TARGET is

* ``KEY=VALUE`` settings in one argument, as in a config file:
  ``"engine=sqlite dbpath=node.db"``, ``"host=db.lab dbname=team schema=vision"``;
  keys not given come from ``SQLTRACK_DSN_*`` variables (never from ./sqltrack.conf);
* a SQLite database file: ``node.db``;
* a config file of ``key=value`` lines: ``server.conf``.

Without ``--to`` the target is the database the connection options before the
command name (``sqltrack --host db.lab sync --from node.db``), then ``SQLTRACK_DSN_*``
and the config file, as for every command. The copy itself is
``sqltrack.copy.transfer.sync``; this module parses, connects, draws the progress bar on
stderr and prints the summary. Another mode of the same command (the replay of a
local spool, ``--spool PATH``) adds its option in ``sync_arguments`` and its branch at
the top of ``cmd_sync``, before ``--from`` is required.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..client.async_client import AsyncClient
from ..copy.transfer import PAGE_ROWS, SyncProgress, sync
from .checks import check_database
from .formatting import PROG, target_line
from .parser import client_kwargs, key_value
from .spool import cmd_sync_spool

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class SettingsError(ValueError):
    """``--from`` / ``--to`` names no database."""


def client_for(text: str, *, create_schema: bool) -> AsyncClient:
    """An AsyncClient for ``--from`` / ``--to`` text: KEY=VALUE settings, a SQLite file or
    a config file."""
    if "=" in text:
        try:
            pairs = dict(key_value(part) for part in shlex.split(text))
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise SettingsError(f"{text!r}: {error}") from None
        config = pairs.pop("config", None)
        return AsyncClient(config if config is not None else {}, create_schema=create_schema,
                           **pairs)
    path = Path(text)
    if path.is_file():
        with path.open("rb") as file:
            is_sqlite = file.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
        if is_sqlite:
            return AsyncClient({}, create_schema=create_schema, engine="sqlite", dbpath=text)
        return AsyncClient(text, create_schema=create_schema)
    if path.suffix.lower() in _SQLITE_SUFFIXES and create_schema:
        return AsyncClient({}, create_schema=True, engine="sqlite", dbpath=text)
    raise SettingsError(
        f"{text!r} is no file: give KEY=VALUE settings ('engine=sqlite dbpath=node.db', "
        "'host=HOST dbname=NAME schema=NAME'), a SQLite database file or a config file"
    )


def sync_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``sqltrack sync``."""
    p.add_argument("--from", dest="source", metavar="SOURCE",
                   help="the database to copy from: KEY=VALUE settings in one argument "
                   "('engine=sqlite dbpath=node.db'), a SQLite file or a config file")
    p.add_argument("--to", dest="target", metavar="TARGET",
                   help="the database to copy to, given as for --from (default: the "
                   "connection options, SQLTRACK_DSN_*, the config file)")
    p.add_argument("--spool", metavar="PATH",
                   help="instead of --from: replay a spool file (rows and statuses that "
                   "buffered runs kept while their server did not answer); without --to "
                   "or connection options, each server in it gets its own entries")
    p.add_argument("--dry-run", action="store_true",
                   help="count what would be copied; write nothing, anywhere")
    p.add_argument("--full", action="store_true",
                   help="compare every metric row instead of trusting what the last sync "
                   "recorded")
    p.add_argument("--page-rows", type=int, default=PAGE_ROWS, metavar="N",
                   help=f"metric rows per target transaction (default {PAGE_ROWS})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


class ProgressBar:
    """A progress bar redrawn in place on a terminal; elsewhere a line every 10 s."""

    WIDTH = 30

    def __init__(self, out: TextIO, interval: float | None = None) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interval = interval if interval is not None else (0.1 if self.tty else 10.0)
        self.last = time.monotonic()
        self.drawn = False

    def __call__(self, progress: SyncProgress) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        share = progress.rows_done / progress.rows_total if progress.rows_total else 1.0
        filled = int(self.WIDTH * share)
        text = (f"{PROG} sync: [{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%} "
                f"{progress.rows_done:,}/{progress.rows_total:,} rows, "
                f"run {progress.runs_done}/{progress.runs_total}")
        self.out.write(f"\r{text}" if self.tty else f"{text}\n")
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn and self.tty:
            self.out.write("\n")
            self.out.flush()


async def cmd_sync(client: AsyncClient, args: argparse.Namespace) -> int:
    """``sync``: copy ``--from`` into ``--to`` (default: ``client``); print the summary.

    Both databases are named on stderr, then checked: one that does not answer (or a
    SQLite source file that is not there) fails at once, with the reason.
    """
    if args.spool is not None:
        if args.source is not None:
            raise SettingsError("sync takes --from SOURCE or --spool PATH, not both")
        target = (client_for(args.target, create_schema=True) if args.target is not None
                  else client if client_kwargs(args) else None)
        try:
            return await cmd_sync_spool(target, args)
        finally:
            if target is not None and target is not client:
                await target.close()
    if args.source is None:
        raise SettingsError("sync needs --from SOURCE (the database to copy from)")
    if args.page_rows < 1:
        raise SettingsError(f"--page-rows must be at least 1, not {args.page_rows}")
    source = client_for(args.source, create_schema=False)
    target = client if args.target is None else client_for(args.target, create_schema=True)
    bar = None if args.no_progress else ProgressBar(sys.stderr)
    try:
        print(target_line(source).replace(": database:", ": sync from:", 1), file=sys.stderr)
        print(target_line(target).replace(": database:", ": sync to:", 1), file=sys.stderr,
              flush=True)
        await check_database(source, must_exist=True)
        await check_database(target, must_exist=False)
        summary = await sync(source, target, dry_run=args.dry_run, full=args.full,
                             progress=bar, page_rows=args.page_rows)
    finally:
        if bar is not None:
            bar.close()
        await source.close()
        if target is not client:
            await target.close()
    if args.json:
        print(json.dumps(_jsonable(vars(summary))))
    else:
        print(f"{PROG} sync: {summary}")
    return 0


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}
