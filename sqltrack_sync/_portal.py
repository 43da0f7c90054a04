"""The one background thread that runs sqltrack's event loop for the blocking API.

A bridge with no policy: every blocking call hands a coroutine to this loop and
waits for its result: one ``call_soon_threadsafe`` there, one lock release back,
which is the least a thread round trip can cost (a ``concurrent.futures.Future``
round trip costs a bit more). anyio's ``BlockingPortal.call`` does the same job
at several times the cost (``benchmarks/facade.py``, ``benchmarks/FACADE.md``);
this module keeps only what the facade needs. What happens at exit, on SIGTERM,
on fork and to dropped clients is ``sqltrack_sync._process``'s.

* The thread starts on first use and is a daemon, so it never blocks exit.
* Exceptions surface in the caller with their original type.
* Calls run with ``sqltrack.client.async_client.connection_owner`` set to the calling
  thread, so ``with client:`` blocks belong to threads, not to loop tasks.
* After ``os.fork()`` the child gets a fresh loop and thread on first use; the
  parent's loop is left alone, its pending tasks silenced.
* ``stop()`` (at interpreter exit) makes later calls fail at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import threading
import types
from collections.abc import Awaitable, Callable
from threading import Lock as allocate_lock
from threading import get_ident
from typing import Any, TypeVar

from sqltrack.client.connections import connection_owner
from sqltrack.process.exits import silence_pending_tasks

T = TypeVar("T")
__all__ = ["call", "call_bounded", "current", "get_loop", "stop"]


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


def get_loop() -> asyncio.AbstractEventLoop:
    """The loop of the loop thread (started if needed)."""
    current = _loop_thread
    return current.loop if current is not None else _start_loop_thread().loop


_get_loop = get_loop  # the name benchmarks/facade.py uses


def current() -> _LoopThread | None:
    """The loop thread if it runs (None before first use and in a fresh fork child)."""
    return _loop_thread


def _start_loop_thread() -> _LoopThread:
    global _loop_thread
    with _lock:
        if _loop_thread is None:
            _loop_thread = _LoopThread()
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


async def _owned(
    fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], waiter: _Waiter
) -> None:
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


if sys.version_info >= (3, 12):

    def _start_eagerly(loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        """Run ``coro`` up to its first real wait now, then in a task (an eager task).

        This saves the loop iteration a new task waits for before its first step.
        """
        asyncio.Task(coro, loop=loop, eager_start=True)

else:

    def _start_eagerly(loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        """Run ``coro`` up to its first real wait now, then in a task (an eager task):
        before Python 3.12, by stepping the coroutine once here and handing the rest
        to a task."""
        try:
            yielded = coro.send(None)
        except StopIteration:
            return
        loop.create_task(_continue(coro, yielded))


def _start(
    loop: asyncio.AbstractEventLoop,
    waiter: _Waiter,
    owner: Any,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
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
    result: T = waiter.outcome()
    return result


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


def call_bounded(fn: Callable[..., Awaitable[T]], *args: Any, owner: Any, timeout: float) -> T:
    """``await fn(*args)`` on the loop as ``owner`` (of held connections); bounded wait."""
    loop = get_loop()
    waiter = _Waiter()
    context = contextvars.copy_context()
    loop.call_soon_threadsafe(context.run, _start, loop, waiter, owner, fn, args)
    if not waiter.lock.acquire(timeout=timeout):
        raise TimeoutError(f"no result within {timeout} s")
    result: T = waiter.outcome()
    return result


def stop(timeout: float) -> None:
    """Stop the loop thread (interpreter exit): later calls fail at once."""
    if _loop_thread is not None:
        _loop_thread.stop(timeout)


def _after_fork_in_child() -> None:
    """The parent's loop thread does not exist in the child: start afresh on first use."""
    global _loop_thread, _lock
    if _loop_thread is not None:  # its tasks can never finish here: drop them quietly
        _abandoned_loops.append(_loop_thread)
        silence_pending_tasks(_loop_thread.loop)
    _loop_thread = None
    _lock = threading.Lock()


#: The parent's loop threads, in a forked child (kept: nothing of theirs is collected).
_abandoned_loops: list[_LoopThread] = []

os.register_at_fork(after_in_child=_after_fork_in_child)
