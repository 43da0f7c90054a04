"""Run lifecycle: start / stop / track statuses and times, and signals in a child process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from datetime import datetime, timezone

import pytest

import sqltrack

CHILD_TIMEOUT = 60


def as_dt(value):
    return datetime.fromisoformat(value) if isinstance(value, str) else value


async def run_row(client, run_id: int) -> tuple:
    rows = await client.query(
        "SELECT status, time_started, time_updated FROM runs WHERE id = %s", [run_id]
    )
    status, started, updated = rows[0]
    return status, as_dt(started), as_dt(updated)


# -- start / stop -------------------------------------------------------------------------------
async def test_start_sets_running_and_times(client, run):
    before = datetime.now(timezone.utc)
    assert await run.start() is run
    after = datetime.now(timezone.utc)
    status, started, updated = await run_row(client, run.id)
    assert status == "RUNNING"
    assert before <= started <= after
    assert before <= updated <= after


async def test_start_with_explicit_times_and_none(client, run):
    t1 = datetime(2020, 1, 1, 12, tzinfo=timezone.utc)
    t2 = datetime(2020, 1, 1, 13, tzinfo=timezone.utc)
    await run.start(started=t1, updated=t2)
    assert await run_row(client, run.id) == ("RUNNING", t1, t2)
    await run.set_status("PENDING")
    await run.start(started=None, updated=None)
    assert await run_row(client, run.id) == ("RUNNING", t1, t2)


async def test_start_bad_arguments_change_nothing(client, run):
    with pytest.raises(ValueError):
        await run.start(terminated="KILLED")
    with pytest.raises(ValueError):
        await run.start(started=datetime(2020, 1, 1))
    assert await run_row(client, run.id) == ("PENDING", None, None)


async def test_stop_default_and_custom_status(client, run):
    t1 = datetime(2020, 1, 1, tzinfo=timezone.utc)
    await run.start(started=t1, updated=t1)
    before = datetime.now(timezone.utc)
    assert await run.stop() is run
    status, started, updated = await run_row(client, run.id)
    assert status == "COMPLETED"
    assert started == t1
    assert updated >= before
    for final in ["FAILED", "TIMEOUT", "PREEMPTED", "OUT_OF_MEMORY"]:
        await run.start()
        await run.stop(final)
        assert (await run_row(client, run.id))[0] == final


async def test_stop_updated_none_and_explicit(client, run):
    t1 = datetime(2021, 5, 5, tzinfo=timezone.utc)
    await run.start(updated=t1)
    await run.stop(updated=None)
    assert (await run_row(client, run.id))[::2] == ("COMPLETED", t1)
    t2 = datetime(2021, 6, 6, tzinfo=timezone.utc)
    await run.stop("FAILED", updated=t2)
    assert (await run_row(client, run.id))[::2] == ("FAILED", t2)


async def test_stop_unknown_status_changes_nothing(client, run):
    await run.start()
    row = await run_row(client, run.id)
    with pytest.raises(ValueError):
        await run.stop("FINISHED")
    assert await run_row(client, run.id) == row


async def test_start_stop_missing_run(client, experiment):
    ghost = sqltrack.AsyncRun(client, 99_999_999, experiment.id)
    with pytest.raises(sqltrack.RunNotFound):
        await ghost.start()
    with pytest.raises(sqltrack.RunNotFound):
        await ghost.stop()


# -- track --------------------------------------------------------------------------------------
async def test_track_normal(client, experiment, run):
    before = datetime.now(timezone.utc)
    async with run.track() as tracked:
        assert tracked is run
        assert (await run_row(client, run.id))[0] == "RUNNING"
        for step in range(3):
            await run.add_metrics({"loss": step / 2}, step=step)
    status, started, updated = await run_row(client, run.id)
    assert status == "COMPLETED"
    assert before <= started <= updated
    rows = await client.query("SELECT step FROM metrics WHERE run_id = %s ORDER BY step",
                              [run.id])
    assert rows == [(0,), (1,), (2,)]
    custom = await experiment.get_run()
    async with custom.track(normal="TIMEOUT"):
        pass
    assert (await run_row(client, custom.id))[0] == "TIMEOUT"


async def test_track_exception_fails_and_reraises(client, experiment, run):
    with pytest.raises(ZeroDivisionError):
        async with run.track():
            await run.add_metrics({"loss": 1.0}, step=1)
            1 / 0  # noqa: B018
    assert (await run_row(client, run.id))[0] == "FAILED"
    # metrics logged before the failure are kept
    assert await client.query("SELECT step FROM metrics WHERE run_id = %s", [run.id]) == [(1,)]
    custom = await experiment.get_run()
    with pytest.raises(MemoryError):
        async with custom.track(exception="OUT_OF_MEMORY"):
            raise MemoryError
    assert (await run_row(client, custom.id))[0] == "OUT_OF_MEMORY"


async def test_track_keyboard_interrupt(client, experiment, run):
    with pytest.raises(KeyboardInterrupt):
        async with run.track():
            raise KeyboardInterrupt
    assert (await run_row(client, run.id))[0] == "CANCELLED"
    custom = await experiment.get_run()
    with pytest.raises(KeyboardInterrupt):
        async with custom.track(interrupt="REVOKED"):
            raise KeyboardInterrupt
    assert (await run_row(client, custom.id))[0] == "REVOKED"


async def test_track_terminated_exception(client, run):
    with pytest.raises(sqltrack.Terminated) as info:
        async with run.track(terminated="PREEMPTED"):
            raise sqltrack.Terminated()
    assert info.value.code == 143
    assert (await run_row(client, run.id))[0] == "PREEMPTED"


async def test_track_system_exit(client, experiment):
    ok = await experiment.get_run()
    with pytest.raises(SystemExit):
        async with ok.track():
            sys.exit(0)
    assert (await run_row(client, ok.id))[0] == "COMPLETED"
    bad = await experiment.get_run()
    with pytest.raises(SystemExit):
        async with bad.track():
            sys.exit(2)
    assert (await run_row(client, bad.id))[0] == "FAILED"


async def test_track_cancelled_task(client, run):
    entered = asyncio.Event()

    async def work():
        async with run.track(interrupt="SUSPENDED"):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await run_row(client, run.id))[0] == "SUSPENDED"


async def test_track_unknown_status_changes_nothing(client, run):
    for kwargs in ({"normal": "DONE"}, {"exception": "x"}, {"interrupt": ""},
                   {"terminated": "KILLED"}):
        with pytest.raises(ValueError):
            async with run.track(**kwargs):
                pytest.fail("the block must not run")
    assert await run_row(client, run.id) == ("PENDING", None, None)


async def test_track_started_updated_options(client, run):
    t1 = datetime(2019, 9, 9, tzinfo=timezone.utc)
    async with run.track(started=t1, updated=None):
        assert await run_row(client, run.id) == ("RUNNING", t1, None)
    assert await run_row(client, run.id) == ("COMPLETED", t1, None)


async def test_track_twice(client, run):
    """A run can be resumed: a second track() starts it again."""
    with pytest.raises(RuntimeError):
        async with run.track():
            raise RuntimeError
    assert (await run_row(client, run.id))[0] == "FAILED"
    async with run.track():
        assert (await run_row(client, run.id))[0] == "RUNNING"
    assert (await run_row(client, run.id))[0] == "COMPLETED"


async def test_track_restores_signal_handlers(client, run):
    def handlers():
        return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    before = handlers()
    async with run.track():
        pass
    with pytest.raises(RuntimeError):
        async with run.track():
            raise RuntimeError
    assert handlers() == before
    assert (await run_row(client, run.id))[0] == "FAILED"


# -- signals, in a child process -----------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys

    import sqltrack


    async def main():
        kwargs = json.loads(os.environ["CHILD_CLIENT"])
        statuses = json.loads(os.environ["CHILD_STATUSES"])
        steps = int(os.environ["CHILD_STEPS"])
        keep_logging = os.environ["CHILD_KEEP_LOGGING"] == "1"
        client = sqltrack.AsyncClient(**kwargs)
        try:
            run = await sqltrack.AsyncRun.create(client, run_id=int(os.environ["CHILD_RUN"]))
            async with run.track(**statuses):
                step = 0
                while True:
                    await run.add_metrics({"loss": step / 10, "step_no": step}, step=step)
                    print("ack", step, flush=True)
                    step += 1
                    if step == steps:
                        print("ready", flush=True)
                    if step >= steps and not keep_logging:
                        for _ in range(2400):  # idle inside track() until the signal
                            await asyncio.sleep(0.05)
                        print("never signalled", flush=True)
                        return
                    await asyncio.sleep(0)
                    if step > 100_000:
                        print("never signalled", flush=True)
                        return
        finally:
            await client.close()


    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("caught KeyboardInterrupt", flush=True)
        sys.exit(130)
    """
)


