"""The documented blocking API (spec/sqltrack-api.txt), as written, on both engines.

Every snippet of the spec runs through ``import sqltrack`` and through
``import sqltrack_sync as sqltrack``; every documented method and module
function is called once with its documented signature, and the database is
read back with the raw driver (sqlite3 / psycopg), outside sqltrack.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support.helpers import json_value, read_raw

import sqltrack
import sqltrack.model.experiments
import sqltrack.model.runs
import sqltrack_sync

API_MODULES = ("sqltrack", "sqltrack_sync")
WHEN = datetime(2024, 5, 17, 12, 30, 15, 250000, tzinfo=timezone.utc)

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture(params=API_MODULES)
def api(request):
    """``sqltrack`` itself, or ``sqltrack_sync`` imported as sqltrack."""
    return importlib.import_module(request.param)


@pytest.fixture
def api_client(api, client_kwargs):
    """A Client made through ``api`` (both names are the same class)."""
    client = api.Client(**client_kwargs)
    yield client
    client.close()


@pytest.fixture
def sync_client(client_kwargs):
    client = sqltrack.Client(**client_kwargs)
    yield client
    client.close()


def one(kw: dict[str, Any], sql: str, params=()) -> Any:
    rows = read_raw(kw, sql, params)
    assert len(rows) == 1, rows
    return rows[0][0]


def placeholder(client) -> str:
    return "?" if client.engine == "sqlite" else "%s"


def as_time(value: Any) -> datetime | None:
    """A timestamp column as an aware datetime (SQLite holds ISO text)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def run_column(kw, run_id: int, column: str) -> Any:
    value = one(kw, f"SELECT {column} FROM runs WHERE id = %s", [run_id])
    if column in ("tags", "args", "env", "extras"):
        return json_value(value)
    if column.startswith("time_"):
        return as_time(value)
    return value


def experiment_column(kw, experiment_id: int, column: str) -> Any:
    value = one(kw, f"SELECT {column} FROM experiments WHERE id = %s", [experiment_id])
    return json_value(value) if column == "tags" else value


# -- the Client snippets ------------------------------------------------------
def test_execute_snippet(api, client_kwargs):
    client = api.Client(**client_kwargs)
    client.execute("INSERT INTO experiments (name) VALUES ('from execute')")
    assert client.execute("SELECT name FROM experiments") == [("from execute",)]
    client.close()
    assert read_raw(client_kwargs, "SELECT name FROM experiments") == [("from execute",)]


def test_connection_and_cursor_snippet(api, client_kwargs):
    client = api.Client(**client_kwargs)
    p = placeholder(client)
    with client as conn:
        with conn.cursor() as cursor:
            cursor.execute(f"INSERT INTO experiments (name) VALUES ({p})", ("with conn",))
            cursor.execute(f"SELECT name FROM experiments WHERE name = {p}", ("with conn",))
            assert cursor.fetchall() == [("with conn",)]
        assert conn.execute("SELECT count(*) FROM experiments").fetchone() == (1,)
    client.close()
    # the outermost block committed
    assert read_raw(client_kwargs, "SELECT name FROM experiments") == [("with conn",)]


def test_client_cursor_snippet(api, client_kwargs):
    client = api.Client(**client_kwargs)
    p = placeholder(client)
    with client.cursor() as cursor:
        cursor.execute(f"INSERT INTO experiments (name) VALUES ({p})", ("by cursor",))
        cursor.executemany(
            f"INSERT INTO experiments (name) VALUES ({p})", [("many 1",), ("many 2",)]
        )
        cursor.execute("SELECT name FROM experiments ORDER BY name")
        assert [row[0] for row in cursor] == ["by cursor", "many 1", "many 2"]
    client.close()
    assert read_raw(client_kwargs, "SELECT count(*) FROM experiments") == [(3,)]


