"""The one background thread that runs sqltrack's event loop for the blocking API.

Every blocking call hands a coroutine to this loop and waits for its result:
one ``call_soon_threadsafe`` there, one lock release back, which is the least a
thread round trip can cost (a ``concurrent.futures.Future`` round trip costs a
bit more). anyio's ``BlockingPortal.call`` does the same job at several times
the cost (``benchmarks/facade.py``, ``benchmarks/FACADE.md``); this module keeps
only what the facade needs.

* The thread starts on first use and is a daemon, so it never blocks exit.
* Exceptions surface in the caller with their original type.
* Calls run with ``sqltrack.client.connection_owner`` set to the calling
  thread, so ``with client:`` blocks belong to threads, not to loop tasks.
* After ``os.fork()`` the child gets a fresh loop and thread on first use; the
  parent's loop, pools and connections are left alone (see ``after_fork``).
* At interpreter exit, registered clean-ups (flush and stop open runs, close
  pools) run on the loop, each bounded in time, then the loop stops; the status
  comes from ``sqltrack.exits`` (shared with never-closed AsyncClients). Runs
  the parent process left open are the parent's: a forked child never stops them.
* A dropped ``Client`` (garbage-collected) closes its pool on the loop at once,
  or at exit if it still has open runs: no pool task is ever left pending.
* SIGTERM while runs are open outside ``track()`` (``run.start()``) records each
  run's ``terminated`` status, then takes the default action (see ``_on_sigterm``).
* A second Ctrl-C or SIGTERM while a tracked block is being cleaned up ends the
  process at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import os
import signal
import sys
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from threading import Lock as allocate_lock
from threading import get_ident
from typing import Any, TypeVar

from sqltrack import signals
from sqltrack.client import connection_owner
from sqltrack.exits import EXIT_TIMEOUT, close_at_exit, exit_status, silence_pending_tasks
from sqltrack.signals import sigterm_raises

log = logging.getLogger("sqltrack")

T = TypeVar("T")
_EAGER_TASKS = sys.version_info >= (3, 12)
__all__ = ["EXIT_TIMEOUT", "call", "close_at_exit", "context", "exit_status", "register_cleanup"]


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        #: Set at interpreter exit: calls after that fail at once instead of waiting forever.
        self.stopped = False
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(ready,), name="sqltrack-loop", daemon=True
        )
        self.thread.start()
        ready.wait()
        self.ident = self.thread.ident

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def stop(self, timeout: float) -> None:
        self.stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


_lock = threading.Lock()
_loop_thread: _LoopThread | None = None
_cleanups: weakref.WeakSet = weakref.WeakSet()
_exit_registered = False


def _get_loop() -> asyncio.AbstractEventLoop:
    current = _loop_thread
    return current.loop if current is not None else _start_loop_thread().loop


def _start_loop_thread() -> _LoopThread:
    global _loop_thread, _exit_registered
    with _lock:
        if _loop_thread is None:
            _loop_thread = _LoopThread()
            if not _exit_registered:
                atexit.register(_at_exit)
                _exit_registered = True
        return _loop_thread


class _Waiter:
    """The outcome of one call, and the lock its caller waits on (released when done).

    A bare lock is the cheapest cross-thread wake-up there is; a Future would add
    a Condition, its waiter list and their allocations to every call.
    """

    __slots__ = ("lock", "result", "error")

    def __init__(self) -> None:
        self.lock = allocate_lock()
        self.lock.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        """The result, or the exception raised (without a reference cycle)."""
        error = self.error
        if error is None:
            return self.result
        self.error = None
        try:
            raise error
        finally:
            error = None


async def _owned(fn: Callable[..., Awaitable[T]], args: tuple, waiter: _Waiter) -> None:
    try:
        waiter.result = await fn(*args)
    except BaseException as error:  # noqa: BLE001 - every outcome goes back to the caller
        waiter.error = error
    waiter.lock.release()


@types.coroutine
def _resume(coro: Any, yielded: Any) -> Any:
    """Hand what ``coro`` yields to the surrounding task and send back what comes back."""
    while True:
        try:
            sent = yield yielded
        except BaseException as error:  # noqa: BLE001 - cancellation goes into coro
            try:
                yielded = coro.throw(error)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return


async def _continue(coro: Any, yielded: Any) -> None:
    await _resume(coro, yielded)


def _start_eagerly(loop: asyncio.AbstractEventLoop, coro: Any) -> None:
    """Run ``coro`` up to its first real wait now, then in a task (an eager task).

    This saves the loop iteration a new task waits for before its first step.
    Python 3.12 has eager tasks built in; older versions get the same effect by
    stepping the coroutine once here and handing the rest to a task.
    """
    if _EAGER_TASKS:
        asyncio.Task(coro, loop=loop, eager_start=True)
        return
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    loop.create_task(_continue(coro, yielded))


def _start(
    loop: asyncio.AbstractEventLoop, waiter: _Waiter, owner: Any, fn: Callable, args: tuple
) -> None:
    connection_owner.set(owner)
    _start_eagerly(loop, _owned(fn, args, waiter))


def call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``await fn(*args)`` on the loop thread; block until it is done; return its value."""
    current = _loop_thread or _start_loop_thread()
    ident = get_ident()
    if ident == current.ident or current.stopped:
        raise _refused(current)
    loop = current.loop
    waiter = _Waiter()
    context = contextvars.copy_context()
    loop.call_soon_threadsafe(context.run, _start, loop, waiter, ident, fn, args)
    waiter.lock.acquire()
    return waiter.outcome()


