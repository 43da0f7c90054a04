"""With no settings at all, the integrations write to ./sqltrack.db, say so in one line and
leave the local PostgreSQL server alone; a first connection that fails says what was tried.

Each program runs in a subprocess in an empty folder, with every ``SQLTRACK_*`` variable
removed and ``HOME`` / ``XDG_*`` inside that folder. libpq's variables and ``USER`` point at
a database made for the test (whose owner has the same name: sqltrack's PostgreSQL
default is ``user=$USER dbname=$USER``), so a run that went to the server would show
up there as tables.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from support.helpers import pg_params
from support.integration_helpers import EXAMPLES, ROOT

WANDB_SCRIPT = """
import sqltrack.wandb as wandb
run = wandb.init(project="defaults", config={"lr": 0.1})
for i in range(3):
    wandb.log({"loss": 1.0 / (i + 1)})
wandb.finish()
print("RUN", run.id)
"""


@pytest.fixture
def untouched_pg(pg_dsn):
    """A role and a database of the same name on the test server, and the libpq
    settings (``USER``, ``PG*``) that make it the default a PostgreSQL client picks."""
    name = f"sqltrack_untouched_{uuid.uuid4().hex[:10]}"
    params = pg_params(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{name}" LOGIN SUPERUSER')
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    env = {"USER": name, "LOGNAME": name, "PGUSER": name, "PGDATABASE": name,
           "PGHOST": str(params.get("host", "127.0.0.1")),
           "PGPORT": str(params.get("port", "5432"))}
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    yield env
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def server_objects(pg_dsn: str, database: str) -> list[str]:
    """Tables, types and functions users made in ``database`` (none when untouched)."""
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=database)
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
            "UNION ALL SELECT t.typname FROM pg_type t JOIN pg_namespace n "
            "ON n.oid = t.typnamespace WHERE n.nspname = 'public' "
            "UNION ALL SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = 'public'")]


def no_settings_env(folder: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a new user: no SQLTRACK_* variable, home inside ``folder``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SQLTRACK_", "XDG_", "PG", "WANDB_"))}
    home = folder / "home"
    home.mkdir()
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local"),
               PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **extra)
    return env


def run_in(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


def local_runs(folder: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(folder / "sqltrack.db") as conn:
        return conn.execute("SELECT r.id, e.name, r.status FROM runs r "
                            "JOIN experiments e ON e.id = r.experiment_id").fetchall()


def where_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("sqltrack: run ")]


@pytest.mark.parametrize(
    ("program", "experiment"),
    [
        ("wandb", "defaults"),
        ("lightning_train.py", "lightning-example"),
        ("transformers_train.py", "transformers-example"),
    ],
)
def test_no_settings_write_a_local_file_and_say_so(program, experiment, tmp_path, pg_dsn,
                                                   untouched_pg):
    folder = tmp_path / "empty"
    folder.mkdir()
    env = no_settings_env(tmp_path, untouched_pg)
    if program == "wandb":
        done = run_in(folder, env, "-c", WANDB_SCRIPT)
    else:
        done = run_in(folder, env, str(EXAMPLES / program), "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    database = folder / "sqltrack.db"
    runs = local_runs(folder)
    assert [(name, status) for _, name, status in runs] == [(experiment, "COMPLETED")]
    lines = where_lines(done.stderr)
    assert len(lines) == 1, done.stderr[-3000:]
    assert f"sqlite file {database}" in lines[0]
    assert f"sqltrack show {runs[0][0]} --dbpath {database}" in lines[0]
    assert server_objects(pg_dsn, untouched_pg["PGDATABASE"]) == []


def test_configured_settings_win(tmp_path, pg_dsn, untouched_pg):
    """A config file in the folder names the database: that one is used, not the default."""
    folder = tmp_path / "configured"
    folder.mkdir()
    (folder / "sqltrack.conf").write_text("engine=sqlite\ndbpath=elsewhere.db\n")
    done = run_in(folder, no_settings_env(tmp_path, untouched_pg), "-c", WANDB_SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (folder / "sqltrack.db").exists() and (folder / "elsewhere.db").is_file()
    assert f"sqlite file {folder / 'elsewhere.db'}" in where_lines(done.stderr)[0]


@pytest.mark.parametrize("how", ["keyword", "SQLTRACK_QUIET", "WANDB_SILENT"])
def test_quiet_says_nothing(how, tmp_path, untouched_pg):
    folder = tmp_path / "quiet"
    folder.mkdir()
    env = no_settings_env(tmp_path, untouched_pg)
    script = WANDB_SCRIPT
    if how == "keyword":
        script = script.replace('config={"lr": 0.1}', 'config={"lr": 0.1}, quiet=True')
    else:
        env[how] = "true"
    done = run_in(folder, env, "-c", script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert where_lines(done.stderr) == [] and len(local_runs(folder)) == 1


def test_lightning_quiet_keyword(tmp_path, untouched_pg):
    folder = tmp_path / "lq"
    folder.mkdir()
    code = ("from sqltrack.integrations.lightning import SqltrackLogger\n"
            "logger = SqltrackLogger(experiment='q', quiet=True)\n"
            "logger.log_metrics({'a': 1.0}, step=0)\nlogger.finalize('success')\n")
    done = run_in(folder, no_settings_env(tmp_path, untouched_pg), "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert where_lines(done.stderr) == [] and local_runs(folder)[0][1:] == ("q", "COMPLETED")


def test_client_without_settings_keeps_postgres_and_says_what_was_tried(tmp_path,
                                                                        untouched_pg):
    """The documented Client() still means PostgreSQL; with no server there, one error
    line names what was tried and how to choose SQLite or a config file."""
    folder = tmp_path / "noserver"
    folder.mkdir()
    env = no_settings_env(tmp_path, {**untouched_pg, "PGHOST": str(folder), "PGPORT": "1"})
    code = ("import sqltrack\nc = sqltrack.Client()\nassert c.engine == 'postgres'\n"
            "try:\n    sqltrack.Experiment(c, name='x')\n"
            "except sqltrack.CannotConnect as e:\n"
            "    assert isinstance(e, sqltrack.ConnectionLost)\n"
            "    print('ERROR', e)\n")
    done = run_in(folder, env, "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "\n" not in errors[0]
    message = errors[0]
    assert message.startswith("ERROR cannot connect to postgres ")
    assert f"host={folder}" in message and "port=1" in message
    assert f"dbname={untouched_pg['PGDATABASE']}" in message
    assert "engine='sqlite'" in message and "sqltrack.conf" in message
    assert not (folder / "sqltrack.db").exists()


def test_configured_client_that_cannot_connect_has_no_hint(tmp_path):
    import sqltrack

    client = sqltrack.Client(engine="postgres", host=str(tmp_path), port="1", dbname="x",
                             user="x")
    try:
        with pytest.raises(sqltrack.CannotConnect) as caught:
            sqltrack.Experiment(client, name="x")
    finally:
        client.close()
    text = str(caught.value)
    assert text.startswith(f"cannot connect to postgres host={tmp_path} port=1 user=x dbname=x")
    assert "no settings were found" not in text and caught.value.transient


def test_wandb_dir_holds_the_default_file(tmp_path, pg_dsn, untouched_pg):
    """``$WANDB_DIR`` (as wandb's own) is the folder of the default file and its media."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    wandb_dir = tmp_path / "wandb-dir"
    env = no_settings_env(tmp_path, {**untouched_pg, "WANDB_DIR": str(wandb_dir)})
    done = run_in(folder, env, "-c", WANDB_SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(folder.iterdir()) == []
    assert [row[1:] for row in local_runs(wandb_dir)] == [("defaults", "COMPLETED")]
    assert f"sqlite file {wandb_dir / 'sqltrack.db'}" in where_lines(done.stderr)[0]
    assert server_objects(pg_dsn, untouched_pg["PGDATABASE"]) == []