def test_client_settings_sources(api, client_kwargs, tmp_path, monkeypatch):
    """``Client(config)`` takes a dict or a config file path; kwargs, SQLTRACK_DSN_* and
    ./sqltrack.conf work as the spec says."""
    lines = "".join(f"{key}={value}\n" for key, value in client_kwargs.items())
    conf = tmp_path / "elsewhere.conf"
    conf.write_text(lines)
    (tmp_path / "sqltrack.conf").write_text(lines)  # the default file (cwd is tmp_path)
    for env_name, env_value in client_kwargs.items():
        monkeypatch.setenv(f"SQLTRACK_DSN_{env_name.upper()}", str(env_value))
    clients = {
        "dict": api.Client(dict(client_kwargs)),
        "path": api.Client(conf),
        "str path": api.Client(str(conf)),
        "environment": api.Client(),
        "kwargs": api.Client(**client_kwargs),
    }
    monkeypatch.delenv("SQLTRACK_DSN_ENGINE")
    (tmp_path / "sqltrack.conf").write_text(f"engine={client_kwargs['engine']}\n")
    clients["file + environment"] = api.Client()
    for source, client in clients.items():
        client.execute("INSERT INTO experiments (name) VALUES ('" + source + "')")
        client.close()
    names = sorted(n for (n,) in read_raw(client_kwargs, "SELECT name FROM experiments"))
    assert names == sorted(clients)


def test_execute_many_and_script(sync_client, client_kwargs):
    p = placeholder(sync_client)
    sync_client.executemany(
        f"INSERT INTO experiments (name) VALUES ({p})", [("a",), ("b",), ("c",)]
    )
    sync_client.executescript(
        "INSERT INTO experiments (name) VALUES ('d');\nINSERT INTO experiments (name) VALUES ('e');"
    )
    names = read_raw(client_kwargs, "SELECT name FROM experiments ORDER BY name")
    assert [n for (n,) in names] == ["a", "b", "c", "d", "e"]


def test_reentrant_blocks_connect_once(api, client_kwargs):
    """The spec's ``with client: do_queries(client, ...)`` x3 uses one connection."""
    seen: list[Any] = []

    def do_queries(client, label):
        with client.cursor() as cursor:
            # A temporary table is private to its connection: it counts the calls
            # made on this one.
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS calls (label TEXT)")
            cursor.execute(f"INSERT INTO calls (label) VALUES ('{label}')")
            cursor.execute("SELECT count(*) FROM calls")
            count = cursor.fetchone()[0]
            if client.engine == "postgres":
                cursor.execute("SELECT pg_backend_pid()")
                seen.append((count, cursor.fetchone()[0]))
            else:
                seen.append((count, None))

    client = api.Client(**client_kwargs)
    with client as conn:
        do_queries(client, "one")
        do_queries(client, "two")
        do_queries(client, "three")
        with client as inner:
            assert inner.async_connection is conn.async_connection
        conn.execute("DROP TABLE calls")
    client.close()
    assert [count for count, _ in seen] == [1, 2, 3]
    assert len({pid for _, pid in seen}) == 1


def test_block_rolls_back_on_exception_unless_committed(sync_client, client_kwargs):
    p = placeholder(sync_client)
    with pytest.raises(ZeroDivisionError):
        with sync_client:
            sync_client.execute(f"INSERT INTO experiments (name) VALUES ({p})", ["committed"])
            sync_client.commit()
            sync_client.execute(f"INSERT INTO experiments (name) VALUES ({p})", ["rolled back"])
            raise ZeroDivisionError
    with sync_client:
        sync_client.execute(f"INSERT INTO experiments (name) VALUES ({p})", ["discarded"])
        sync_client.rollback()
    assert read_raw(client_kwargs, "SELECT name FROM experiments") == [("committed",)]


def test_commit_and_rollback_need_a_connection(sync_client):
    with pytest.raises(RuntimeError, match="not connected"):
        sync_client.commit()
    with pytest.raises(RuntimeError, match="not connected"):
        sync_client.rollback()


def test_chaining_snippets(api, api_client, client_kwargs):
    exp_id = api.Experiment(api_client, name="chained").id
    id = exp_id  # the spec snippet names it "id"
    exp = api.Experiment(api_client, id).set_comment("nice").add_tags("tag")
    assert isinstance(exp, api.Experiment)
    assert experiment_column(client_kwargs, exp.id, "comment") == "nice"
    assert experiment_column(client_kwargs, exp.id, "tags") == {"tag": True}

    run = api.Run(api_client, exp_id).set_comment("nice").add_tags("tag")
    assert isinstance(run, api.Run)
    assert run_column(client_kwargs, run.id, "comment") == "nice"
    assert run_column(client_kwargs, run.id, "tags") == {"tag": True}
    assert run_column(client_kwargs, run.id, "experiment_id") == exp_id