async def run_child(tmp_path, client_kwargs, run_id, signum, statuses, steps, keep_logging):
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    env = dict(os.environ)
    env.update(
        CHILD_CLIENT=json.dumps(client_kwargs),
        CHILD_STATUSES=json.dumps(statuses),
        CHILD_STEPS=str(steps),
        CHILD_RUN=str(run_id),
        CHILD_KEEP_LOGGING="1" if keep_logging else "0",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, cwd=str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), CHILD_TIMEOUT)
            if not raw:
                stderr = await proc.stderr.read()
                pytest.fail(f"child ended before 'ready': {lines}\n{stderr.decode()}")
            lines.append(raw.decode().strip())
            if lines[-1] == "ready":
                break
        proc.send_signal(signum)
        out, err = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    lines.extend(out.decode().split("\n"))
    acked = [int(line.split()[1]) for line in lines if line.startswith("ack ")]
    return proc.returncode, lines, err.decode(), acked


SIGNAL_CASES = {
    # signal, track() statuses, child keeps logging when signalled, expected status,
    # expected exit code, expected output line
    "sigterm": (signal.SIGTERM, {}, False, "CANCELLED", 143, None),
    "sigterm-custom-logging": (signal.SIGTERM, {"terminated": "PREEMPTED"}, True,
                               "PREEMPTED", 143, None),
    "sigint": (signal.SIGINT, {}, False, "CANCELLED", 130, "caught KeyboardInterrupt"),
    "sigint-custom-logging": (signal.SIGINT, {"interrupt": "REVOKED", "terminated": "PREEMPTED"},
                              True, "REVOKED", 130, "caught KeyboardInterrupt"),
}


