"""SIGTERM and Ctrl-C during a tracked run: record the status, then end the process.

A SIGTERM inside ``track()`` raises :class:`Terminated`, a SystemExit with code
143 (128 + SIGTERM, what a shell reports for a process killed by SIGTERM), so
``finally`` blocks run, the run gets its ``terminated`` status and the process
exits with status 143. A second signal during that clean-up takes the default
action and ends the process at once.

This module is the one SIGTERM mechanism: the callbacks that ``sqltrack.process.sigterm``
registers run from every handler here (inside ``track()``, blocking or async)
and from ``on_sigterm``, the process-wide handler ``sqltrack.process.sigterm`` installs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
#: Set when a SIGTERM was turned into Terminated in this process.
sigterm_received = False
#: SIGTERM callbacks by key, in the order they were first registered (``sqltrack.process.sigterm``).
callbacks: dict[Hashable, Callable[[], object]] = {}
_callbacks_ran = False
log = logging.getLogger("sqltrack")


class Terminated(SystemExit):
    """SIGTERM arrived during a tracked run; uncaught, it exits with status 143."""

    def __init__(self) -> None:
        super().__init__(SIGTERM_EXIT_STATUS)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_callbacks() -> None:
    """SIGTERM arrived: run the registered callbacks, once per process, in order.

    An exception in one (SystemExit included) is logged and the next one runs.
    """
    global sigterm_received, _callbacks_ran
    sigterm_received = True
    if _callbacks_ran:
        return
    _callbacks_ran = True
    for key, func in list(callbacks.items()):
        try:
            func()
        except (Exception, SystemExit):  # noqa: BLE001 - the other callbacks still run
            log.exception("sqltrack: SIGTERM callback %r failed", key)


def on_sigterm(signum: int, frame: object) -> None:
    """The process-wide handler: run the callbacks, then raise Terminated (exit 143).

    The default action is restored first, so a second SIGTERM ends the process at once.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run_callbacks()
    raise Terminated()


def install_on_sigterm(replace: bool) -> bool:
    """Make ``on_sigterm`` the SIGTERM handler (main thread only); True when it is.

    Unless ``replace``, only the default action and sqltrack's own handlers (the
    blocking API's, which stops open runs) are replaced; a program's own handler
    or SIG_IGN stays in charge.
    """
    if not _in_main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    if current is on_sigterm:
        return True
    ours = getattr(current, "__module__", "").startswith(("sqltrack.", "sqltrack_sync."))
    if not (replace or current is signal.SIG_DFL or ours):
        return False
    signal.signal(signal.SIGTERM, on_sigterm)
    return True


def _after_fork_in_child() -> None:
    global _callbacks_ran
    _callbacks_ran = False


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active, SIGTERM raises Terminated in the main thread (no-op elsewhere)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm_in_block(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run_callbacks()
        raise Terminated()

    signal.signal(signal.SIGTERM, on_sigterm_in_block)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_cancel_task(task: asyncio.Task[Any] | None, received: list[str]) -> Iterator[None]:
    """While active, SIGTERM / SIGINT cancel ``task`` and are noted in ``received``.

    For an event loop in the main thread: the signal becomes a cancellation of the
    tracked task, which then records the status and raises Terminated or
    KeyboardInterrupt. Elsewhere (no loop in the main thread), it does nothing.
    """
    if task is None or not _in_main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    installed: list[tuple[int, Callable[[int, FrameType | None], Any] | int | None]] = []

    def on_signal(signum: int, name: str) -> None:
        received.append(name)
        loop.remove_signal_handler(signum)  # a second signal takes the default action
        if signum == signal.SIGTERM:
            run_callbacks()
        task.cancel()

    for signum, name in ((signal.SIGTERM, "terminated"), (signal.SIGINT, "interrupt")):
        previous = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, on_signal, signum, name)
        except (ValueError, RuntimeError, NotImplementedError):
            continue
        installed.append((signum, previous))
    try:
        yield
    finally:
        for number, handler in installed:
            loop.remove_signal_handler(number)
            if handler is not None:
                signal.signal(number, handler)