# -- every Experiment method --------------------------------------------------
def test_experiment_methods(sync_client, client_kwargs):
    kw = client_kwargs
    exp = sqltrack.Experiment(sync_client, name="first")
    other = sqltrack.Experiment(sync_client, name="other")
    assert exp.name == "first" and isinstance(exp.id, int)
    assert sqltrack.Experiment(sync_client, experiment_id=exp.id).name == "first"
    assert sqltrack.Experiment(sync_client, exp.id, "first").id == exp.id

    assert exp.set_name("renamed") is exp
    assert experiment_column(kw, exp.id, "name") == "renamed"
    assert exp.set_comment("a comment") is exp
    assert experiment_column(kw, exp.id, "comment") == "a comment"
    assert exp.add_tags("a", "b", "c") is exp
    assert experiment_column(kw, exp.id, "tags") == {"a": True, "b": True, "c": True}
    assert exp.remove_tags("b") is exp
    assert experiment_column(kw, exp.id, "tags") == {"a": True, "c": True}
    assert exp.set_tags("x") is exp
    assert experiment_column(kw, exp.id, "tags") == {"x": True}
    assert exp.add_link("derived", other.id) is exp
    assert read_raw(kw, "SELECT from_id, kind, to_id FROM experiment_links") == [
        (exp.id, "derived", other.id)
    ]
    assert exp.remove_link("derived", other.id) is exp
    assert read_raw(kw, "SELECT * FROM experiment_links") == []

    run = exp.get_run()
    assert isinstance(run, sqltrack.Run) and run.experiment_id == exp.id
    assert run_column(kw, run.id, "status") == "PENDING"
    again = exp.get_run(run.id)
    assert again.id == run.id
    chosen = exp.get_run(987654)
    assert (chosen.id, run_column(kw, 987654, "experiment_id")) == (987654, exp.id)


# -- every Run method ---------------------------------------------------------
def test_run_json_methods(sync_client, client_kwargs, monkeypatch):
    kw = client_kwargs
    exp = sqltrack.Experiment(sync_client, name="runs")
    run = sqltrack.Run(sync_client, exp.id)
    assert run.experiment_id == exp.id

    monkeypatch.setattr("sys.argv", ["train.py", "--lr", "0.1", "--epochs=3"])
    assert run.add_args() is run  # 'auto': detected from sys.argv
    assert run_column(kw, run.id, "args") == {"lr": 0.1, "epochs": 3}
    assert run.add_args({"batch": 64}) is run
    assert run_column(kw, run.id, "args") == {"lr": 0.1, "epochs": 3, "batch": 64}
    assert run.remove_args({"lr": None}) is run
    assert run_column(kw, run.id, "args") == {"epochs": 3, "batch": 64}
    assert run.set_args({"only": "this"}) is run
    assert run_column(kw, run.id, "args") == {"only": "this"}

    monkeypatch.setenv("SQLTRACK_SPEC_TEST_VAR", "value")
    assert run.set_env() is run  # 'auto': os.environ
    assert run_column(kw, run.id, "env")["SQLTRACK_SPEC_TEST_VAR"] == "value"
    assert run.set_env({"A": "1"}) is run
    assert run.add_env({"B": "2", "C": "3"}) is run
    assert run_column(kw, run.id, "env") == {"A": "1", "B": "2", "C": "3"}
    assert run.remove_env({"B": "ignored"}) is run
    assert run_column(kw, run.id, "env") == {"A": "1", "C": "3"}

    assert run.add_extras({"gpu": "A100", "nodes": 2}) is run
    assert run.remove_extras("nodes") is run
    assert run_column(kw, run.id, "extras") == {"gpu": "A100"}
    assert run.set_extras({"fresh": [1, 2]}) is run
    assert run_column(kw, run.id, "extras") == {"fresh": [1, 2]}

    assert run.add_tags("t1", "t2") is run
    assert run.remove_tags("t1") is run
    assert run_column(kw, run.id, "tags") == {"t2": True}
    assert run.set_tags("t3", "t4") is run
    assert run_column(kw, run.id, "tags") == {"t3": True, "t4": True}

    other = sqltrack.Run(sync_client, exp.id)
    assert run.add_link("resumes", other.id) is run
    assert read_raw(kw, "SELECT from_id, kind, to_id FROM run_links") == [
        (run.id, "resumes", other.id)
    ]
    assert run.remove_link("resumes", other.id) is run
    assert read_raw(kw, "SELECT * FROM run_links") == []


