"""Databases of sqltrack 0.1.4 (the real one, from PyPI, in its own venv) and of earlier
builds of this library are upgraded in place on first use; 0.1.4 keeps writing to them.

sqltrack 0.1.4 has the same import name as this package, so it runs in a throwaway
venv (built once per test session) driven by subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.helpers import pg_params, read_raw

import sqltrack

FIXTURES = Path(__file__).parent / "fixtures"
#: The 24 statuses of sqltrack 0.1.4's enum ``runstatus`` (its sql/base.sql), in its order.
STATUSES_0_1 = [
    "BOOT_FAIL", "CANCELLED", "CONFIGURING", "COMPLETED", "COMPLETING", "DEADLINE",
    "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RESV_DEL_HOLD",
    "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "RESIZING", "REVOKED", "RUNNING",
    "SIGNALING", "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "SUSPENDED", "TIMEOUT",
]
OWN_MARKS = {"sqltrack:base", "sqltrack:schema:7"}
MIGRATION = "ALTER TABLE metrics ADD COLUMN train_loss FLOAT, ADD COLUMN val_top1 FLOAT;\n"

#: What a 0.1.4 user does: setup with a migration, an experiment, runs, metrics, tags.
LEGACY_SCRIPT = r"""
import json, sys
from sqltrack import Client, Experiment, __version__
from sqltrack.commands.setup import setup
assert __version__ == "0.1.4", __version__
kw, migration, label = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
client = Client(**kw)
setup(client, [migration])
exp = Experiment(client, name="legacy-" + label)
exp.add_tags("old")
done = exp.get_run(comment="from 0.1.4")
done.start()
done.add_metrics(step=1, train_loss=0.5, val_top1=0.25)
done.add_metrics(step=2, train_loss=0.25)
done.add_tags("a", "b")
done.stop()
stopped = exp.get_run()
stopped.set_status("STOPPED")
stopped.add_metrics(step=1, train_loss=1.0)
print(json.dumps({"experiment": exp.id, "done": done.id, "stopped": stopped.id}))
"""

#: A process of this library opening a database (for the many-processes test).
OPEN_SCRIPT = r"""
import asyncio, json, sys
import sqltrack

async def main():
    client = sqltrack.AsyncClient(**json.loads(sys.argv[1]))
    try:
        await client.execute("SELECT 1")
        print(json.dumps(client.schema_outcome))
    finally:
        await client.close()

asyncio.run(main())
"""


def clean_env() -> dict[str, str]:
    """The environment without sqltrack settings or a PYTHONPATH that reaches this repo."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SQLTRACK_") and k != "PYTHONPATH"}


@pytest.fixture(scope="session")
def legacy_python(tmp_path_factory) -> str:
    """The python of a venv with sqltrack==0.1.4 from PyPI (built once per session)."""
    venv = tmp_path_factory.mktemp("sqltrack-0.1.4") / "venv"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", "sqltrack==0.1.4"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=clean_env(), timeout=300)
        if done.returncode:
            pytest.fail(f"cannot install sqltrack 0.1.4 ({' '.join(step)}):\n"
                        f"{done.stdout}\n{done.stderr}", pytrace=False)
    return str(venv / "bin" / "python")


@pytest.fixture
def pg_kwargs(pg_dsn, pg_schema) -> dict[str, Any]:
    """A fresh PostgreSQL schema, as keyword arguments of this library's client."""
    return {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema}


def run_legacy(python: str, kw: dict[str, Any], migration: Path, label: str,
               cwd: Path) -> tuple[dict[str, int], list[str]]:
    """Run LEGACY_SCRIPT with 0.1.4; its ids and the lines its ``setup`` printed."""
    legacy_kw = {k: v for k, v in kw.items() if k != "engine"}
    done = subprocess.run(
        [python, "-c", LEGACY_SCRIPT, json.dumps(legacy_kw), str(migration), label],
        capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1]


def write_migration(tmp_path: Path) -> Path:
    path = tmp_path / "001_metrics.sql"
    path.write_text(MIGRATION, encoding="utf-8")
    return path


def conn_args(kw: dict[str, Any]) -> list[str]:
    if kw["engine"] == "sqlite":
        return ["--engine", "sqlite", "--dbpath", kw["dbpath"]]
    args = ["--engine", "postgres", "--schema", kw["schema"]]
    for key, value in kw.items():
        if key not in ("engine", "schema"):
            args += ["-o", f"{key}={value}"]
    return args


