"""W4, start-up: whole-process wall times of short Python programs.

Each program runs as ``python -c CODE`` in a fresh process (this interpreter, a
temporary working directory, no ``SQLTRACK_*`` variables), timed with
``time.perf_counter`` around ``subprocess.run``; programs are interleaved in
rounds and the median is reported. The one-step programs create a new SQLite file
each time (schema creation included), make a run and log one step; their floor is
the same done by hand with sqlite3 under ``asyncio.run`` (three small tables, one
run, one row). Start-up is measured as import + first client + first write: the
one-step programs, each within 1.5x of the hand-made one (the targets). The bare
imports are shown for information, without a target: ``import sqltrack`` loads
little by design (the rest loads on first use), so comparing it with ``import
asyncio`` could not miss; the cost it defers is in the one-step programs.

Every program runs with its modules' bytecode cached, as after ``pip install``
(which compiles it): the children get ``PYTHONPYCACHEPREFIX`` (a temporary
directory) and no ``PYTHONDONTWRITEBYTECODE``, and each program runs once, untimed,
before the rounds. Otherwise an editable checkout on a machine that sets
``PYTHONDONTWRITEBYTECODE=1`` compiles sqltrack's source in every timed process
while asyncio, sqlite3 and psycopg load from their installed ``.pyc`` files.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from itertools import count
from time import perf_counter

from common import Env, sync_facade
from harness import Case, Section, Target, measure, median, table_rows

ASYNC_ONE_STEP = """
import asyncio, sqltrack
async def main():
    client = sqltrack.AsyncClient(engine="sqlite", dbpath={path!r})
    run = await (await sqltrack.AsyncExperiment.create(client, name="w4")).get_run()
    await run.add_metrics({{"loss": 0.5}}, step=0)
    await client.close()
asyncio.run(main())
"""
SYNC_ONE_STEP = """
import sqltrack_sync
client = sqltrack_sync.Client(engine="sqlite", dbpath={path!r})
run = sqltrack_sync.Experiment(client, name="w4").get_run()
run.add_metrics({{"loss": 0.5}}, step=0)
getattr(client, "close", lambda: None)()
"""
#: The same one-step program by hand: asyncio plus sqlite3, a minimal schema of the
#: same three tables, one run and one metrics row (the floor of the one-step cases).
RAW_ONE_STEP = """
import asyncio, sqlite3
async def main():
    conn = sqlite3.connect({path!r})
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        "CREATE TABLE IF NOT EXISTS experiments (id INTEGER PRIMARY KEY, name TEXT UNIQUE);"
        "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, experiment_id INTEGER"
        " REFERENCES experiments (id), time_updated TEXT);"
        "CREATE TABLE IF NOT EXISTS metrics (run_id INTEGER REFERENCES runs (id),"
        " step INTEGER, progress REAL, loss REAL, PRIMARY KEY (run_id, step, progress));")
    experiment = conn.execute("INSERT INTO experiments (name) VALUES ('w4')").lastrowid
    run = conn.execute("INSERT INTO runs (experiment_id) VALUES (?)", (experiment,)).lastrowid
    conn.commit()
    conn.execute("INSERT INTO metrics VALUES (?, 0, 0.0, 0.5)", (run,))
    conn.commit()
    conn.close()
asyncio.run(main())
"""
IMPORT_ASYNCIO = "import asyncio"
RAW_CASE = "raw sqlite3 + asyncio: new file, run + one step"


def time_process(code: str, directory: str, environ: dict[str, str]) -> float:
    """Seconds from spawning ``python -c code`` to its exit (which must be 0)."""
    start = perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=directory, env=environ, check=True,
                   stdout=subprocess.DEVNULL)
    return perf_counter() - start


def time_one_step(template: str, directory: str, environ: dict[str, str], numbers) -> float:
    """Time a one-step program on a new SQLite file."""
    path = os.path.join(directory, f"w4-{next(numbers)}.db")
    return time_process(template.format(path=path), directory, environ)


def child_environment(directory: str) -> dict[str, str]:
    """The programs' environment: no ``SQLTRACK_*`` settings, bytecode cached in
    ``directory`` (see the module docstring)."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("SQLTRACK_") and k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = os.path.join(directory, "pycache")
    return environ


def build_cases(directory: str) -> list[Case]:
    environ = child_environment(directory)
    no_facade = None if sync_facade() else "sqltrack_sync.Client not available"
    numbers = count()

    def program(name: str, code: str, skip: str | None = None, **compare) -> Case:
        return Case(name, functools.partial(time_process, code, directory, environ), skip,
                    **compare)

    return [
        program("python -c pass", "pass"),
        program(IMPORT_ASYNCIO, IMPORT_ASYNCIO),
        program("import psycopg", "import psycopg", baseline=IMPORT_ASYNCIO),
        program("import aiosqlite", "import aiosqlite", baseline=IMPORT_ASYNCIO),
        program("import sqltrack", "import sqltrack", baseline=IMPORT_ASYNCIO),
        program("import sqltrack_sync", "import sqltrack_sync", no_facade,
                baseline=IMPORT_ASYNCIO),
        Case(RAW_CASE,
             functools.partial(time_one_step, RAW_ONE_STEP, directory, environ, numbers)),
        Case("start-up: import + first client + first write (async, new SQLite file)",
             functools.partial(time_one_step, ASYNC_ONE_STEP, directory, environ, numbers),
             baseline=RAW_CASE, target=Target(1.5), also=(IMPORT_ASYNCIO,)),
        Case("start-up: import + first client + first write (sync, new SQLite file)",
             functools.partial(time_one_step, SYNC_ONE_STEP, directory, environ, numbers),
             no_facade, baseline=RAW_CASE, target=Target(1.5), also=(IMPORT_ASYNCIO,)),
    ]


def run(env: Env, rounds: int) -> Section:
    """Measure W4 and return its table."""
    with tempfile.TemporaryDirectory(prefix="sqltrack-bench-w4-") as directory:
        cases = build_cases(directory)
        for case in cases:  # untimed: every program's bytecode written once
            if case.skip is None and case.run is not None:
                case.run()
        samples = measure(cases, rounds, env.loop)
    millis = {name: median(values) * 1e3 for name, values in samples.items()}
    section = Section(
        "W4 start-up",
        f"Whole-process wall time of `python -c ...` (fresh process each time), "
        f"{rounds} interleaved rounds. Median ms; ratio = case / baseline (lower is better).",
    )
    section.rows = table_rows(cases, millis, lambda ms: f"{ms:.0f} ms")
    return section