def test_run_status_and_time_methods(sync_client, client_kwargs):
    kw = client_kwargs
    run = sqltrack.Experiment(sync_client, name="times").get_run()
    assert run.set_comment("comment") is run
    assert run_column(kw, run.id, "comment") == "comment"
    assert run.set_status("TIMEOUT") is run
    assert run_column(kw, run.id, "status") == "TIMEOUT"

    for method, column in (
        (run.set_created, "time_created"),
        (run.set_started, "time_started"),
        (run.set_updated, "time_updated"),
    ):
        assert method(WHEN) is run
        assert run_column(kw, run.id, column) == WHEN
        before = datetime.now(timezone.utc)
        assert method() is run  # 'auto': now
        assert run_column(kw, run.id, column) >= before - timedelta(seconds=1)
        assert method(None) is run  # None: left as it is
        assert run_column(kw, run.id, column) >= before - timedelta(seconds=1)

    later = WHEN + timedelta(hours=1)
    assert run.start(started=WHEN, updated=WHEN) is run
    assert run_column(kw, run.id, "status") == "RUNNING"
    assert run_column(kw, run.id, "time_started") == WHEN
    assert run.stop(updated=later) is run
    assert run_column(kw, run.id, "status") == "COMPLETED"
    assert run_column(kw, run.id, "time_updated") == later
    assert run.stop("FAILED") is run
    assert run_column(kw, run.id, "status") == "FAILED"


def test_run_add_metrics_and_track(sync_client, client_kwargs):
    kw = client_kwargs
    run = sqltrack.Experiment(sync_client, name="metrics").get_run()
    with run.track() as tracked:
        assert tracked is run
        assert run_column(kw, run.id, "status") == "RUNNING"
        for step in range(1, 4):
            assert run.add_metrics({"loss": 1.0 / step, "top1": step}, step=step) is run
        run.add_metrics({"loss": 0.0}, progress=0.5, updated=WHEN)
        assert run_column(kw, run.id, "time_updated") == WHEN
    assert run_column(kw, run.id, "status") == "COMPLETED"
    rows = read_raw(kw, "SELECT step, progress, loss, top1 FROM metrics ORDER BY step, progress")
    assert rows == [(0, 0.5, 0.0, None), (1, 0.0, 1.0, 1), (2, 0.0, 0.5, 2), (3, 0.0, 1 / 3, 3)]

    failing = sqltrack.Experiment(sync_client, name="metrics").get_run()
    with pytest.raises(KeyError):
        with failing.track(exception="OUT_OF_MEMORY"):
            raise KeyError("x")
    assert run_column(kw, failing.id, "status") == "OUT_OF_MEMORY"

    interrupted = sqltrack.Experiment(sync_client, name="metrics").get_run()
    with pytest.raises(KeyboardInterrupt):
        with interrupted.track(interrupt="PREEMPTED"):
            raise KeyboardInterrupt
    assert run_column(kw, interrupted.id, "status") == "PREEMPTED"


# -- every module function ----------------------------------------------------
def test_experiment_functions(api, api_client, client_kwargs):
    kw = client_kwargs
    exp_id = api.Experiment(api_client, name="fn").id
    other_id = api.Experiment(api_client, name="fn other").id
    assert api.experiment_set_name(api_client, exp_id, "fn renamed") is None
    assert experiment_column(kw, exp_id, "name") == "fn renamed"
    api.experiment_set_comment(api_client, exp_id, "hello")
    assert experiment_column(kw, exp_id, "comment") == "hello"
    api.experiment_set_comment(api_client, exp_id, None)
    assert experiment_column(kw, exp_id, "comment") is None
    api.experiment_add_tags(api_client, exp_id, "a", "b")
    api.experiment_remove_tags(api_client, exp_id, "a")
    assert experiment_column(kw, exp_id, "tags") == {"b": True}
    api.experiment_set_tags(api_client, exp_id, "c")
    assert experiment_column(kw, exp_id, "tags") == {"c": True}
    api.experiment_add_link(api_client, exp_id, "follows", other_id)
    assert read_raw(kw, "SELECT from_id, kind, to_id FROM experiment_links") == [
        (exp_id, "follows", other_id)
    ]
    api.experiment_remove_link(api_client, exp_id, "follows", other_id)
    assert read_raw(kw, "SELECT * FROM experiment_links") == []