def pg_columns(kw: dict[str, Any], table: str) -> set[str]:
    return {r[0] for r in read_raw(
        kw, "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s", [kw["schema"], table])}


def pg_indexes(kw: dict[str, Any], table: str) -> set[str]:
    return {r[0] for r in read_raw(
        kw, "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
        [kw["schema"], table])}


def applied_names(kw: dict[str, Any]) -> set[str]:
    return {r[0] for r in read_raw(kw, "SELECT name FROM applied_migrations")}


async def open_client(kw: dict[str, Any]) -> tuple[sqltrack.AsyncClient, str | None]:
    """A client of ``kw``, opened; and what opening did to the schema."""
    client = sqltrack.AsyncClient(**kw)
    await client.execute("SELECT 1")
    return client, client.schema_outcome


# -- sqltrack 0.1.4 -> this library ------------------------------------------------
async def test_legacy_database_upgraded_in_place(legacy_python, pg_kwargs, tmp_path):
    kw = pg_kwargs
    migration = write_migration(tmp_path)
    ids, printed = run_legacy(legacy_python, kw, migration, "one", tmp_path)
    assert printed[-2:] == ["(NEW) base.sql", "(NEW) 001_metrics.sql"]
    assert "extras" not in pg_columns(kw, "runs")  # what made the first call fail
    runs_before = read_raw(kw, "SELECT id, experiment_id, status::text, comment, tags, "
                           "time_started FROM runs ORDER BY id")
    metrics_before = read_raw(kw, "SELECT run_id, step, train_loss, val_top1 FROM metrics "
                              "ORDER BY run_id, step")
    assert len(runs_before) == 2 and len(metrics_before) == 3

    client, outcome = await open_client(kw)
    try:
        assert outcome is not None and "0.1.x" in outcome
        # Nothing rewritten: every row and the user's metric columns as they were.
        assert read_raw(kw, "SELECT id, experiment_id, status::text, comment, tags, "
                        "time_started FROM runs ORDER BY id") == runs_before
        assert read_raw(kw, "SELECT run_id, step, train_loss, val_top1 FROM metrics "
                        "ORDER BY run_id, step") == metrics_before
        assert {"extras"} <= pg_columns(kw, "runs")
        assert {"run_id", "time", "name", "value", "rank", "host"} == pg_columns(
            kw, "system_metrics")
        indexes = pg_indexes(kw, "runs")
        assert {"runs_tags_gin", "runs_tags_gin_path", "runs_extras_idx", "runs_status_idx",
                "runs_experiment_id_idx"} <= indexes
        assert "runs_tags_idx" not in indexes  # 0.1.x's GIN index on tags is used as is
        assert read_raw(kw, "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE "
                        "attrelid = 'runs'::regclass AND attname = 'status'") == [("runstatus",)]
        # One record of migrations: 0.1.x's script is never applied again.
        assert applied_names(kw) == {"base.sql", "001_metrics.sql"} | OWN_MARKS
        assert await sqltrack.setup(client, [migration]) == []

        # This library writes to the upgraded database, the user's columns included.
        legacy_run = await sqltrack.AsyncRun.create(client, run_id=ids["done"])
        await legacy_run.add_extras({"note": "upgraded"})
        await legacy_run.set_status("PREEMPTED")
        exp = await sqltrack.AsyncExperiment.create(client, name="new-lib")
        new_run = await exp.get_run()
        await new_run.add_metrics({"train_loss": 0.125}, step=1)
        assert await client.query(
            "SELECT status::text, extras FROM runs WHERE id = %s", [ids["done"]]
        ) == [("PREEMPTED", {"note": "upgraded"})]
        assert await client.query(
            "SELECT train_loss FROM metrics WHERE run_id = %s", [new_run.id]) == [(0.125,)]
    finally:
        await client.close()

    again, outcome = await open_client(kw)  # idempotent: the second open does nothing
    await again.close()
    assert outcome is None
    done = subprocess.run([sys.executable, "-m", "sqltrack", *conn_args(kw), "setup",
                           str(migration)], capture_output=True, text=True, env=clean_env())
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[:2] == ["base schema up to date", "skipped  001_metrics.sql (applied before)"]

    # Mixed fleet: 0.1.4 keeps working on the upgraded database.
    ids2, printed = run_legacy(legacy_python, kw, migration, "two", tmp_path)
    assert printed[-2:] == ["(OK) base.sql", "(OK) 001_metrics.sql"]
    rows = read_raw(kw, "SELECT id, status::text, tags FROM runs WHERE id IN (%s, %s) "
                    "ORDER BY id", [ids2["done"], ids2["stopped"]])
    assert rows == [(ids2["done"], "COMPLETED", {"a": True, "b": True}),
                    (ids2["stopped"], "STOPPED", None)]
    assert read_raw(kw, "SELECT step, train_loss, val_top1 FROM metrics WHERE run_id = %s "
                    "ORDER BY step", [ids2["done"]]) == [(1, 0.5, 0.25), (2, 0.25, None)]
    assert applied_names(kw) == {"base.sql", "001_metrics.sql"} | OWN_MARKS


