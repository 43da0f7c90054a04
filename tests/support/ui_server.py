"""``sqltrack ui --port 0`` as a child process over a SQLite file, for the browser tests.

The real command is started (so its start-up and token are tested too), its base URL
and token are read from the first line it prints, and it is stopped afterwards. Each
test module seeds its own file and wraps this in a ``served`` fixture.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest

#: The token each served page printed, by base URL (the browser logs in with it).
TOKENS: dict[str, str] = {}
#: How long the command may take to print its address (a loaded 2-core machine).
START_WAIT = 30
_ADDRESS = re.compile(r"http://127\.0\.0\.1:\d+/(?=\?token=(\S+))")


@contextmanager
def ui_server(dbpath: str) -> Iterator[str]:
    """Serve ``dbpath`` with ``sqltrack ui --port 0``: its base URL (no trailing slash),
    its token kept in :data:`TOKENS`; the test fails saying why when it does not start."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sqltrack", "--engine", "sqlite", "--dbpath", dbpath,
         "ui", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = process.stdout, process.stderr
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_WAIT)
    match = _ADDRESS.search(lines[0] if lines else "")
    try:
        if not match:
            process.kill()
            pytest.fail(f"sqltrack ui did not start: {lines} {stderr.read()[-800:]}")
        base = match.group(0).rstrip("/")
        TOKENS[base] = match.group(1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_seeded(factory: pytest.TempPathFactory, seed: Callable[[str], Awaitable[dict[str, int]]],
                 ) -> Iterator[tuple[str, dict[str, int], str]]:
    """A module's ``served`` fixture: a new SQLite file seeded by ``seed`` (its ids) and
    served by :func:`ui_server`: (base URL, ids, database path)."""
    dbpath = str(factory.mktemp("ui") / "ui.db")
    ids = asyncio.run(seed(dbpath))
    with ui_server(dbpath) as base:
        yield base, ids, dbpath
