"""How a blocking-API program ends, and what its run records, on both engines.

Each test writes a script, runs it as ``python script`` with the connection
settings in ``SQLTRACK_DSN_*`` environment variables (the spec's
``sqltrack.Client()`` with no arguments), and reads the database back with the
raw driver. The script says ``ready`` once it has logged its steps; signals are
sent only then, so every step before them is acknowledged and must be there.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.helpers import child_env, read_raw

WAIT = 60.0  # generous bound for every wait on the child
#: A process told to end by a second signal must be gone well within this (a clean-up
#: at exit is bounded by 30 s; the hanging clean-ups below would take 300 s).
ENDS_WITHIN = 20.0
STEPS = 7
ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import asyncio, json, os, sys, time
import sqltrack
import sqltrack.model.runs

client = sqltrack.Client()
run = sqltrack.Experiment(client, name="lifecycle").get_run()
print(run.id, flush=True)
options = json.loads(os.environ.get("TEST_OPTIONS", "{}"))


def log_steps():
    for step in range(@STEPS@):
        run.add_metrics({"loss": 1.0 / (step + 1)}, step=step)


def ready_then_wait():
    print("ready", flush=True)
    time.sleep(300)


def slow_stop():
    # clean-up that hangs: stopping a run takes minutes
    original = sqltrack.model.runs.AsyncRun.stop

    async def stop(self, *args, **kwargs):
        print("stopping", flush=True)
        await asyncio.sleep(300)
        return await original(self, *args, **kwargs)

    sqltrack.model.runs.AsyncRun.stop = stop
""".replace("@STEPS@", str(STEPS))

SCRIPTS = {
    "track_wait": """
with run.track(**options):
    log_steps()
    ready_then_wait()
""",
    "track_raise": """
with run.track(**options):
    log_steps()
    raise ValueError("boom in the run")
""",
    "start_end": """
run.start()
log_steps()
""",
    "start_raise": """
run.start()
log_steps()
raise ValueError("boom after start")
""",
    "start_wait": """
run.start(**options)
log_steps()
ready_then_wait()
""",
    "start_wait_in_block": """
run.start(**options)
log_steps()
p = "?" if client.engine == "sqlite" else "%s"
with client:  # a write in an open block (on SQLite: the write lock is held)
    client.execute(f"INSERT INTO experiments (name) VALUES ({p})", ["uncommitted"])
    ready_then_wait()
""",
    "late_atexit": """
run.start()
log_steps()
""",
    "track_slow_cleanup": """
slow_stop()
with run.track():
    log_steps()
    ready_then_wait()
""",
    "start_slow_cleanup": """
slow_stop()
run.start()
log_steps()
ready_then_wait()
""",
    "fork_child_exits": """
run.start()
log_steps()
pid = os.fork()
if pid == 0:
    run.add_metrics({"loss": 0.0}, step=100)
    sys.exit(0)  # a normal exit: the child's clean-up runs
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
p = "?" if client.engine == "sqlite" else "%s"
print(client.execute(f"SELECT status FROM runs WHERE id = {p}", [run.id])[0][0], flush=True)
run.add_metrics({"loss": 0.0}, step=101)
""",
}


@pytest.fixture
def db_env(client_kwargs) -> dict[str, str]:
    """The environment of a child process: ``SQLTRACK_DSN_*`` for the test database."""
    return child_env(client_kwargs, "lifecycle")


#: Lines placed before the prelude (before sqltrack is first used).
HEADS = {
    "late_atexit": """
import atexit

def late():  # runs after sqltrack's own clean-up (atexit handlers run last-in first-out)
    try:
        run.add_metrics({"loss": 0.0}, step=999)
        print("late: logged", flush=True)
    except Exception as error:
        print("late:", type(error).__name__, flush=True)

atexit.register(late)
""",
}