@pytest.mark.faults
@pytest.mark.parametrize(
    "signum, statuses, keep_logging, expected_status, expected_code, expected_line",
    list(SIGNAL_CASES.values()),
    ids=list(SIGNAL_CASES),
)
async def test_signal_during_track(
    client, client_kwargs, run, tmp_path,
    signum, statuses, keep_logging, expected_status, expected_code, expected_line,
):
    """SIGTERM / SIGINT reach a child inside track(): the run gets the status for it,
    the process ends as documented, and every acknowledged metric row is stored.
    In the "logging" cases the child is writing metrics when the signal arrives."""
    steps = 15
    code, lines, err, acked = await run_child(
        tmp_path, client_kwargs, run.id, signum, statuses, steps, keep_logging
    )
    assert code == expected_code, (lines, err)
    assert "never signalled" not in lines
    if expected_line is not None:
        assert expected_line in lines, (lines, err)
    if signum == signal.SIGTERM:
        assert "KeyboardInterrupt" not in err
    status, started, updated = await run_row(client, run.id)
    assert status == expected_status, (lines, err)
    assert started is not None and updated is not None and updated >= started
    # every acknowledged metric row is in the database
    assert acked[:steps] == list(range(steps))
    rows = await client.query(
        "SELECT step, loss, step_no FROM metrics WHERE run_id = %s ORDER BY step", [run.id]
    )
    stored = {r[0]: (r[1], r[2]) for r in rows}
    for step in acked:
        assert stored.get(step) == (step / 10, step), step
    if not keep_logging:
        assert sorted(stored) == list(range(steps))
