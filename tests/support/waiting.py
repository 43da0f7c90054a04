"""Waiting for a condition, never for a fixed time (CI runs on a busy 2-core machine).

Each wait polls its condition (the database, a file, a child's output) until it
holds, and fails with a message saying what did not happen once a generous
bound (``WAIT`` seconds by default) has passed.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

#: The default bound of a wait: long enough for a loaded machine, short of a hang.
WAIT = 60.0

T = TypeVar("T")


def _failure(what: str, timeout: float, detail: Callable[[], Any] | None) -> AssertionError:
    more = f" ({detail()})" if detail is not None else ""
    return AssertionError(f"not within {timeout:g} s: {what}{more}")


def wait_until(condition: Callable[[], T], what: str, timeout: float = WAIT,
               interval: float = 0.02, detail: Callable[[], Any] | None = None) -> T:
    """Poll ``condition`` until it returns a true value (returned); fail after ``timeout``
    saying ``what`` did not happen (and ``detail()``, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, detail)
        time.sleep(interval)


async def until(condition: Callable[[], T], what: str, timeout: float = WAIT,
                interval: float = 0.01, detail: Callable[[], Any] | None = None) -> T:
    """``wait_until`` on an event loop: the loop runs between the polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, detail)
        await asyncio.sleep(interval)


class Output:
    """A child's stdout and stderr (text pipes), read to their end by two threads.

    No pipe ever fills (a child writing warnings on stderr never blocks), and a
    test waits for a line of stdout with a bound: ``line(test, what)``.
    """

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._ended = 0  # streams read to their end
        self._threads = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((process.stdout, self.out),
                                               (process.stderr, self.err))]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended += 1
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.err)

    def line(self, test: Callable[[str], bool], what: str, timeout: float = WAIT) -> str:
        """The first line of stdout that passes ``test``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.out if test(line)), None)
                if found is not None:
                    return found
                if self._ended == len(self._threads):
                    raise AssertionError(f"the child ended ({self.process.poll()}) before "
                                         f"{what}; stdout {self.out[-5:]}; stderr "
                                         f"{self.stderr[-3000:]}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"not within {timeout:g} s: {what}; stdout "
                                         f"{self.out[-5:]}; stderr {self.stderr[-3000:]}")
                self._changed.wait(remaining)

    def finish(self, timeout: float = 2 * WAIT) -> tuple[list[str], str]:
        """Wait for the child's end (killed after ``timeout``): its stdout lines, stderr."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the child did not end within {timeout:g} s; stderr "
                                 f"{self.stderr[-3000:]}") from None
        for thread in self._threads:
            thread.join(timeout)
        return list(self.out), self.stderr