def test_run_functions(api, api_client, client_kwargs, monkeypatch):
    kw = client_kwargs
    exp = api.Experiment(api_client, name="fn runs")
    run_id = exp.get_run().id
    other_id = exp.get_run().id

    monkeypatch.setattr("sys.argv", ["train.py", "--width", "8"])
    assert api.run_add_args(api_client, run_id) is None
    api.run_add_args(api_client, run_id, {"depth": 3})
    assert run_column(kw, run_id, "args") == {"width": 8, "depth": 3}
    api.run_remove_args(api_client, run_id, "width")
    assert run_column(kw, run_id, "args") == {"depth": 3}
    api.run_set_args(api_client, run_id, {"new": True})
    assert run_column(kw, run_id, "args") == {"new": True}
    api.run_set_args(api_client, run_id, None)
    assert run_column(kw, run_id, "args") is None

    api.run_add_env(api_client, run_id, {"X": "1", "Y": "2"})
    api.run_remove_env(api_client, run_id, "X")
    assert run_column(kw, run_id, "env") == {"Y": "2"}
    api.run_set_env(api_client, run_id, {"Z": "3"})
    assert run_column(kw, run_id, "env") == {"Z": "3"}
    monkeypatch.setenv("SQLTRACK_SPEC_TEST_VAR", "env auto")
    api.run_add_env(api_client, run_id)
    assert run_column(kw, run_id, "env")["SQLTRACK_SPEC_TEST_VAR"] == "env auto"
    api.run_set_env(api_client, run_id, None)
    assert run_column(kw, run_id, "env") is None

    api.run_add_extras(api_client, run_id, {"e1": 1, "e2": {"nested": True}})
    api.run_remove_extras(api_client, run_id, "e1")
    assert run_column(kw, run_id, "extras") == {"e2": {"nested": True}}
    api.run_set_extras(api_client, run_id, {"e3": "x"})
    assert run_column(kw, run_id, "extras") == {"e3": "x"}
    api.run_set_extras(api_client, run_id)
    assert run_column(kw, run_id, "extras") is None

    api.run_add_tags(api_client, run_id, "r1", "r2")
    api.run_remove_tags(api_client, run_id, "r1")
    assert run_column(kw, run_id, "tags") == {"r2": True}
    api.run_set_tags(api_client, run_id, "r3")
    assert run_column(kw, run_id, "tags") == {"r3": True}

    api.run_set_comment(api_client, run_id, "fn comment")
    assert run_column(kw, run_id, "comment") == "fn comment"
    api.run_set_status(api_client, run_id, "SUSPENDED")
    assert run_column(kw, run_id, "status") == "SUSPENDED"
    api.run_set_created(api_client, run_id, WHEN)
    api.run_set_started(api_client, run_id, WHEN + timedelta(seconds=1))
    api.run_set_updated(api_client, run_id, WHEN + timedelta(seconds=2))
    times = [run_column(kw, run_id, c) for c in ("time_created", "time_started", "time_updated")]
    assert times == [WHEN, WHEN + timedelta(seconds=1), WHEN + timedelta(seconds=2)]
    api.run_set_updated(api_client, run_id)
    assert run_column(kw, run_id, "time_updated") > WHEN + timedelta(seconds=2)

    api.run_add_link(api_client, run_id, "parent", other_id)
    links = read_raw(kw, "SELECT from_id, kind, to_id FROM run_links")
    assert links == [(run_id, "parent", other_id)]
    api.run_remove_link(api_client, run_id, "parent", other_id)
    assert read_raw(kw, "SELECT * FROM run_links") == []

    api.run_add_metrics(api_client, run_id, {"acc": 0.25}, step=7)
    api.run_add_metrics(api_client, run_id, {"acc": 0.5}, 8, 0.75)
    assert read_raw(kw, "SELECT step, progress, acc FROM metrics ORDER BY step") == [
        (7, 0.0, 0.25), (8, 0.75, 0.5)
    ]


