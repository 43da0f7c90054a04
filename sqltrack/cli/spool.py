"""``sqltrack sync --spool PATH``: replay a spool file (see ``sqltrack.outage.spool``).

A buffered run whose server did not answer left its rows and final status in
the spool. Without ``--to`` and without connection options (before or after the command)
(``SQLTRACK_DSN_*`` and the config file do not count: the spool names its
servers) each server's entries go to that server, with the settings the spool
kept; with them, the file's entries for that database go there.
``sqltrack/cli/transfer.py`` parses the command and calls :func:`cmd_sync_spool`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from ..client.async_client import AsyncClient
from ..outage.replay import replay as replay_spool
from ..outage.spool import ReplayResult, Spool, target_key, targets_of
from .formatting import PROG


async def cmd_sync_spool(client: AsyncClient | None, args: argparse.Namespace) -> int:
    """Replay ``args.spool`` into ``client`` (None: each target its own); print a summary."""
    replays = await replay_file(args.spool, client, dry_run=args.dry_run)
    if not replays:
        print(f"{PROG} sync: nothing to replay in the spool {args.spool}")
        return 0
    failed = False
    for replay in replays:
        result = replay.result
        if args.dry_run:
            print(f"{PROG} sync: {replay.pending} spooled entries for {replay.target} "
                  "(dry run: nothing written)")
            continue
        print(f"{PROG} sync: {result.rows} metric rows and {result.run_updates} run updates "
              f"from the spool {args.spool} to {replay.target}; {result.refused} refused, "
              f"{replay.pending} left")
        for error in result.errors:
            print(f"{PROG} sync: refused (kept in the spool): {error}", file=sys.stderr)
        failed = failed or bool(result.refused) or result.busy
    return 1 if failed else 0


@dataclass
class FileReplay:
    """What replaying one target of a spool file did (``sqltrack sync --spool``)."""

    target: str
    result: ReplayResult
    pending: int = 0


async def replay_file(
    path: str | os.PathLike[str], client: AsyncClient | None = None, *, dry_run: bool = False
) -> list[FileReplay]:
    """Replay a spool file: each target into its own database (settings kept in the
    file; passwords from the environment, ``~/.pgpass`` or the config file), or every
    entry into ``client``'s database when given (the file's entries for that database;
    a file of one target: that target's, reached under another name).

    ``dry_run`` counts the pending entries and writes nothing.
    """
    targets = targets_of(path)
    if client is not None:
        mine = target_key(client.settings)
        chosen = [t for t in targets if t[0] == mine] or (targets if len(targets) == 1 else [])
        if targets and not chosen:
            raise ValueError(
                f"the spool {str(path)!r} holds no entries for {mine}, but for "
                f"{', '.join(t[0] for t in targets)}: leave --to out to replay each into "
                "its own database"
            )
        targets = chosen
    done = []
    for target, engine, params in targets:
        own = client is None
        dst = AsyncClient({}, engine=engine, **params) if own else client
        assert dst is not None
        spool = Spool(path, target, engine, params)
        try:
            if dry_run:
                done.append(FileReplay(target, ReplayResult(), spool.pending()))
                continue
            result = await replay_spool(spool, dst, wait=60.0)
            done.append(FileReplay(target, result, spool.pending()))
        finally:
            spool.close()
            if own:
                await dst.close()
    return done