class Child:
    """A script running in a child process, its stdout read line by line."""

    def __init__(self, tmp_path: Path, env: dict[str, str], script: str, **options) -> None:
        path = tmp_path / f"child_{script}_{len(list(tmp_path.glob('child_*')))}.py"
        path.write_text(HEADS.get(script, "") + PRELUDE + SCRIPTS[script])
        env = {**env, "TEST_OPTIONS": json.dumps(options)}
        self.proc = subprocess.Popen(
            [sys.executable, str(path)], cwd=tmp_path, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr.append),
                         daemon=True).start()
        self._run_id: int | None = None

    @property
    def run_id(self) -> int:
        """The id of the child's run (the first line it prints)."""
        if self._run_id is None:
            self._run_id = int(self.line())
        return self._run_id

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line)
        put("")

    def line(self) -> str:
        """The next line the child prints ('' at its end)."""
        try:
            line = self._lines.get(timeout=WAIT)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(f"the child printed nothing for {WAIT} s; stderr: {self.stderr}")
        if not line and self.proc.poll() not in (None, 0):
            self.proc.wait(WAIT)
            pytest.fail(f"the child ended early ({self.proc.returncode}): {self.stderr}")
        return line.strip()

    def expect(self, text: str) -> None:
        assert self.run_id  # the first line is the run id
        line = self.line()
        assert line == text, f"expected {text!r}, got {line!r}; stderr: {self.stderr}"

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        """The exit status (negative: the signal that ended the child)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the child did not end within {timeout} s; stderr: {self.stderr}")

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)


def status_and_steps(kw, run_id: int) -> tuple[str, list[int]]:
    status = read_raw(kw, "SELECT status FROM runs WHERE id = %s", [run_id])[0][0]
    steps = read_raw(kw, "SELECT step FROM metrics WHERE run_id = %s ORDER BY step", [run_id])
    return status, [s for (s,) in steps]


# -- track() --------------------------------------------------------------------
def test_sigterm_in_track(tmp_path, db_env, client_kwargs):
    children = {  # each child with its expected status, run at the same time
        "CANCELLED": Child(tmp_path, db_env, "track_wait"),
        "TIMEOUT": Child(tmp_path, db_env, "track_wait", terminated="TIMEOUT"),
    }
    for child in children.values():
        child.expect("ready")
        child.signal(signal.SIGTERM)
    for expected, child in children.items():
        assert child.wait() == 143, child.stderr
        assert status_and_steps(client_kwargs, child.run_id) == (expected, list(range(STEPS)))


def test_sigint_in_track(tmp_path, db_env, client_kwargs):
    children = {
        "CANCELLED": Child(tmp_path, db_env, "track_wait"),
        "PREEMPTED": Child(tmp_path, db_env, "track_wait", interrupt="PREEMPTED"),
    }
    for child in children.values():
        child.expect("ready")
        child.signal(signal.SIGINT)
    for expected, child in children.items():
        assert child.wait() == -signal.SIGINT, child.stderr  # Python's exit after Ctrl-C
        assert "KeyboardInterrupt" in child.stderr
        assert status_and_steps(client_kwargs, child.run_id) == (expected, list(range(STEPS)))


def test_exception_in_track(tmp_path, db_env, client_kwargs):
    child = Child(tmp_path, db_env, "track_raise")
    assert child.wait() == 1
    assert "Traceback (most recent call last)" in child.stderr
    assert "ValueError: boom in the run" in child.stderr
    assert status_and_steps(client_kwargs, child.run_id) == ("FAILED", list(range(STEPS)))


# -- a run left open at interpreter exit --------------------------------------
def test_open_run_at_normal_exit_completes(tmp_path, db_env, client_kwargs):
    child = Child(tmp_path, db_env, "start_end")
    assert child.wait() == 0, child.stderr
    assert status_and_steps(client_kwargs, child.run_id) == ("COMPLETED", list(range(STEPS)))


def test_open_run_at_exit_by_exception_fails(tmp_path, db_env, client_kwargs):
    child = Child(tmp_path, db_env, "start_raise")
    assert child.wait() == 1
    assert "ValueError: boom after start" in child.stderr
    assert status_and_steps(client_kwargs, child.run_id) == ("FAILED", list(range(STEPS)))


def test_sigterm_with_an_open_run(tmp_path, db_env, client_kwargs):
    """``run.start(terminated=...)`` without track(): SIGTERM records ``terminated``,
    then ends the process as SIGTERM does."""
    child = Child(tmp_path, db_env, "start_wait", terminated="PREEMPTED")
    child.expect("ready")
    child.signal(signal.SIGTERM)
    assert child.wait() == -signal.SIGTERM, child.stderr
    assert status_and_steps(client_kwargs, child.run_id) == ("PREEMPTED", list(range(STEPS)))


def test_sigterm_with_an_open_run_inside_a_block(tmp_path, db_env, client_kwargs):
    """SIGTERM while the main thread is in a ``with client:`` block that wrote: the
    block is rolled back (as the end of the process would), the run stopped."""
    child = Child(tmp_path, db_env, "start_wait_in_block")
    child.expect("ready")
    child.signal(signal.SIGTERM)
    assert child.wait() == -signal.SIGTERM, child.stderr
    assert status_and_steps(client_kwargs, child.run_id) == ("CANCELLED", list(range(STEPS)))
    assert read_raw(client_kwargs, "SELECT name FROM experiments") == [("lifecycle",)]


def test_sigint_with_an_open_run(tmp_path, db_env, client_kwargs):
    child = Child(tmp_path, db_env, "start_wait")
    child.expect("ready")
    child.signal(signal.SIGINT)
    assert child.wait() == -signal.SIGINT, child.stderr
    assert status_and_steps(client_kwargs, child.run_id) == ("CANCELLED", list(range(STEPS)))


def test_blocking_call_after_the_exit_cleanup_fails_fast(tmp_path, db_env, client_kwargs):
    """An atexit handler that runs after sqltrack's clean-up gets an error, not a hang."""
    child = Child(tmp_path, db_env, "late_atexit")
    child.expect("late: RuntimeError")
    assert child.wait() == 0, child.stderr
    assert status_and_steps(client_kwargs, child.run_id) == ("COMPLETED", list(range(STEPS)))


def test_forked_child_leaves_the_parents_run_open(tmp_path, db_env, client_kwargs):
    """A forked child that exits normally does not stop the runs its parent has open."""
    child = Child(tmp_path, db_env, "fork_child_exits")
    child.expect("RUNNING")
    assert child.wait() == 0, child.stderr
    assert status_and_steps(client_kwargs, child.run_id) == (
        "COMPLETED", [*range(STEPS), 100, 101]
    )


# -- a second signal during clean-up ends the process -------------------------
def test_second_signal_during_cleanup_ends_the_process(tmp_path, db_env, client_kwargs):
    """The clean-up hangs (stopping a run takes minutes); a second signal ends the
    process all the same: in track() (SIGTERM, Ctrl-C) and for a run.start() run."""
    children = [
        (Child(tmp_path, db_env, "track_slow_cleanup"), signal.SIGTERM),
        (Child(tmp_path, db_env, "track_slow_cleanup"), signal.SIGINT),
        (Child(tmp_path, db_env, "start_slow_cleanup"), signal.SIGTERM),
    ]
    for child, signum in children:
        child.expect("ready")
        child.signal(signum)
        child.expect("stopping")  # the clean-up has begun, and hangs
        child.signal(signum)
    for child, _ in children:
        assert child.wait(ENDS_WITHIN) != 0
        assert status_and_steps(client_kwargs, child.run_id)[1] == list(range(STEPS))