def test_run_from_env(api, api_client, client_kwargs, monkeypatch):
    monkeypatch.setenv("SQLTRACK_EXPERIMENT_NAME", "from env")
    run = api.run_from_env(api_client)
    assert isinstance(run, api.Run)
    exp_id = one(client_kwargs, "SELECT id FROM experiments WHERE name = 'from env'")
    assert run_column(client_kwargs, run.id, "experiment_id") == exp_id

    monkeypatch.setenv("SQLTRACK_EXPERIMENT_ID", str(exp_id))
    monkeypatch.setenv("SQLTRACK_RUN_ID", str(run.id))
    assert api.run_from_env(api_client).id == run.id
    monkeypatch.setenv("SQLTRACK_RUN_ID", "424242")
    assert api.run_from_env(api_client).id == 424242
    assert run_column(client_kwargs, 424242, "experiment_id") == exp_id


def test_setup(api, api_client, client_kwargs, tmp_path):
    column_type = "REAL" if api_client.engine == "sqlite" else "double precision"
    script = tmp_path / "001_declared_metric.sql"
    script.write_text(f"ALTER TABLE metrics ADD COLUMN declared {column_type};\n")
    assert api.setup(api_client, [script]) == ["001_declared_metric.sql"]
    assert api.setup(api_client, [str(script)]) == []
    run = api.Experiment(api_client, name="setup").get_run()
    run.add_metrics({"declared": 1.5}, step=1)
    assert read_raw(client_kwargs, "SELECT declared FROM metrics") == [(1.5,)]


# -- mix-ups between the blocking and the async API ---------------------------
async def test_async_client_given_to_the_blocking_api(client, client_kwargs):
    """An AsyncClient passed to the blocking functions is a TypeError naming Client."""
    with pytest.raises(TypeError, match=r"sqltrack\.Client"):
        sqltrack_sync.run_add_tags(client, 1, "x")
    with pytest.raises(TypeError, match=r"sqltrack\.Client"):
        sqltrack_sync.Experiment(client, name="never")
    with pytest.raises(TypeError, match=r"sqltrack\.Client"):
        sqltrack_sync.Run(client, 1)
    with pytest.raises(TypeError, match=r"sqltrack\.Client"):
        sqltrack_sync.setup(client, [])
    # through sqltrack, the same name gives the coroutine for an AsyncClient
    exp = await sqltrack.AsyncExperiment.create(client, name="async")
    run = await exp.get_run()
    await sqltrack.run_add_tags(client, run.id, "from async")
    assert run_column(client_kwargs, run.id, "tags") == {"from async": True}
    assert read_raw(client_kwargs, "SELECT name FROM experiments") == [("async",)]


def test_blocking_client_given_to_coroutines(sync_client, client_kwargs):
    """Awaiting a coroutine of the async core with a blocking Client is a TypeError that
    names AsyncClient, raised before anything is written."""
    run = sqltrack.Experiment(sync_client, name="mixup").get_run()

    async def attempts():
        for make in (
            lambda: sqltrack.model.runs.run_add_tags(sync_client, run.id, "x"),
            lambda: sqltrack.model.runs.run_set_status(sync_client, run.id, "FAILED"),
            lambda: sqltrack.model.runs.run_add_metrics(sync_client, run.id, {"m": 1.0}),
            lambda: sqltrack.model.experiments.experiment_set_name(
                sync_client, run.experiment_id, "y"),
            lambda: sqltrack.AsyncExperiment.create(sync_client, name="never"),
            lambda: sqltrack.AsyncExperiment.create(sync_client, 1, "never"),
            lambda: sqltrack.AsyncRun.create(sync_client, run.experiment_id),
        ):
            with pytest.raises(TypeError, match="AsyncClient"):
                await make()

    asyncio.run(attempts())
    assert run_column(client_kwargs, run.id, "status") == "PENDING"
    assert run_column(client_kwargs, run.id, "tags") is None
    assert read_raw(client_kwargs, "SELECT name FROM experiments") == [("mixup",)]
    assert read_raw(client_kwargs, "SELECT count(*) FROM runs") == [(1,)]
    with pytest.raises(TypeError, match="AsyncClient"):
        sync_client.metrics  # noqa: B018 - an AsyncClient attribute