def _refused(current: _LoopThread) -> RuntimeError:
    if current.stopped:
        return RuntimeError(
            "sqltrack has shut down for interpreter exit (open runs stopped, clients "
            "closed); this blocking call came later, e.g. from an atexit handler "
            "registered before sqltrack was first used"
        )
    return RuntimeError(
        "a blocking sqltrack call from inside sqltrack's own event loop would deadlock; "
        "use the async API (sqltrack.AsyncClient) in coroutines"
    )


def _call_bounded(fn: Callable[..., Awaitable[T]], *args: Any, owner: Any, timeout: float) -> T:
    """``await fn(*args)`` on the loop as ``owner`` (of held connections); bounded wait."""
    loop = _get_loop()
    waiter = _Waiter()
    context = contextvars.copy_context()
    loop.call_soon_threadsafe(context.run, _start, loop, waiter, owner, fn, args)
    if not waiter.lock.acquire(timeout=timeout):
        raise TimeoutError(f"no result within {timeout} s")
    return waiter.outcome()


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
    the process at once), as a second SIGTERM does (see ``sqltrack.signals``)."""
    if not isinstance(error, KeyboardInterrupt) or not signals._in_main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def register_cleanup(obj: Any) -> None:
    """At interpreter exit, ``await obj.aclose_at_exit()`` runs on the loop (weakly held).

    ``obj.async_client`` is the AsyncClient whose open runs SIGTERM and fork look at.
    When ``obj`` is dropped (a notebook cell run again), its AsyncClient is closed
    on the loop at once, or at exit if it still has open runs (``_dropped``).
    """
    _cleanups.add(obj)
    obj.async_client.blocking = True
    weakref.finalize(obj, _dropped, obj.async_client).atexit = False
    _install_sigterm_handler()


#: AsyncClients of dropped blocking clients with runs still open: finished at exit.
_orphans: set[Any] = set()
#: Closes of dropped clients under way on the loop (held so that none is lost).
_closing: set[asyncio.Task] = set()


def _dropped(client: Any) -> None:
    """A blocking Client was garbage-collected: release its pool and connections now.

    Runs in whichever thread the collection happened (the loop thread too), so it
    only schedules the close. Open runs keep the client until exit, where they
    get their exit status as every other open run does.
    """
    current = _loop_thread
    if client.hooks.open_runs():
        _orphans.add(client)
    elif current is not None and not current.stopped and client._state != "closed":
        with suppress(RuntimeError):  # the loop is closed: exit is past its clean-up
            current.loop.call_soon_threadsafe(_close_dropped, current.loop, client)


def _close_dropped(loop: asyncio.AbstractEventLoop, client: Any) -> None:
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
    current = _loop_thread
    runs = _open_runs() if current is not None and current.thread.is_alive() else []
    if runs:
        main = threading.get_ident()
        for obj in list(_cleanups):
            # RuntimeError when the main thread holds no connection of this client
            with suppress(Exception):  # the process ends anyway
                _call_bounded(obj.async_client.rollback, owner=main, timeout=EXIT_TIMEOUT)
    for run in runs:
        try:
            _call_bounded(run.stop, run.terminated_status, owner=object(), timeout=EXIT_TIMEOUT)
        except Exception:  # noqa: BLE001 - the process ends anyway
            log.exception("sqltrack: could not stop run %s on SIGTERM", run.id)
    signal.raise_signal(signal.SIGTERM)


def _at_exit() -> None:
    current = _loop_thread
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


def _after_fork_in_child() -> None:
    """The parent's loop thread does not exist in the child: start afresh on first use.

    The runs the parent has open stay the parent's: the child's exit must not stop them.
    """
    global _loop_thread, _lock
    if _loop_thread is not None:  # its tasks can never finish here: drop them quietly
        _abandoned_loops.append(_loop_thread)
        silence_pending_tasks(_loop_thread.loop)
    _loop_thread = None
    _orphans.clear()
    _lock = threading.Lock()
    for obj in list(_cleanups):
        obj.async_client.hooks.forget_runs()


#: The parent's loop threads, in a forked child (kept: nothing of theirs is collected).
_abandoned_loops: list[_LoopThread] = []

os.register_at_fork(after_in_child=_after_fork_in_child)

