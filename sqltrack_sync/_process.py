"""Process policy of the blocking API: exit, SIGTERM, fork and dropped clients.

Installed when the first blocking ``Client`` opens (``register_cleanup``), not
at import. The loop thread itself is ``sqltrack_sync._portal`` (a bridge).

* At interpreter exit, registered clean-ups (flush and stop open runs, close
  pools) run on the loop, each bounded in time, then the loop stops; the status
  comes from ``sqltrack.process.exits`` (shared with never-closed AsyncClients). Runs
  the parent process left open are the parent's: a forked child never stops them.
* A dropped ``Client`` (garbage-collected) closes its pool on the loop at once,
  or at exit if it still has open runs: no pool task is ever left pending.
* SIGTERM while runs are open outside ``track()`` (``run.start()``) records each
  run's ``terminated`` status, then takes the default action (see ``_on_sigterm``).
* ``context()`` (``with run.track():``): SIGTERM raises Terminated in the block, and a
  second Ctrl-C or SIGTERM while the block is being cleaned up ends the process at once.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from typing import Any, Protocol, TypeVar

from sqltrack.client.async_client import AsyncClient
from sqltrack.client.state import ClientState
from sqltrack.process import exits, signals
from sqltrack.process.exits import EXIT_TIMEOUT, close_at_exit
from sqltrack.process.signals import sigterm_raises
from sqltrack_sync import _portal
from sqltrack_sync._portal import call, call_bounded

log = logging.getLogger("sqltrack")

T = TypeVar("T")
__all__ = ["EXIT_TIMEOUT", "close_at_exit", "context", "register_cleanup"]


class Cleanup(Protocol):
    """A blocking client: what the process policy needs of it."""

    @property
    def async_client(self) -> AsyncClient: ...

    async def aclose_at_exit(self) -> None: ...


_cleanups: weakref.WeakSet[Cleanup] = weakref.WeakSet()
_installed_pid: int | None = None


@contextmanager
def context(manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """Use an async context manager from a thread; SIGTERM raises Terminated meanwhile.

    The block's exception (KeyboardInterrupt and Terminated included) is passed to
    the async ``__aexit__``, so the async code decides what happens, exactly as
    in ``async with``.
    """
    with sigterm_raises():
        value = call(manager.__aenter__)
        try:
            yield value
        except BaseException as error:
            with _second_interrupt_ends_process(error):
                if not call(manager.__aexit__, type(error), error, error.__traceback__):
                    raise
        else:
            call(manager.__aexit__, None, None, None)


@contextmanager
def _second_interrupt_ends_process(error: BaseException) -> Iterator[None]:
    """After a Ctrl-C, a second one during the clean-up takes the default action (ends
    the process at once), as a second SIGTERM does (see ``sqltrack.process.signals``)."""
    if not isinstance(error, KeyboardInterrupt) or not signals._in_main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def register_cleanup(obj: Cleanup) -> None:
    """At interpreter exit, ``await obj.aclose_at_exit()`` runs on the loop (weakly held).

    ``obj.async_client`` is the AsyncClient whose open runs SIGTERM and fork look at.
    When ``obj`` is dropped (a notebook cell run again), its AsyncClient is closed
    on the loop at once, or at exit if it still has open runs (``_dropped``).
    """
    _install()
    _cleanups.add(obj)
    obj.async_client.set_blocking()
    weakref.finalize(obj, _dropped, obj.async_client).atexit = False
    _install_sigterm_handler()


#: AsyncClients of dropped blocking clients with runs still open: finished at exit.
_orphans: set[AsyncClient] = set()
#: Closes of dropped clients under way on the loop (held so that none is lost).
_closing: set[asyncio.Task[None]] = set()


def _dropped(client: AsyncClient) -> None:
    """A blocking Client was garbage-collected: release its pool and connections now.

    Runs in whichever thread the collection happened (the loop thread too), so it
    only schedules the close. Open runs keep the client until exit, where they
    get their exit status as every other open run does.
    """
    current = _portal.current()
    if client.hooks.open_runs():
        _orphans.add(client)
    elif current is not None and not current.stopped and client.state is not ClientState.CLOSED:
        with suppress(RuntimeError):  # the loop is closed: exit is past its clean-up
            current.loop.call_soon_threadsafe(_close_dropped, current.loop, client)


def _close_dropped(loop: asyncio.AbstractEventLoop, client: AsyncClient) -> None:
    task = loop.create_task(close_at_exit(client))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _drain_closing() -> None:
    while _closing:
        await asyncio.gather(*_closing, return_exceptions=True)


def _open_runs() -> list[Any]:
    return [run for obj in list(_cleanups) for run in obj.async_client.hooks.open_runs()]


#: The process that installed ``_on_sigterm`` (a forked child inherits the handler).
_sigterm_pid: int | None = None


def _install_sigterm_handler() -> None:
    """In the main thread, when SIGTERM has its default action: handle it (``_on_sigterm``)."""
    global _sigterm_pid
    if _sigterm_pid == os.getpid() or not signals._in_main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the program's own handler (or SIG_IGN) stays in charge
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        return
    _sigterm_pid = os.getpid()


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM outside ``track()``: give every open run its ``terminated`` status, then die.

    The default action is restored first, so a second SIGTERM ends the process at once.
    A ``with client:`` block the main thread is in is rolled back first, as the end
    of the process would (on SQLite its write lock would hold up the stop); then
    each run is stopped on a connection of its own. Every step is bounded in time.
    Without open runs this is just the default action.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signals.sigterm_received = True
    current = _portal.current()
    runs = _open_runs() if current is not None and current.thread.is_alive() else []
    if runs:
        main = threading.get_ident()
        for obj in list(_cleanups):
            # RuntimeError when the main thread holds no connection of this client
            with suppress(Exception):  # the process ends anyway
                call_bounded(obj.async_client.rollback, owner=main, timeout=EXIT_TIMEOUT)
    for run in runs:
        try:
            call_bounded(run.stop, run.terminated_status, owner=object(), timeout=EXIT_TIMEOUT)
        except Exception:  # noqa: BLE001 - the process ends anyway
            log.exception("sqltrack: could not stop run %s on SIGTERM", run.id)
    signal.raise_signal(signal.SIGTERM)


def _at_exit() -> None:
    current = _portal.current()
    if current is None:
        return
    closes = [obj.aclose_at_exit() for obj in list(_cleanups)]
    closes += [close_at_exit(client) for client in list(_orphans)]
    for coro in [*closes, _drain_closing()]:
        future = asyncio.run_coroutine_threadsafe(coro, current.loop)
        try:
            future.result(EXIT_TIMEOUT)
        except Exception:  # noqa: BLE001 - exit must go on; the error was logged by the loop
            future.cancel()
    current.stop(EXIT_TIMEOUT)




def _install() -> None:
    """The first client of this process opens: exit handling, and how the program ended."""
    global _installed_pid
    if _installed_pid == os.getpid():
        return
    _installed_pid = os.getpid()
    exits.install()
    atexit.register(_at_exit)


#: Per forking thread: whether ``_before_fork`` blocked SIGTERM (to unblock it after).
_fork_mask = threading.local()


def _before_fork() -> None:
    """SIGTERM waits over the fork in the forking thread (so the child inherits it
    blocked) until the child has its default action back: one arriving in between
    would reach the inherited handler, which Python then drops ("ignored due to race
    condition"), and the child would live on (``_after_fork_in_child``)."""
    _fork_mask.blocked = False
    if _sigterm_pid == os.getpid() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _fork_mask.blocked = signal.SIGTERM not in previous


def _unblock_sigterm() -> None:
    if getattr(_fork_mask, "blocked", False):
        _fork_mask.blocked = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    """The runs the parent has open stay the parent's: the child's exit must not stop them.

    The child also gets SIGTERM's default action back from the inherited ``_on_sigterm``
    (which has no runs to stop there): a Python handler runs only when the main thread
    gets to it, and a worker's main thread that just entered a blocking wait (a
    ``multiprocessing`` Pool worker taking its queue's lock) never does, so
    ``Pool.terminate()`` waited for it forever. A Client the child makes installs it again.
    A SIGTERM that came during the fork was held back (``_before_fork``) and ends the
    child now.
    """
    global _sigterm_pid
    _orphans.clear()
    for obj in list(_cleanups):
        obj.async_client.hooks.forget_runs()
    if _sigterm_pid is not None:
        _sigterm_pid = None
        with suppress(ValueError, OSError):  # pragma: no cover - not the main interpreter
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _unblock_sigterm()


os.register_at_fork(
    before=_before_fork, after_in_parent=_unblock_sigterm, after_in_child=_after_fork_in_child
)