# -- signatures and docstrings (what help() shows) ----------------------------
_ = inspect.Parameter.empty
#: The spec's signatures: (parameter name, default); "*name" is a *args parameter.
SPEC_METHODS: dict[str, dict[str, list[tuple[str, Any]]]] = {
    "Client": {
        "__init__": [("config", None)],
        "commit": [],
        "cursor": [],
        "execute": [("sql", _), ("parameters", ())],
        "executemany": [("sql", _), ("seq_of_parameters", _)],
        "executescript": [("sql_script", _)],
        "rollback": [],
    },
    "Experiment": {
        "__init__": [("client", _), ("experiment_id", None), ("name", None)],
        "add_tags": [("*tags", _)],
        "get_run": [("run_id", None)],
        "remove_tags": [("*tags", _)],
        "set_comment": [("comment", _)],
        "set_name": [("name", _)],
        "set_tags": [("*tags", _)],
        "add_link": [("kind", _), ("to_id", _)],
        "remove_link": [("kind", _), ("to_id", _)],
    },
    "Run": {
        "__init__": [("client", _), ("experiment_id", None), ("run_id", None)],
        "add_args": [("args", "auto")],
        "add_env": [("env", "auto")],
        "add_extras": [("extras", None)],
        "add_metrics": [("metrics", _), ("step", 0), ("progress", 0.0), ("updated", "auto")],
        "add_tags": [("*tags", _)],
        "remove_args": [("args", "auto")],
        "remove_env": [("env", "auto")],
        "remove_extras": [("*tags", _)],
        "remove_tags": [("*tags", _)],
        "set_args": [("args", "auto")],
        "set_comment": [("comment", _)],
        "set_created": [("dt", "auto")],
        "set_env": [("env", "auto")],
        # The spec shows set_extras(*tags: str) but documents it as run_set_extras()
        # (one dict, or None): one optional value is what a call can pass.
        "set_extras": [("extras", None)],
        "set_started": [("dt", "auto")],
        "set_status": [("status", _)],
        "set_tags": [("*tags", _)],
        "set_updated": [("dt", "auto")],
        "start": [("terminated", "CANCELLED"), ("started", "auto"), ("updated", "auto")],
        "stop": [("status", "COMPLETED"), ("updated", "auto")],
        "track": [
            ("normal", "COMPLETED"), ("exception", "FAILED"), ("interrupt", "CANCELLED"),
            ("terminated", "CANCELLED"), ("started", "auto"), ("updated", "auto"),
        ],
        "add_link": [("kind", _), ("to_id", _)],
        "remove_link": [("kind", _), ("to_id", _)],
    },
}
_CLIENT_ID = [("client", _), ("experiment_id", _)]
_CLIENT_RUN = [("client", _), ("run_id", _)]
_LINK = [("client", _), ("from_id", _), ("kind", _), ("to_id", _)]
SPEC_FUNCTIONS: dict[str, list[tuple[str, Any]]] = {
    "experiment_add_link": _LINK,
    "experiment_add_tags": [*_CLIENT_ID, ("*tags", _)],
    "experiment_remove_link": _LINK,
    "experiment_remove_tags": [*_CLIENT_ID, ("*tags", _)],
    "experiment_set_comment": [*_CLIENT_ID, ("comment", _)],
    "experiment_set_name": [*_CLIENT_ID, ("name", _)],
    "experiment_set_tags": [*_CLIENT_ID, ("*tags", _)],
    "run_add_args": [*_CLIENT_RUN, ("args", "auto")],
    "run_add_env": [*_CLIENT_RUN, ("env", "auto")],
    "run_add_extras": [*_CLIENT_RUN, ("extras", None)],
    "run_add_link": _LINK,
    "run_add_metrics": [*_CLIENT_RUN, ("metrics", _), ("step", 0), ("progress", 0.0)],
    "run_add_tags": [*_CLIENT_RUN, ("*tags", _)],
    "run_from_env": [("client", _)],
    "run_remove_args": [*_CLIENT_RUN, ("*args", _)],
    "run_remove_env": [*_CLIENT_RUN, ("*env", _)],
    "run_remove_extras": [*_CLIENT_RUN, ("*extras", _)],
    "run_remove_link": _LINK,
    "run_remove_tags": [*_CLIENT_RUN, ("*tags", _)],
    "run_set_args": [*_CLIENT_RUN, ("args", "auto")],
    "run_set_comment": [*_CLIENT_RUN, ("comment", _)],
    "run_set_created": [*_CLIENT_RUN, ("dt", "auto")],
    "run_set_env": [*_CLIENT_RUN, ("env", "auto")],
    "run_set_extras": [*_CLIENT_RUN, ("extras", None)],
    "run_set_started": [*_CLIENT_RUN, ("dt", "auto")],
    "run_set_status": [*_CLIENT_RUN, ("status", _)],
    "run_set_tags": [*_CLIENT_RUN, ("*tags", _)],
    "run_set_updated": [*_CLIENT_RUN, ("dt", "auto")],
    "setup": [("client", _), ("scripts", _)],
}


