"""The blocking facade under threads, fork, and a running asyncio loop, on both engines."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import traceback
import warnings
from typing import Any

import pytest
from support.helpers import read_raw

import sqltrack
import sqltrack_sync
from sqltrack_sync import _portal

WAIT = 60.0  # generous bound for every wait on another thread or process

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def sync_client(client_kwargs):
    client = sqltrack.Client(**client_kwargs)
    yield client
    client.close()


def steps_of(kw, run_id: int) -> list[int]:
    return [s for (s,) in read_raw(kw, "SELECT step FROM metrics WHERE run_id = %s ORDER BY step",
                               [run_id])]


def connection_identity(client, conn) -> tuple[int, Any]:
    """The driver connection object, and PostgreSQL's backend pid (None for SQLite)."""
    pid = None
    if client.engine == "postgres":
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    return id(conn.async_connection), pid


def run_threads(targets) -> list[BaseException]:
    """Start one thread per target, join them all; the exceptions they raised."""
    errors: list[BaseException] = []

    def guard(target):
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), "a thread did not finish"
    return errors


# -- threads ------------------------------------------------------------------
def test_threads_log_to_their_own_runs_at_once(sync_client, client_kwargs):
    threads, steps = 8, 200
    exp = sqltrack.Experiment(sync_client, name="threads")
    runs = [exp.get_run() for _ in range(threads)]
    start = threading.Barrier(threads, timeout=WAIT)

    def log(run):
        def work():
            start.wait()
            for step in range(steps):
                run.add_metrics({"loss": step / 1000, "worker": run.id}, step=step)
        return work

    assert run_threads([log(run) for run in runs]) == []
    for run in runs:
        rows = read_raw(client_kwargs, "SELECT count(*), sum(loss), min(worker), max(worker) "
                                   "FROM metrics WHERE run_id = %s", [run.id])
        count, total, low, high = rows[0]
        assert (count, low, high) == (steps, run.id, run.id)
        assert total == pytest.approx(sum(range(steps)) / 1000)


def test_blocks_belong_to_threads(sync_client):
    """``with client:`` in two threads at once holds two connections; nested blocks in
    one thread hold the same one, and a thread without a block holds none."""
    both_inside = threading.Barrier(2, timeout=WAIT)
    identities: dict[str, tuple] = {}

    def hold(name):
        def work():
            with sync_client as outer:
                with sync_client as inner:
                    assert inner.async_connection is outer.async_connection
                    identities[name] = connection_identity(sync_client, inner)
                both_inside.wait()  # the other thread is inside its block now too
                assert connection_identity(sync_client, outer) == identities[name]
                both_inside.wait()  # neither leaves before both have checked
        return work

    errors = run_threads([hold("a"), hold("b")])
    assert errors == []
    assert identities["a"][0] != identities["b"][0]
    if sync_client.engine == "postgres":
        assert identities["a"][1] != identities["b"][1]

    # a block held by one thread is not the block of another thread
    entered, release = threading.Event(), threading.Event()

    def holder():
        with sync_client:
            entered.set()
            release.wait(WAIT)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert entered.wait(WAIT)
        with pytest.raises(RuntimeError, match="not connected"):
            sync_client.commit()
    finally:
        release.set()
        thread.join(WAIT)


def test_writes_of_a_thread_block_commit_with_that_block(sync_client, client_kwargs):
    p = "?" if sync_client.engine == "sqlite" else "%s"
    written, checked = threading.Event(), threading.Event()

    def writer():
        with sync_client:
            sync_client.execute(f"INSERT INTO experiments (name) VALUES ({p})", ["in block"])
            written.set()
            checked.wait(WAIT)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert written.wait(WAIT)
        # another thread reads on its own connection: the block has not committed yet
        assert sync_client.execute("SELECT name FROM experiments") == []
        assert read_raw(client_kwargs, "SELECT name FROM experiments") == []
    finally:
        checked.set()
        thread.join(WAIT)
    assert sync_client.execute("SELECT name FROM experiments") == [("in block",)]


# -- fork ---------------------------------------------------------------------
def _wait_child(pid: int) -> int:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child did not finish")


def test_fork_child_uses_the_same_client(sync_client, client_kwargs):
    p = "?" if sync_client.engine == "sqlite" else "%s"
    run = sqltrack.Experiment(sync_client, name="fork").get_run()
    for step in range(10):
        run.add_metrics({"loss": 1.0, "who": "parent"}, step=step)
    with sync_client as conn:  # the parent's pool holds connections now
        conn.execute("SELECT 1")

    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+: "multi-threaded process, fork() may deadlock"
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        os.close(read_end)
        try:
            for step in range(10, 20):
                run.add_metrics({"loss": 2.0, "who": "child"}, step=step)
            with sync_client:
                sync_client.execute(
                    f"INSERT INTO experiments (name) VALUES ({p})", ["made by child"]
                )
            sqltrack_sync.run_add_tags(sync_client, run.id, "child")
            report, code = b"ok", 0
        except BaseException:  # noqa: BLE001 - reported to the parent
            report, code = traceback.format_exc().encode(), 1
        os.write(write_end, report)
        os.close(write_end)
        os._exit(code)

    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    assert _wait_child(pid) == 0, report
    assert report == "ok"

    # the parent goes on with the same client, its pool and its loop
    for step in range(20, 30):
        run.add_metrics({"loss": 3.0, "who": "parent"}, step=step)
    with sync_client:
        assert sync_client.execute("SELECT count(*) FROM experiments") == [(2,)]
    assert steps_of(client_kwargs, run.id) == list(range(30))
    whos = read_raw(client_kwargs, "SELECT who, count(*) FROM metrics GROUP BY who ORDER BY who")
    assert whos == [("child", 10), ("parent", 20)]
    assert read_raw(client_kwargs, "SELECT tags FROM runs")[0][0] in ({"child": True},
                                                                   '{"child": true}')


# -- a running asyncio loop in the calling thread (Jupyter) -------------------
def test_blocking_calls_from_a_thread_running_an_event_loop(sync_client, client_kwargs):
    run = sqltrack.Experiment(sync_client, name="notebook").get_run()

    async def cell():
        # a notebook cell: blocking API called straight from a coroutine
        with run.track():
            for step in range(5):
                run.add_metrics({"loss": float(step)}, step=step)
            await asyncio.sleep(0)
            with sync_client as conn:
                conn.execute("SELECT 1")
        return sqltrack_sync.Run(sync_client, run_id=run.id).id

    assert asyncio.run(cell()) == run.id
    assert steps_of(client_kwargs, run.id) == list(range(5))
    assert read_raw(client_kwargs, "SELECT status FROM runs WHERE id = %s", [run.id]) == [
        ("COMPLETED",)
    ]


def test_blocking_call_from_sqltracks_own_loop_is_refused(sync_client):
    run = sqltrack.Experiment(sync_client, name="own loop").get_run()

    async def nested():
        run.add_tags("never")

    with pytest.raises(RuntimeError, match="deadlock"):
        _portal.call(nested)
    run.add_tags("still works")
