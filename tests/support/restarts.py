"""Logging through server restarts, shared by the restart fault tests (one PostgreSQL
server: tests/faults/test_faults_restart.py; a Citus worker: test_citus_faults.py).

A :class:`Logger` logs steps to one run in a loop and times every call;
:func:`log_through_restarts` keeps a write-through and a buffered logger going while
the test's ``restart(how)`` takes the server away several times, so that each test
checks the same record of calls against its own database afterwards.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Sequence

import psycopg

import sqltrack
from sqltrack.metrics.buffer import MetricWriteError

from .fault_runner import metrics_of
from .waiting import WAIT, until

#: The clients' pool timeout in the restart tests.
POOL_TIMEOUT = 3.0
CALL_BOUND = 2 * POOL_TIMEOUT + 10.0  # two waits for a connection (try, retry) and margin


class Logger:
    """Logs steps to one run until told to stop, timing each call."""

    def __init__(self, run: sqltrack.AsyncRun) -> None:
        self.run = run
        self.calls: list[tuple[int, float, float, BaseException | None]] = []
        self.acked: list[int] = []
        self.lost_steps: set[int] = set()  # buffered rows reported as not written
        self.stop = False

    async def loop(self) -> None:
        step = 0
        while not self.stop:
            start = time.monotonic()
            error = None
            try:
                await asyncio.wait_for(
                    self.run.add_metrics(metrics_of(step), step=step), CALL_BOUND
                )
            except (psycopg.OperationalError, sqltrack.SqltrackError) as caught:
                error = caught
                self.note_lost(caught)
            except asyncio.TimeoutError as caught:
                error = caught  # a hang: reported below
            self.calls.append((step, start, time.monotonic(), error))
            if error is None:
                self.acked.append(step)
            step += 1
            await asyncio.sleep(0.005 if error is None else 0.05)

    def successes_since(self, moment: float) -> int:
        return sum(1 for _, start, _, error in self.calls if start > moment and error is None)

    def note_lost(self, error: BaseException) -> None:
        if isinstance(error, MetricWriteError):
            found = re.search(r"steps (-?\d+)\.\.(-?\d+)", str(error))
            assert found, f"a MetricWriteError that names no steps: {error}"
            self.lost_steps |= set(range(int(found[1]), int(found[2]) + 1))


async def until_through(*loggers: Logger, since: float, calls: int) -> None:
    """Wait until each logger had ``calls`` calls through since ``since`` (bounded)."""
    await until(lambda: all(logger.successes_since(since) >= calls for logger in loggers),
                f"{calls} calls through for each run", timeout=max(WAIT, 2 * CALL_BOUND),
                interval=0.02, detail=lambda: [
                    (logger.successes_since(since), logger.calls[-1:]) for logger in loggers])




async def log_through_restarts(loggers: Sequence[Logger], restarts: int,
                               restart: Callable[[str], None]) -> list[tuple[float, float]]:
    """Run ``loggers`` while ``restart(how)`` (in a thread; ``how`` alternates
    ``"stop-start"`` and ``"restart"``) is called ``restarts`` times, each once every
    logger has 5 calls through again, at a random moment of their calls; stop them once
    each has 20 calls through after the last. The (down, up) time of each restart."""
    tasks = [asyncio.create_task(logger.loop()) for logger in loggers]
    windows: list[tuple[float, float]] = []
    try:
        for number in range(restarts):
            await until_through(*loggers, since=windows[-1][1] if windows else 0, calls=5)
            await asyncio.sleep(random.uniform(0, 0.05))
            how = "restart" if number % 2 else "stop-start"
            down = time.monotonic()
            await asyncio.to_thread(restart, how)
            windows.append((down, time.monotonic()))
        await until_through(*loggers, since=windows[-1][1], calls=20)
    finally:
        for logger in loggers:
            logger.stop = True
        await asyncio.gather(*tasks)
    return windows