# -- this library -> sqltrack 0.1.4 ------------------------------------------------
async def test_legacy_client_writes_to_new_database(legacy_python, pg_kwargs, tmp_path):
    kw = pg_kwargs
    client, outcome = await open_client(kw)
    try:
        assert outcome == "created the sqltrack tables"
        exp = await sqltrack.AsyncExperiment.create(client, name="new-first")
        mine = await exp.get_run()
        await mine.add_extras({"gpu": "a100"})

        migration = write_migration(tmp_path)
        ids, printed = run_legacy(legacy_python, kw, migration, "x", tmp_path)
        assert printed[-2:] == ["(OK) base.sql", "(NEW) 001_metrics.sql"]
        assert await sqltrack.setup(client, [migration]) == []  # 0.1.4 applied it
        rows = await client.query(
            "SELECT status::text, comment, tags, time_started IS NOT NULL FROM runs "
            "WHERE id IN (%s, %s) ORDER BY id", [ids["done"], ids["stopped"]])
        assert rows == [("COMPLETED", "from 0.1.4", {"a": True, "b": True}, True),
                        ("STOPPED", None, None, False)]
        assert await client.query(
            "SELECT tags FROM experiments WHERE id = %s", [ids["experiment"]]
        ) == [({"old": True},)]
        # 0.1.4's migration declared columns; this client (opened before) writes to them.
        await mine.add_metrics({"train_loss": 2.0, "val_top1": 0.5}, step=3)
        assert await client.query(
            "SELECT step, train_loss, val_top1 FROM metrics WHERE run_id = %s", [mine.id]
        ) == [(3, 2.0, 0.5)]
        legacy_run = await sqltrack.AsyncRun.create(client, run_id=ids["stopped"])
        await legacy_run.set_status("SPECIAL_EXIT")
        assert await client.query(
            "SELECT status::text FROM runs WHERE id = %s", [ids["stopped"]]
        ) == [("SPECIAL_EXIT",)]
    finally:
        await client.close()
    assert applied_names(kw) == {"base.sql", "001_metrics.sql"} | OWN_MARKS


# -- earlier builds of this library ------------------------------------------------
def make_early_postgres(kw: dict[str, Any]) -> None:
    """A schema as earlier builds made it (run_status, 15 values, sqltrack_migrations)."""
    conninfo = {k: v for k, v in kw.items() if k not in ("engine", "schema")}
    with psycopg.connect(**conninfo) as conn:
        conn.execute(f'CREATE SCHEMA "{kw["schema"]}"')
        conn.execute(f'SET search_path TO "{kw["schema"]}"')
        conn.execute((FIXTURES / "early_build_postgres.sql").read_text())
        conn.execute("INSERT INTO sqltrack_migrations (name) VALUES ('sqltrack:base'), "
                     "('007_user.sql')")
        conn.execute("INSERT INTO experiments (id, name) VALUES (5, 'early')")
        conn.execute("INSERT INTO runs (id, experiment_id, status) VALUES "
                     "(11, 5, 'RUNNING'), (12, 5, 'FAILED')")
        conn.execute("ALTER TABLE metrics ADD COLUMN loss DOUBLE PRECISION")
        conn.execute("INSERT INTO metrics (run_id, step, loss) VALUES (11, 1, 0.5)")


