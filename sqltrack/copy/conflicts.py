"""One target transaction of a sync, run again when the server cancelled it to break a
lock cycle.

Several ``sqltrack sync`` runs into one target take turns on the rows they share (a
run's ``sync_runs`` row, an experiment's name), but a server may still cancel one of
them: PostgreSQL's deadlock check (SQLSTATE 40P01) and, on Citus, the distributed one
(the same SQLSTATE for a cycle through locks on several nodes) pick a victim, and a
serialization failure (40001) is the same kind of answer. Nothing of the cancelled
transaction was committed, and every sync transaction reads the state it acts on
inside itself, so running it again from its start is exact. Bounded: after
``ATTEMPTS`` the sync stops with a ``ConflictError`` saying so (never a silent loss;
the next sync finishes the copy). Inside a caller's own block it runs once: that
transaction is gone with the error and only the caller can start it again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ..errors import DatabaseError

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient

T = TypeVar("T")

#: SQLSTATEs of a transaction cancelled to let others go on: deadlock, serialization.
CONFLICTS = frozenset({"40P01", "40001"})
#: Runs of one transaction before the conflict is raised.
ATTEMPTS = 8
#: The first pause between runs (seconds); it doubles, with jitter, up to ``MAX_PAUSE``.
FIRST_PAUSE = 0.05
MAX_PAUSE = 2.0


class ConflictError(DatabaseError):
    """A sync's transaction was cancelled by the server (deadlock) ``ATTEMPTS`` times."""

    transient = True


def is_conflict(error: BaseException) -> bool:
    """Whether ``error`` is the server cancelling a transaction to break a lock cycle."""
    return isinstance(error, DatabaseError) and error.sqlstate in CONFLICTS


async def in_transaction(client: AsyncClient, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()`` in one transaction of ``client`` (``async with client``); all of it
    again, after a short pause, when the server cancelled it (``CONFLICTS``)."""
    pause, attempt = FIRST_PAUSE, 1
    while True:
        try:
            async with client:
                return await work()
        except DatabaseError as error:
            if not is_conflict(error) or client.held_connection() is not None:
                raise
            if attempt == ATTEMPTS:
                conflict = ConflictError(
                    f"the target cancelled this sync's transaction {ATTEMPTS} times to break "
                    f"lock cycles with other sessions; nothing of it was kept, run the sync "
                    f"again: {error}")
                conflict.sqlstate = error.sqlstate
                raise conflict from error
        # Jitter: two syncs cancelled together do not meet again at once.
        await asyncio.sleep(pause * random.uniform(0.5, 1.5))
        pause, attempt = min(2 * pause, MAX_PAUSE), attempt + 1
