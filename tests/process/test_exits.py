"""What each way a program ends does to its runs, rows and stderr (README: "What each
exit path does"), on both engines.

Every case is a script run as a child process with the connection settings in
``SQLTRACK_DSN_*`` variables; the database is read back with the raw driver and
the child's stderr must say nothing unexpected.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.helpers import child_env, read_raw

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120.0
ROWS = 20
POOL_ROUNDS = 25


@pytest.fixture
def env(client_kwargs) -> dict[str, str]:
    """A child's environment: ``SQLTRACK_DSN_*`` for the test database, schema made."""
    return child_env(client_kwargs, "exits")


def run_script(tmp_path: Path, env: dict[str, str], script: str, **extra: str):
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(script))
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env={**env, **extra}, text=True,
        capture_output=True, timeout=WAIT,
    )
    return proc


def steps_and_status(kw, run_id: int) -> tuple[list[int], str]:
    steps = read_raw(kw, "SELECT step FROM metrics WHERE run_id = %s ORDER BY step", [run_id])
    status = read_raw(kw, "SELECT status FROM runs WHERE id = %s", [run_id])[0][0]
    return [s for (s,) in steps], status


# -- many blocking clients ------------------------------------------------------
MANY_CLIENTS = """
    import gc, os, sys, time
    import sqltrack

    def connections(client):
        '''Server connections (PostgreSQL) or open files (SQLite) of this test's database.'''
        if client.engine == "sqlite":
            path = os.path.realpath(os.environ["SQLTRACK_DSN_DBPATH"])
            fds = os.listdir("/proc/self/fd")
            return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == path)
        rows = client.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [os.environ["SQLTRACK_DSN_APPLICATION_NAME"]])
        return rows[0][0]

    for i in range(50):  # a notebook cell run 50 times
        client = sqltrack.Client()
        run = sqltrack.Experiment(client, name="exits").get_run()
        run.add_metrics({"loss": 1.0}, step=i)
    del run
    gc.collect()
    keep = sqltrack.Client()  # a second database stays open to the end
    deadline = time.monotonic() + 60  # dropped clients close in the background
    while connections(keep) > 8 and time.monotonic() < deadline:  # two pools of 4 left
        time.sleep(0.05)
    print(connections(keep), flush=True)
"""


def test_many_clients_print_nothing_and_release_connections(tmp_path, env, client_kwargs):
    """50 re-created clients: no 'Task was destroyed' (nor anything) on stderr, at
    exit or on garbage collection; dropped clients release their connections."""
    proc = run_script(tmp_path, env, MANY_CLIENTS, SQLTRACK_DSN_APPLICATION_NAME=tmp_path.name)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert int(proc.stdout) <= 8, (  # was 50 pools' worth
        f"{proc.stdout.strip()} connections still open 60 s after the clients were dropped")
    assert len(read_raw(client_kwargs, "SELECT run_id FROM metrics")) == 50


DROPPED_WITH_OPEN_RUN = """
    import gc
    import sqltrack

    client = sqltrack.Client(buffered=True)
    run = sqltrack.Experiment(client, name="exits").get_run()
    run.start()
    run.add_metrics({"loss": 1.0}, step=0)
    print(run.id, flush=True)
    del client, run  # a notebook cell run again: the old run was never stopped
    gc.collect()
    sqltrack.Client()
"""


def test_dropped_client_with_an_open_run(tmp_path, env, client_kwargs):
    """A dropped client whose run is still open keeps it to the end: at exit the run
    gets its exit status and its buffered rows are written, silently."""
    proc = run_script(tmp_path, env, DROPPED_WITH_OPEN_RUN)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert steps_and_status(client_kwargs, int(proc.stdout)) == ([0], "COMPLETED")


# -- forked children with an inherited buffered client ----------------------------
FORK = """
    import multiprocessing, os, sys
    import sqltrack

    client = sqltrack.Client(buffered=True)
    run = sqltrack.Experiment(client, name="exits").get_run()
    run.start()
    run.add_metrics({"loss": 1.0}, step=0)  # buffered in the parent, not yet written
    how = os.environ["TEST_HOW"]

    def log(step):
        run.add_metrics({"loss": 0.5}, step=step)
        return step

    if how == "pool":
        with multiprocessing.get_context("fork").Pool(4) as pool:
            assert pool.map(log, range(1, @ROWS@ + 1)) == list(range(1, @ROWS@ + 1))
    elif how == "process":
        def many():
            for step in range(1, @ROWS@ + 1):
                log(step)
        child = multiprocessing.get_context("fork").Process(target=many)
        child.start()
        child.join()
        assert child.exitcode == 0
    else:
        pid = os.fork()
        if pid == 0:
            if how == "own_buffer_sys_exit":
                run.set_buffered()  # the child's own choice: written at its exit
            for step in range(1, @ROWS@ + 1):
                log(step)
            os._exit(0) if how == "os_exit" else sys.exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    run.add_metrics({"loss": 1.0}, step=99)
    print(run.id, flush=True)
""".replace("@ROWS@", str(ROWS))


@pytest.mark.parametrize("how", ["pool", "process", "sys_exit", "os_exit", "own_buffer_sys_exit"])
def test_forked_children_write_their_rows(tmp_path, env, client_kwargs, how):
    """Rows a forked child logs through an inherited buffered client are written by
    the child, however it ends; the parent's own rows are written once."""
    proc = run_script(tmp_path, env, FORK, TEST_HOW=how)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    steps, status = steps_and_status(client_kwargs, int(proc.stdout))
    assert steps == [0, *range(1, ROWS + 1), 99]
    assert status == "COMPLETED"