async def test_early_postgres_build_upgraded(pg_kwargs, tmp_path):
    kw = pg_kwargs
    make_early_postgres(kw)
    times = read_raw(kw, "SELECT name, time_applied FROM sqltrack_migrations ORDER BY name")
    client, outcome = await open_client(kw)
    try:
        assert outcome is not None and "earlier sqltrack build" in outcome
        labels = await client.query("SELECT enumlabel FROM pg_enum WHERE enumtypid = "
                                    "'runstatus'::regtype")
        assert sorted(r[0] for r in labels) == sorted(STATUSES_0_1)
        assert await client.query("SELECT to_regtype('run_status')") == [(None,)]
        assert await client.query("SELECT to_regclass('sqltrack_migrations')") == [(None,)]
        # Rows of the old record kept, with their times; plus the marks.
        assert read_raw(kw, "SELECT name, time_applied FROM applied_migrations "
                        "WHERE name IN ('sqltrack:base', '007_user.sql') ORDER BY name") == times
        assert applied_names(kw) == {"base.sql", "007_user.sql"} | OWN_MARKS
        user_script = tmp_path / "007_user.sql"
        user_script.write_text("INSERT INTO experiments (name) VALUES ('twice');")
        assert await sqltrack.setup(client, [user_script]) == []
        run = await sqltrack.AsyncRun.create(client, run_id=11)
        await run.set_status("STOPPED")
        assert await client.query("SELECT id, status::text FROM runs ORDER BY id") == [
            (11, "STOPPED"), (12, "FAILED")]
        assert await client.query("SELECT 'RESV_DEL_HOLD'::runstatus::text") == [
            ("RESV_DEL_HOLD",)]
        assert await client.query("SELECT run_id, step, loss FROM metrics") == [(11, 1, 0.5)]
        assert "extras" in pg_columns(kw, "runs")
        # No triggers left (Citus): sqltrack's statements advance the id sequence.
        assert read_raw(kw, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND "
                        "tgrelid IN ('runs'::regclass, 'experiments'::regclass)") == []
        assert read_raw(kw, "SELECT to_regprocedure('sqltrack_advance_id()')") == [(None,)]
        await sqltrack.AsyncRun.create(client, 5, 4000)
        assert (await sqltrack.AsyncRun.create(client, 5)).id == 4001
    finally:
        await client.close()