def _check_signature(func, spec: list[tuple[str, Any]], what: str) -> None:
    """``func`` accepts every call the spec's signature allows, with the same defaults."""
    params = [
        p for p in inspect.signature(func).parameters.values()
        if p.name != "self" and p.kind is not p.VAR_KEYWORD
    ]
    assert len(params) >= len(spec), f"{what}: {params} lacks parameters of {spec}"
    for param, (name, default) in zip(params, spec, strict=False):
        if name.startswith("*"):
            assert param.kind is param.VAR_POSITIONAL, f"{what}: {param} is not *{name}"
            continue
        assert param.name == name, f"{what}: {param.name} where the spec has {name}"
        assert param.kind in (param.POSITIONAL_OR_KEYWORD, param.POSITIONAL_ONLY), what
        assert param.default == default, f"{what}: {param.name}={param.default!r}, spec {default!r}"
    for extra in params[len(spec):]:
        assert extra.default is not _ or extra.kind is extra.VAR_POSITIONAL, (
            f"{what}: extra parameter {extra} must be optional"
        )


@pytest.mark.parametrize("module", API_MODULES)
def test_signatures_and_docstrings(module):
    api = importlib.import_module(module)
    for class_name, methods in SPEC_METHODS.items():
        cls = getattr(api, class_name)
        assert cls is getattr(sqltrack_sync, class_name)
        assert inspect.getdoc(cls), class_name
        for name, spec in methods.items():
            method = getattr(cls, name)
            _check_signature(method, spec, f"{class_name}.{name}")
            if name != "__init__" or class_name != "Client":
                assert inspect.getdoc(method), f"{class_name}.{name} has no docstring"
    for name, spec in SPEC_FUNCTIONS.items():
        function = getattr(api, name)
        _check_signature(function, spec, name)
        assert inspect.getdoc(function), f"{name} has no docstring"


def test_docstrings_speak_of_the_blocking_api():
    """What help() shows for the spec's names: no coroutines, no Async classes."""
    docs = {f"{c}.{m}": inspect.getdoc(getattr(getattr(sqltrack_sync, c), m))
            for c, methods in SPEC_METHODS.items() for m in methods}
    docs.update({c: inspect.getdoc(getattr(sqltrack_sync, c)) for c in SPEC_METHODS})
    docs.update({f: inspect.getdoc(getattr(sqltrack_sync, f)) for f in SPEC_FUNCTIONS})
    for name, doc in docs.items():
        for wrong in ("await ", "async with", "AsyncRun", "AsyncExperiment", "An Run",
                      "A Experiment", ".create"):
            assert wrong not in (doc or ""), f"{name}: {wrong!r} in {doc!r}"


def test_help_of_add_metrics():
    signature = inspect.signature(sqltrack_sync.Run.add_metrics)
    assert list(signature.parameters) == ["self", "metrics", "step", "progress", "updated"]
    assert [p.default for p in signature.parameters.values()][2:] == [0, 0.0, "auto"]
    assert "run_add_metrics" in sqltrack_sync.Run.add_metrics.__doc__
    assert "Async" not in sqltrack_sync.Run.add_metrics.__doc__
    assert sqltrack_sync.run_add_metrics.__doc__.startswith("Add metrics to a run")
    assert "await" not in json.dumps(
        [inspect.getdoc(getattr(sqltrack_sync, n)) for n in sqltrack_sync.__all__]
    )