POOL_ROUNDS_SCRIPT = """
    import multiprocessing
    import sqltrack

    client = sqltrack.Client(buffered=True)
    run = sqltrack.Experiment(client, name="exits").get_run()
    run.start()
    run.add_metrics({"loss": 1.0}, step=0)

    def log(step):
        run.add_metrics({"loss": 0.5}, step=step)
        return step

    for round in range(@ROUNDS@):  # each 'with' ends in terminate(): SIGTERM to the workers
        with multiprocessing.get_context("fork").Pool(4) as pool:
            steps = range(1 + round * 4, 5 + round * 4)
            assert pool.map(log, steps) == list(steps)
    print(run.id, flush=True)
""".replace("@ROUNDS@", str(POOL_ROUNDS))


def test_pool_terminate_ends_its_workers(tmp_path, env, client_kwargs):
    """A fork Pool's terminate() (its ``with`` block's end) ends every worker, round
    after round: a worker holding the handler inherited from the parent once missed
    the SIGTERM when it came as its main thread entered its queue's lock, and the
    parent waited for it forever (about one round in twenty)."""
    proc = run_script(tmp_path, env, POOL_ROUNDS_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    steps, status = steps_and_status(client_kwargs, int(proc.stdout))
    assert steps == list(range(POOL_ROUNDS * 4 + 1))
    assert status == "COMPLETED"


SIGTERM_FORKED = """
    import os, signal, sys, threading, time
    import sqltrack

    client = sqltrack.Client()
    run = sqltrack.Experiment(client, name="exits").get_run()
    run.start()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        run.add_metrics({"loss": 0.5}, step=1)  # the child's own loop thread runs now
        # The signal reaches a thread other than the main one (as it may when it
        # comes just as the main thread enters a lock): the main thread never sees it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        os.write(write, b"x")
        threading.Event().wait()
        os._exit(0)
    os.read(read, 1)
    os.kill(pid, signal.SIGTERM)
    for _ in range(600):  # a bound for a hang, not a timing
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        sys.exit("the forked child outlived SIGTERM")
    print(os.waitstatus_to_exitcode(status), run.id, flush=True)
    run.add_metrics({"loss": 1.0}, step=2)
"""


def test_sigterm_ends_a_forked_child(tmp_path, env, client_kwargs):
    """SIGTERM ends a forked child whichever of its threads it reaches (the default
    action: the parent's handler has no runs to stop there); the parent's run is the
    parent's, stopped at its exit with its rows."""
    proc = run_script(tmp_path, env, SIGTERM_FORKED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    code, run_id = proc.stdout.split()
    assert int(code) == -15
    assert steps_and_status(client_kwargs, int(run_id)) == ([1, 2], "COMPLETED")


# -- a never-closed async client --------------------------------------------------
NEVER_CLOSED = """
    import asyncio, os
    import sqltrack

    async def main():
        client = sqltrack.AsyncClient(buffered=True)
        experiment = await sqltrack.AsyncExperiment.create(client, name="exits")
        run = await experiment.get_run()
        await run.start()
        for step in range(100):
            await run.add_metrics({"loss": 1.0}, step=step)
        print(run.id, flush=True)
        if os.environ["TEST_HOW"] == "raise":
            raise ValueError("boom")
        if os.environ["TEST_HOW"] == "interrupt":
            raise KeyboardInterrupt  # Ctrl-C

    asyncio.run(main())  # no await client.close()
"""


@pytest.mark.parametrize(("how", "status"),
                         [("normal", "COMPLETED"), ("raise", "FAILED"), ("interrupt", "CANCELLED")])
def test_never_closed_async_client(tmp_path, env, client_kwargs, how, status):
    """Its buffered rows are written at exit, its run gets the blocking API's exit
    status, and one warning line names the client."""
    proc = run_script(tmp_path, env, NEVER_CLOSED, TEST_HOW=how)
    assert (proc.returncode == 0) == (how == "normal"), proc.stderr
    assert steps_and_status(client_kwargs, int(proc.stdout)) == (list(range(100)), status)
    warnings = [line for line in proc.stderr.splitlines() if "never closed" in line]
    assert len(warnings) == 1, proc.stderr
    assert client_kwargs["engine"] in warnings[0]
    assert "Task was destroyed" not in proc.stderr
    if how == "normal":
        assert proc.stderr.strip() == warnings[0]


# -- sys.exit inside track() ----------------------------------------------------
TRACK_EXIT = """
    import os, sys
    import sqltrack

    client = sqltrack.Client()
    run = sqltrack.Experiment(client, name="exits").get_run()
    print(run.id, flush=True)
    code = os.environ["TEST_CODE"]
    with run.track():
        run.add_metrics({"loss": 1.0}, step=0)
        sys.exit(None if code == "None" else int(code))
"""


@pytest.mark.parametrize(("code", "status"),
                         [("3", "FAILED"), ("0", "COMPLETED"), ("None", "COMPLETED")])
def test_sys_exit_in_track(tmp_path, env, client_kwargs, code, status):
    """sys.exit(n) in track(): a non-zero code is the ``exception`` status, 0/None ``normal``."""
    proc = run_script(tmp_path, env, TRACK_EXIT, TEST_CODE=code)
    assert proc.returncode == (0 if code == "None" else int(code)), proc.stderr
    assert proc.stderr == ""
    assert steps_and_status(client_kwargs, int(proc.stdout)) == ([0], status)


@pytest.mark.parametrize(("code", "status"), [(3, "FAILED"), (0, "COMPLETED"), ("x", "FAILED")])
async def test_sys_exit_in_async_track(run, code, status):
    with pytest.raises(SystemExit):
        async with run.track():
            raise SystemExit(code)
    rows = await run.client.query("SELECT status FROM runs WHERE id = %s", [run.id])
    assert rows[0][0] == status
