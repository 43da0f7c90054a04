"""sqltrack.sigterm: callbacks registered by a script run on SIGTERM, inside and outside track().

Each case is a child process that registers callbacks (one writing "first", one
raising, one deregistered, one registered as a decorator writing "second"), gets
to a known point and is sent SIGTERM. Then: the callbacks ran in order despite
the one raising, the process exited with status 143, and the run (read back with
the raw driver) has its ``terminated`` status. Both engines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.helpers import read_raw

import sqltrack.sigterm

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import sqltrack

    kw, mode, marker = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]

    def note(text):
        with open(marker, "a") as f:
            f.write(text + "\\n")

    def register_all():
        sqltrack.sigterm.register("first", lambda: note("first"))
        sqltrack.sigterm.register("broken", lambda: 1 / 0)
        sqltrack.sigterm.register("gone", lambda: note("gone"))
        sqltrack.sigterm.deregister("gone")
        sqltrack.sigterm.deregister("never-registered")

        @sqltrack.sigterm.register
        def second():
            note("second")

    def ready(run_id):
        print("ready", run_id, flush=True)

    def wait():
        while True:
            time.sleep(0.05)

    async def tracked_async():
        client = sqltrack.AsyncClient(**kw)
        exp = await sqltrack.AsyncExperiment.create(client, name="sigterm")
        run = await exp.get_run()
        async with run.track(terminated="PREEMPTED"):
            ready(run.id)
            while True:
                await asyncio.sleep(0.05)

    if mode == "enable":  # sqltrack 0.1.x style: no run at all
        register_all()
        sqltrack.sigterm.enable()
        ready(0)
        wait()
    if mode == "async-inside":
        register_all()
        asyncio.run(tracked_async())
    if mode in ("inside", "outside"):
        register_all()  # before the client exists
    client = sqltrack.Client(**kw)
    run = sqltrack.Experiment(client, name="sigterm").get_run()
    if mode == "inside":
        with run.track(terminated="PREEMPTED"):
            ready(run.id)
            wait()
    run.start(terminated="PREEMPTED")
    if mode == "outside-late":
        register_all()  # after the blocking API installed its own SIGTERM handling
    ready(run.id)
    wait()
    """
)


@pytest.mark.parametrize("mode", ["inside", "async-inside", "outside", "outside-late", "enable"])
def test_sigterm_runs_callbacks_records_terminated_exits_143(
    client_kwargs, tmp_path, mode, clean_env
):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / "callbacks.txt"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    child = subprocess.Popen(
        [sys.executable, str(script), json.dumps(client_kwargs), mode, str(marker)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("ready"), (line, child.stderr.read() if child.poll() else "")
        run_id = int(line.split()[1])
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 143, stderr
    assert marker.read_text() == "first\nsecond\n", stderr
    assert "SIGTERM callback 'broken' failed" in stderr and "ZeroDivisionError" in stderr
    if mode != "enable":
        rows = read_raw(client_kwargs, "SELECT status FROM runs WHERE id = %s", [run_id])
        assert rows == [("PREEMPTED",)], stderr


@pytest.fixture
def own_sigterm_handler():
    """The test runner's SIGTERM handler and sqltrack's callbacks are restored afterwards."""
    handler = signal.getsignal(signal.SIGTERM)
    saved = dict(sqltrack.process.signals.callbacks)
    sqltrack.process.signals.callbacks.clear()
    yield
    signal.signal(signal.SIGTERM, handler)
    sqltrack.process.signals.callbacks.clear()
    sqltrack.process.signals.callbacks.update(saved)


def test_blocking_facade_has_the_same_module():
    import sqltrack_sync

    assert sqltrack_sync.sigterm is sqltrack.sigterm


def test_register_checks_and_replaces(own_sigterm_handler):
    """Keys keep their place when registered again; non-callables are refused."""
    calls: list[str] = []
    sqltrack.sigterm.register("a", lambda: calls.append("a1"))
    sqltrack.sigterm.register("b", lambda: calls.append("b"))
    sqltrack.sigterm.register("a", lambda: calls.append("a2"))
    with pytest.raises(TypeError):
        sqltrack.sigterm.register("c", "not callable")
    with pytest.raises(TypeError):
        sqltrack.sigterm.register("only a key")
    for func in list(sqltrack.process.signals.callbacks.values()):
        func()
    assert list(sqltrack.process.signals.callbacks) == ["a", "b"]
    assert calls == ["a2", "b"]
    assert signal.getsignal(signal.SIGTERM) is sqltrack.process.signals.on_sigterm
    sqltrack.sigterm.deregister("a")
    assert list(sqltrack.process.signals.callbacks) == ["b"]