def make_early_sqlite(path: Path) -> None:
    """A SQLite file as earlier builds made it (15-status CHECK, sqltrack_migrations)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript((FIXTURES / "early_build_sqlite.sql").read_text())
        conn.executescript("""
            PRAGMA foreign_keys = ON;
            INSERT INTO sqltrack_migrations (name) VALUES ('sqltrack:base'), ('007_user.sql');
            INSERT INTO experiments (id, name) VALUES (5, 'early');
            INSERT INTO runs (id, experiment_id, status, tags, extras)
                VALUES (11, 5, 'RUNNING', '{"a": true}', '{"k": 1}'), (12, 5, 'FAILED', NULL, NULL),
                       (40, 5, 'PENDING', NULL, NULL);
            DELETE FROM runs WHERE id = 40;
            INSERT INTO run_links (from_id, kind, to_id) VALUES (12, 'retry-of', 11);
            ALTER TABLE metrics ADD COLUMN loss REAL;
            INSERT INTO metrics (run_id, step, loss) VALUES (11, 1, 0.5), (12, 1, 0.75);
            CREATE INDEX user_runs_comment_idx ON runs (comment);
            CREATE VIEW user_running AS SELECT id FROM runs WHERE status = 'RUNNING';
        """)
        conn.commit()


async def test_early_sqlite_build_upgraded(tmp_path):
    path = tmp_path / "early.db"
    make_early_sqlite(path)
    kw = {"engine": "sqlite", "dbpath": str(path)}
    runs_before = read_raw(kw, "SELECT * FROM runs ORDER BY id")
    times = read_raw(kw, "SELECT name, time_applied FROM sqltrack_migrations ORDER BY name")
    with pytest.raises(sqlite3.IntegrityError):  # the old CHECK refuses STOPPED
        read_raw(kw, "UPDATE runs SET status = 'STOPPED' WHERE id = 11")
    client, outcome = await open_client(kw)
    try:
        assert outcome is not None and "earlier sqltrack build" in outcome
        assert read_raw(kw, "SELECT * FROM runs ORDER BY id") == runs_before
        assert read_raw(kw, "SELECT run_id, step, loss FROM metrics ORDER BY run_id") == [
            (11, 1, 0.5), (12, 1, 0.75)]
        assert read_raw(kw, "SELECT * FROM run_links") == [(12, "retry-of", 11)]
        assert read_raw(kw, "SELECT name, time_applied FROM applied_migrations WHERE name IN "
                        "('sqltrack:base', '007_user.sql') ORDER BY name") == times
        assert applied_names(kw) == {"007_user.sql"} | OWN_MARKS
        objects = {r[0] for r in read_raw(kw, "SELECT name FROM sqlite_master")}
        assert {"user_runs_comment_idx", "runs_status_idx", "runs_experiment_id_idx",
                "user_running", "system_metrics"} <= objects
        assert not objects & {"sqltrack_migrations", "sqltrack_runs_rebuild"}
        assert read_raw(kw, "PRAGMA foreign_key_check") == []
        for status in STATUSES_0_1:
            await sqltrack.run_set_status(client, 11, status)
            assert read_raw(kw, "SELECT status FROM runs WHERE id = 11") == [(status,)]
        assert read_raw(kw, "SELECT id FROM user_running") == []
        # Generated ids stay above every id used before (40 was deleted).
        exp = await sqltrack.AsyncExperiment.create(client, name="early")
        assert (await exp.get_run()).id == 41
        # Foreign keys are on again after the rebuild: deleting a run cascades.
        await client.execute("DELETE FROM runs WHERE id = 11")
        assert read_raw(kw, "SELECT run_id FROM metrics") == [(12,)]
        assert read_raw(kw, "SELECT * FROM run_links") == []
    finally:
        await client.close()
    again, outcome = await open_client(kw)
    await again.close()
    assert outcome is None


# -- many processes at once --------------------------------------------------------
def open_in_processes(kw: dict[str, Any], count: int) -> list[str | None]:
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_SCRIPT, json.dumps(kw)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=clean_env()) for _ in range(count)]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    return outcomes


def test_many_processes_open_legacy_database(legacy_python, pg_kwargs, tmp_path):
    kw = pg_kwargs
    ids, _ = run_legacy(legacy_python, kw, write_migration(tmp_path), "many", tmp_path)
    outcomes = open_in_processes(kw, 4)
    assert len([o for o in outcomes if o]) == 1 and "0.1.x" in next(o for o in outcomes if o)
    assert "extras" in pg_columns(kw, "runs")
    assert applied_names(kw) == {"base.sql", "001_metrics.sql"} | OWN_MARKS
    assert read_raw(kw, "SELECT count(*) FROM runs") == [(2,)]


def test_many_processes_open_early_sqlite_database(tmp_path):
    path = tmp_path / "early.db"
    make_early_sqlite(path)
    kw = {"engine": "sqlite", "dbpath": str(path)}
    outcomes = open_in_processes(kw, 4)
    assert len([o for o in outcomes if o]) == 1
    assert read_raw(kw, "SELECT id, status FROM runs ORDER BY id") == [
        (11, "RUNNING"), (12, "FAILED")]
    assert read_raw(kw, "SELECT count(*) FROM sqlite_master WHERE name = 'runs'") == [(1,)]


def test_many_processes_open_early_postgres_database(pg_kwargs):
    make_early_postgres(pg_kwargs)
    outcomes = open_in_processes(pg_kwargs, 4)
    assert len([o for o in outcomes if o]) == 1
    assert read_raw(pg_kwargs, "SELECT count(*) FROM pg_enum WHERE enumtypid = "
                    "'runstatus'::regtype") == [(24,)]


# -- every status, both engines ----------------------------------------------------
async def test_every_original_status_accepted(client, run):
    assert list(sqltrack.STATUSES) == STATUSES_0_1
    for status in STATUSES_0_1:
        assert await run.set_status(status) is run
        assert await client.query("SELECT status FROM runs WHERE id = %s", [run.id]) == [
            (status,)]
    async with run.track(normal="STOPPED"):
        pass
    assert await client.query("SELECT status FROM runs WHERE id = %s", [run.id]) == [
        ("STOPPED",)]


def test_blocking_track_stopped(client_kwargs):
    client = sqltrack.Client(**client_kwargs)
    try:
        run = sqltrack.Experiment(client, name="blocking").get_run()
        with run.track(normal="STOPPED", exception="REQUEUE_HOLD"):
            pass
        assert read_raw(client_kwargs, "SELECT status FROM runs WHERE id = %s",
                        [run.id]) == [("STOPPED",)]
        with pytest.raises(RuntimeError), run.track(exception="REQUEUE_HOLD"):
            raise RuntimeError("boom")
        assert read_raw(client_kwargs, "SELECT status FROM runs WHERE id = %s",
                        [run.id]) == [("REQUEUE_HOLD",)]
    finally:
        client.close()

