"""SIGTERM and Ctrl-C during a tracked run: record the status, then end the process.

A SIGTERM inside ``track()`` raises :class:`Terminated`, a SystemExit with code
143 (128 + SIGTERM, what a shell reports for a process killed by SIGTERM), so
``finally`` blocks run, the run gets its ``terminated`` status and the process
exits with status 143. A second signal during that clean-up takes the default
action and ends the process at once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
#: Set when a SIGTERM was turned into Terminated in this process.
sigterm_received = False


class Terminated(SystemExit):
    """SIGTERM arrived during a tracked run; uncaught, it exits with status 143."""

    def __init__(self) -> None:
        super().__init__(SIGTERM_EXIT_STATUS)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active, SIGTERM raises Terminated in the main thread (no-op elsewhere)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        global sigterm_received
        sigterm_received = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_cancel_task(task: asyncio.Task | None, received: list[str]) -> Iterator[None]:
    """While active, SIGTERM / SIGINT cancel ``task`` and are noted in ``received``.

    For an event loop in the main thread: the signal becomes a cancellation of the
    tracked task, which then records the status and raises Terminated or
    KeyboardInterrupt. Elsewhere (no loop in the main thread), it does nothing.
    """
    if task is None or not _in_main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    installed: list[tuple[int, object]] = []

    def on_signal(signum: int, name: str) -> None:
        global sigterm_received
        sigterm_received = sigterm_received or signum == signal.SIGTERM
        received.append(name)
        loop.remove_signal_handler(signum)  # a second signal takes the default action
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
        for signum, previous in installed:
            loop.remove_signal_handler(signum)
            if previous is not None:
                signal.signal(signum, previous)
