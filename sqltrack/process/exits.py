"""What happens to open runs and buffered rows when the program ends.

One mechanism for both APIs: :func:`exit_status` says how the program ended
(SIGTERM, an uncaught exception or Ctrl-C, or a normal end) and
:func:`close_at_exit` stops a client's open runs with that status, then closes
the client (which writes its buffered rows). The blocking API runs it on its
loop thread at interpreter exit (``sqltrack_sync._portal``); here, an
``AsyncClient`` that was opened and never closed (the loop of ``asyncio.run``
is gone by then) gets the same treatment on a fresh, short-lived connection,
with one warning line naming it (see :func:`_close_never_closed`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
from contextlib import suppress
from types import TracebackType
from typing import Any

from ..errors import ClientClosed
from . import signals

log = logging.getLogger("sqltrack")

#: Upper bound for each clean-up at interpreter exit, in seconds.
EXIT_TIMEOUT = 30.0

#: AsyncClients opened and not closed yet (the client adds and discards itself):
#: held so that one never closed is still finished at interpreter exit, and for
#: no other reason.
unclosed: set[Any] = set()

_exit_exception: list[type[BaseException]] = []
_previous_excepthook = sys.excepthook
_installed = False


def _record_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    _exit_exception.append(exc_type)
    _previous_excepthook(exc_type, exc, tb)


def install() -> None:
    """When the first client opens (not at import): note how the program ends
    (``sys.excepthook``) and finish never-closed AsyncClients at exit. Idempotent."""
    global _installed, _previous_excepthook
    if _installed:
        return
    _installed = True
    _previous_excepthook = sys.excepthook
    sys.excepthook = _record_uncaught
    atexit.register(_close_never_closed)


def exit_status(terminated: str) -> str:
    """Status for a run still open at interpreter exit, from how the program ended."""
    if signals.sigterm_received:
        return terminated
    if _exit_exception:
        return "CANCELLED" if issubclass(_exit_exception[0], KeyboardInterrupt) else "FAILED"
    return "COMPLETED"


async def close_at_exit(client: Any) -> None:
    """Stop the runs ``client`` (an AsyncClient) has open, then close it; errors are logged."""
    for run in client.hooks.open_runs():
        try:
            await run.stop(exit_status(run.terminated_status))
        except ClientClosed:
            log.warning("sqltrack: run %s is left RUNNING: its client was closed before "
                        "the run was stopped (call run.stop() before client.close())", run.id)
        except Exception:  # noqa: BLE001 - the other runs and the pool come next
            log.exception("sqltrack: could not stop run %s at exit", run.id)
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - exit goes on; say what was lost
        log.exception("sqltrack: closing %r at exit failed", client)


def silence_pending_tasks(loop: asyncio.AbstractEventLoop | None) -> None:
    """Tasks left pending on a loop nobody will run again (a closed ``asyncio.run``
    loop, the parent's loop in a forked child) are dropped without the
    'Task was destroyed but it is pending!' line: nothing can finish them.
    (In a forked child the parent's loop still looks running: it is not, there.)"""
    if loop is None:
        return
    for task in asyncio.all_tasks(loop):
        with suppress(AttributeError):
            task._log_destroy_pending = False  # type: ignore[attr-defined]


async def _finish(client: Any, restart: bool = False) -> None:
    log.warning("sqltrack: %r was never closed: its buffered rows and open runs are "
                "written at exit (call 'await client.close()' when done)", client)
    if restart:
        client.restart_for_exit()
    await close_at_exit(client)


def _close_never_closed() -> None:
    """At interpreter exit: finish every AsyncClient opened and never closed.

    Clients of the blocking API are the portal's (closed before this runs). A
    client whose loop still runs in another thread is finished there; otherwise
    it gets a fresh engine, used on a loop of its own for the clean-up only. A
    client with no open run and no buffered row is only named in the warning.
    """
    for client in list(unclosed):
        if client.blocking or client.state.value != "open":
            continue
        if not client.hooks.open_runs() and not client.hooks.pending():
            log.warning("sqltrack: %r was never closed (call 'await client.close()' "
                        "when done)", client)
            continue  # nothing to write: no connection at exit
        loop = client.loop
        try:
            if loop is not None and loop.is_running() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(_finish(client), loop)
                future.result(EXIT_TIMEOUT)
                continue
            silence_pending_tasks(loop)
            own = asyncio.new_event_loop()
            try:
                own.run_until_complete(asyncio.wait_for(_finish(client, True), EXIT_TIMEOUT))
            finally:
                own.close()
        except Exception:  # noqa: BLE001 - the next client still gets its turn
            log.exception("sqltrack: could not finish %r at exit", client)

