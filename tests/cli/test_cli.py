"""The ``sqltrack`` command, run in-process and as ``python -m sqltrack``, on both engines."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import sqltrack
from sqltrack import cli

HOURS_AGO = datetime.now(timezone.utc) - timedelta(hours=2)

pytestmark = pytest.mark.usefixtures("clean_env")


def conn_args(client_kwargs: dict[str, Any]) -> list[str]:
    """Command-line connection options for the database of ``client_kwargs``."""
    kwargs = dict(client_kwargs)
    if kwargs.pop("engine") == "sqlite":
        return ["--engine", "sqlite", "--dbpath", kwargs["dbpath"]]
    args = ["--engine", "postgres", "--schema", kwargs.pop("schema")]
    for key, value in kwargs.items():
        args += ["-o", f"{key}={value}"]
    return args


def with_client(client_kwargs: dict[str, Any], work) -> Any:
    """Run ``await work(client)`` on a fresh AsyncClient, closed afterwards."""

    async def go():
        client = sqltrack.AsyncClient(**client_kwargs)
        try:
            return await work(client)
        finally:
            await client.close()

    return asyncio.run(go())


def query(client_kwargs, sql: str, params=()) -> list[tuple]:
    return with_client(client_kwargs, lambda c: c.query(sql, params))


TARGET_PREFIX = "sqltrack: database: "


def split_target(err: str, client_kwargs: dict[str, Any] | None = None) -> tuple[str, str]:
    """(the target line, the rest of stderr); asserts the line names the database."""
    first, _, rest = err.partition("\n")
    assert first.startswith(TARGET_PREFIX), err
    if client_kwargs is not None:
        where = (client_kwargs["dbpath"] if client_kwargs["engine"] == "sqlite"
                 else f"schema={client_kwargs['schema']}")
        assert where in first, first
        assert f"{client_kwargs['engine']} " in first
    assert TARGET_PREFIX not in rest, err
    return first, rest


@pytest.fixture
def run_cli(client_kwargs, capsys):
    """``run_cli(*args)`` -> (exit status, stdout, stderr) of the CLI on the test database.

    The line naming the target database, which every command prints first on
    stderr, is checked (it names this database) and left out of the stderr returned.
    """

    def run(*args: str, connect: bool = True) -> tuple[int, str, str]:
        code = cli.main([*(conn_args(client_kwargs) if connect else []), *args])
        out, err = capsys.readouterr()
        if code == 2:  # a wrong command line: nothing connected, no target line
            assert TARGET_PREFIX not in err, err
            return code, out, err
        _, err = split_target(err, client_kwargs if connect else None)
        return code, out, err

    return run


async def _seed(client) -> dict[str, int]:
    resnet = await sqltrack.AsyncExperiment.create(client, name="resnet")
    await resnet.add_tags("vision", "baseline")
    bert = await sqltrack.AsyncExperiment.create(client, name="bert")
    done = await resnet.get_run()
    await done.add_args({"lr": 0.1, "epochs": 3})
    await done.add_env({"HOME": "/home/alice", "SECRET_TOKEN": "s3cr3t-value"})
    await done.add_extras({"gpu": {"name": "A100"}})
    await done.add_tags("fast", "best")
    async with done.track():
        for step in range(3):
            metrics = {"loss": 1.0 / (step + 1), "acc": 0.5 + step / 10, "ok": step % 2 == 0}
            await done.add_metrics(metrics, step=step)
    live = await resnet.get_run()
    await live.start(updated=HOURS_AGO)
    await live.add_tags("fast")
    await live.add_metrics({"loss": 2.5}, step=0, updated=None)
    await sqltrack.run_add_link(client, live.id, "resumes", done.id)
    failed = await bert.get_run()
    await failed.set_status("FAILED")
    return {"resnet": resnet.id, "bert": bert.id, "done": done.id, "live": live.id,
            "failed": failed.id}


@pytest.fixture
def seeded(client_kwargs) -> dict[str, int]:
    """Two experiments and three runs; returns their ids."""
    return with_client(client_kwargs, _seed)


def assert_one_line_error(err: str, *expected: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sqltrack: error: ")
    for text in expected:
        assert text in lines[0]


# -- setup --------------------------------------------------------------------
def test_setup_applies_scripts_once(run_cli, client_kwargs, tmp_path):
    first = tmp_path / "001_declare.sql"
    first.write_text("ALTER TABLE metrics ADD COLUMN declared_score INTEGER;\n")
    second = tmp_path / "002_notes.sql"
    second.write_text("CREATE TABLE run_notes (run_id BIGINT, note TEXT);\n")

    code, out, err = run_cli("setup", str(first))
    assert (code, err) == (0, "")
    assert out.splitlines()[:2] == ["created the sqltrack tables", "applied  001_declare.sql"]
    assert "schema ready" in out

    code, out, _ = run_cli("setup", str(first), str(second))
    assert code == 0
    assert out.splitlines()[:3] == [
        "base schema up to date",
        "skipped  001_declare.sql (applied before)",
        "applied  002_notes.sql",
    ]
    names = query(client_kwargs, "SELECT name FROM applied_migrations ORDER BY name")
    assert [n for (n,) in names if not n.startswith("sqltrack:") and n != "base.sql"] == [
        "001_declare.sql", "002_notes.sql",
    ]
    columns = with_client(client_kwargs, lambda c: c.metrics.table.columns())
    assert columns["declared_score"] == "int"


def test_setup_without_scripts_creates_base_schema(run_cli, client_kwargs):
    code, out, _ = run_cli("setup")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "created the sqltrack tables"
    assert lines[1].startswith("schema ready (")
    assert query(client_kwargs, "SELECT COUNT(*) FROM runs") == [(0,)]


def test_setup_distribute_without_citus_says_so(run_cli, client_kwargs):
    """``setup --distribute`` needs a Citus coordinator (tests/schema/test_citus.py):
    elsewhere one line says there is nothing to distribute, the schema is still made."""
    code, out, err = run_cli("setup", "--distribute")
    assert code == 1
    assert out.splitlines() == ["created the sqltrack tables"]
    assert_one_line_error(err, "--distribute", "no citus extension", "nothing to distribute")
    assert query(client_kwargs, "SELECT COUNT(*) FROM runs") == [(0,)]


def test_setup_errors_are_one_line(run_cli, client_kwargs, tmp_path):
    code, _, err = run_cli("setup", str(tmp_path / "missing.sql"))
    assert code == 1
    assert_one_line_error(err, "missing.sql", "does not exist")

    broken = tmp_path / "003_broken.sql"
    broken.write_text("CREATE TABLE oops (;\n")
    code, _, err = run_cli("setup", str(broken))
    assert code == 1
    assert_one_line_error(err)
    names = query(client_kwargs, "SELECT name FROM applied_migrations WHERE name = %s",
                  ["003_broken.sql"])
    assert names == []


# -- listings -------------------------------------------------------------------
def test_experiments_table_and_json(run_cli, seeded):
    code, out, err = run_cli("experiments")
    assert (code, err) == (0, "")
    header, rule, *rows = out.splitlines()
    assert header.split() == ["id", "name", "created", "runs", "tags"]
    assert set(rule) == {"-", " "}
    assert rows[0].split()[:2] == [str(seeded["resnet"]), "resnet"]
    assert rows[0].split()[4:] == ["2", "baseline,", "vision"]
    assert rows[1].split()[:2] == [str(seeded["bert"]), "bert"]
    assert rows[1].split()[4:] == ["1"]
    # Aligned: a column starts at the same offset on every line.
    assert rows[0].index("resnet") == header.index("name") == rows[1].index("bert")
    assert rows[0].index("baseline") == header.index("tags") == rule.rindex(" ") + 1

    code, out, _ = run_cli("experiments", "--json")
    data = json.loads(out)
    assert [(e["id"], e["name"], e["runs"], e["tags"]) for e in data] == [
        (seeded["resnet"], "resnet", 2, ["baseline", "vision"]),
        (seeded["bert"], "bert", 1, []),
    ]
    assert datetime.fromisoformat(data[0]["created"]).tzinfo is not None


def test_runs_filters_and_latest_metrics(run_cli, seeded):
    code, out, err = run_cli("runs", "--metric", "loss", "acc")
    assert (code, err) == (0, "")
    header, _, *rows = out.splitlines()
    assert header.split() == [
        "id", "experiment", "name", "status", "started", "duration", "tags", "args", "loss",
        "acc",
    ]
    by_id = {int(r.split()[0]): r for r in rows}
    assert set(by_id) == {seeded["done"], seeded["live"], seeded["failed"]}
    assert "COMPLETED" in by_id[seeded["done"]]
    assert by_id[seeded["done"]].split()[-2:] == ["0.333333", "0.7"]  # latest step: 2
    assert by_id[seeded["live"]].split()[-1] == "2.5"
    assert by_id[seeded["failed"]].split()[1:3] == ["bert", "FAILED"]

    def ids(*args: str) -> list[int]:
        code, out, _ = run_cli("runs", "--json", *args)
        assert code == 0
        return [r["id"] for r in json.loads(out)]

    assert ids("--experiment", "resnet") == [seeded["done"], seeded["live"]]
    assert ids("--experiment", str(seeded["bert"])) == [seeded["failed"]]
    assert ids("--status", "running") == [seeded["live"]]
    assert ids("--tag", "fast") == [seeded["done"], seeded["live"]]
    assert ids("--tag", "fast", "--tag", "best") == [seeded["done"]]
    assert ids("--experiment", "bert", "--status", "COMPLETED") == []

    code, out, _ = run_cli("runs", "--json", "--metric", "loss", "ok", "--status", "COMPLETED")
    (run,) = json.loads(out)
    assert run["metrics"] == {"loss": pytest.approx(1 / 3), "ok": True}
    assert run["status"] == "COMPLETED" and run["experiment"] == "resnet"
    assert run["duration_seconds"] >= 0
    assert sorted(run["tags"]) == ["best", "fast"]


def test_runs_unknown_metric_or_experiment(run_cli, seeded):
    code, _, err = run_cli("runs", "--metric", "nope")
    assert code == 1
    assert_one_line_error(err, "unknown metric 'nope'", "acc, loss, ok")
    code, _, err = run_cli("runs", "--experiment", "gpt")
    assert code == 1
    assert_one_line_error(err, "experiment 'gpt' does not exist")


# -- show -----------------------------------------------------------------------
def test_show_run(run_cli, seeded):
    code, out, err = run_cli("show", str(seeded["done"]))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"run {seeded['done']}"
    assert lines[1] == f"experiment resnet (id {seeded['resnet']})"
    assert "status     COMPLETED" in lines
    assert "tags       best, fast" in lines
    assert "  lr      0.1" in lines and "  epochs  3" in lines
    assert "env keys   HOME, SECRET_TOKEN" in lines
    assert "s3cr3t-value" not in out  # env values are not shown
    assert '  gpu  {"name": "A100"}' in lines
    assert f"  <--resumes-- run {seeded['live']}" in lines
    metrics = {line.split()[0]: line.split()[1:] for line in lines[lines.index("metrics") + 3:]}
    assert metrics == {
        "acc": ["3", "0.5", "0.7", "0.7"],
        "loss": ["3", "0.333333", "1", "0.333333"],
        "ok": ["3", "false", "true", "true"],
    }


def test_show_json(run_cli, seeded):
    code, out, _ = run_cli("show", str(seeded["live"]), "--json")
    assert code == 0
    run = json.loads(out)
    assert run["id"] == seeded["live"] and run["status"] == "RUNNING"
    assert run["links"] == [{"from": seeded["live"], "kind": "resumes", "to": seeded["done"]}]
    assert run["metrics"] == [
        {"metric": "loss", "count": 1, "min": 2.5, "max": 2.5, "last": 2.5}
    ]
    assert run["args"] == {} and run["env_keys"] == [] and run["tags"] == ["fast"]
    assert datetime.fromisoformat(run["updated"]) == pytest.approx(HOURS_AGO,
                                                                   abs=timedelta(seconds=1))


def test_show_unknown_or_bad_run_id(run_cli, seeded):
    code, out, err = run_cli("show", "999999")
    assert (code, out) == (1, "")
    assert_one_line_error(err, "run 999999 does not exist")
    code, _, err = run_cli("show", "abc")
    assert code == 2
    assert "Traceback" not in err and "run id must be an integer" in err


# -- export -----------------------------------------------------------------------
def test_export_csv_and_jsonl(run_cli, seeded, tmp_path):
    target = tmp_path / "out.csv"
    code, out, err = run_cli("export", str(seeded["done"]), str(seeded["live"]),
                             "--format", "csv", "-o", str(target))
    assert (code, err) == (0, "")
    assert out.strip() == f"exported 4 rows of 2 runs to {target} (csv)"
    with target.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run_id", "step", "progress", "acc", "loss", "ok"]
    assert [(r["run_id"], r["step"], r["loss"]) for r in rows] == [
        (str(seeded["done"]), "0", "1.0"),
        (str(seeded["done"]), "1", "0.5"),
        (str(seeded["done"]), "2", str(1 / 3)),
        (str(seeded["live"]), "0", "2.5"),
    ]
    assert rows[3]["acc"] == "" and rows[0]["ok"] == "True"

    target = tmp_path / "out.jsonl"  # format from the extension
    code, out, _ = run_cli("export", str(seeded["done"]), "-o", str(target))
    assert code == 0 and "(jsonl)" in out
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert records == [
        {"run_id": seeded["done"], "step": s, "progress": 0.0, "acc": pytest.approx(0.5 + s / 10),
         "loss": pytest.approx(1 / (s + 1)), "ok": s % 2 == 0}
        for s in range(3)
    ]


async def _many_rows(client, run_id: int, count: int) -> None:
    await client.metrics.write(run_id, {"loss": 0.0}, 0, 0.0, None)
    sql = client.dialect.sql("INSERT INTO metrics (run_id, step, progress, loss) "
                             "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING")
    # Three rows per step (progress differs), so pages split inside a step.
    rows = [(run_id, i // 3, (i % 3) / 3, float(i)) for i in range(count)]
    await client.executemany(sql, rows)


def test_export_large_pages_and_progress(run_cli, client_kwargs, seeded, tmp_path):
    count = 12_346
    with_client(client_kwargs, lambda c: _many_rows(c, seeded["failed"], count))
    target = tmp_path / "big.jsonl"
    code, out, err = run_cli("export", str(seeded["failed"]), "-o", str(target))
    assert code == 0
    assert f"exported {count} rows of 1 run" in out
    assert [line for line in err.splitlines() if line] == ["exported 10000 rows ..."]
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["loss"] for r in records] == [float(i) for i in range(count)]
    assert [(r["step"], r["progress"]) for r in records] == [
        (i // 3, pytest.approx((i % 3) / 3)) for i in range(count)
    ]
    assert not (tmp_path / "big.jsonl.partial").exists()


def test_export_errors(run_cli, seeded, tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    code, _, err = run_cli("export", str(seeded["done"]), "424242", "-o", str(target))
    assert code == 1
    assert_one_line_error(err, "run 424242 does not exist")
    assert not target.exists()

    missing = tmp_path / "no-such-folder" / "out.csv"
    code, _, err = run_cli("export", str(seeded["done"]), "-o", str(missing))
    assert code == 1
    assert_one_line_error(err, "no-such-folder", "does not exist")

    code, _, err = run_cli("export", str(seeded["done"]), "--format", "xml", "-o", str(target))
    assert code == 2 and "Traceback" not in err

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, _, err = run_cli("export", str(seeded["done"]), "-o", str(tmp_path / "m.parquet"))
    assert code == 1
    assert_one_line_error(err, "parquet export needs pyarrow")
    assert not (tmp_path / "m.parquet").exists()


def test_export_parquet(run_cli, seeded, tmp_path):
    import pyarrow.parquet as pq  # the test extra installs it (sqltrack[parquet])
    target = tmp_path / "out.parquet"
    code, _, _ = run_cli("export", str(seeded["done"]), "--format", "parquet", "-o", str(target))
    assert code == 0
    data = pq.read_table(target).to_pydict()
    assert data["step"] == [0, 1, 2]
    assert data["loss"] == pytest.approx([1.0, 0.5, 1 / 3])
    assert data["ok"] == [True, False, True]


# -- mark-stale ----------------------------------------------------------------------
def test_mark_stale(run_cli, client_kwargs, seeded):
    code, out, _ = run_cli("mark-stale", "--older-than", "3h")
    assert (code, out.strip()) == (0, "no stale runs (none RUNNING without an update for 3h00m00s)")

    code, out, _ = run_cli("mark-stale", "--older-than", "1h", "--status", "preempted", "--json")
    assert code == 0
    assert json.loads(out) == {
        "status": "PREEMPTED", "older_than_seconds": 3600.0, "run_ids": [seeded["live"]],
    }
    status = query(client_kwargs, "SELECT status FROM runs WHERE id = %s", [seeded["live"]])
    assert status == [("PREEMPTED",)]


def test_mark_stale_text_and_experiment(run_cli, client_kwargs, seeded):
    code, out, _ = run_cli("mark-stale", "--older-than", "3600", "--experiment", "bert")
    assert out.strip().startswith("no stale runs")
    code, out, _ = run_cli("mark-stale", "--older-than", "90m", "--experiment", "resnet")
    assert (code, out.strip()) == (0, f"marked 1 run NODE_FAIL: {seeded['live']}")
    status = query(client_kwargs, "SELECT status FROM runs WHERE id = %s", [seeded["live"]])
    assert status == [("NODE_FAIL",)]


@pytest.mark.parametrize(
    "args",
    [
        ["mark-stale", "--older-than", "soon"],
        ["mark-stale", "--older-than", "-5m"],
        ["mark-stale", "--older-than", "1h", "--status", "DEAD"],
        ["mark-stale"],
        [],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(run_cli, args):
    code, out, err = run_cli(*args)
    assert code == 2
    assert out == "" and "Traceback" not in err
    assert "usage: sqltrack" in err


def test_parse_duration():
    assert cli.parse_duration("3600") == 3600
    assert cli.parse_duration("30m") == 1800
    assert cli.parse_duration("1h30m") == 5400
    assert cli.parse_duration("1.5h") == 5400
    assert cli.parse_duration("2d") == 172800
    assert cli.parse_duration("45s") == 45
    for bad in ("", "h", "1x", "1h-5m", "-1"):
        with pytest.raises(Exception, match="invalid duration"):
            cli.parse_duration(bad)


# -- connection settings ------------------------------------------------------------
def test_settings_from_environment(run_cli, client_kwargs, seeded, monkeypatch):
    for key, value in client_kwargs.items():
        monkeypatch.setenv(f"SQLTRACK_DSN_{key.upper()}", str(value))
    code, out, _ = run_cli("experiments", "--json", connect=False)
    assert code == 0
    assert [e["name"] for e in json.loads(out)] == ["resnet", "bert"]


def test_settings_from_config_file(client_kwargs, seeded, tmp_path, capsys):
    """A config file naming a server is named first, on a line of its own."""
    conf = tmp_path / "my.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in client_kwargs.items()))
    code = cli.main(["--config", str(conf), "runs", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    if "host" in client_kwargs:
        notice, _, err = err.partition("\n")
        assert notice == (f"sqltrack: connection settings from config file {conf} "
                          f"(host={client_kwargs['host']})")
    split_target(err, client_kwargs)
    assert len(json.loads(out)) == 3


def test_missing_sqlite_database(capsys, tmp_path):
    code = cli.main(["--engine", "sqlite", "--dbpath", str(tmp_path / "typo.db"), "runs"])
    _, err = capsys.readouterr()
    assert code == 1
    target, err = split_target(err)
    assert str(tmp_path / "typo.db") in target
    assert_one_line_error(err, "no SQLite database at", "typo.db", "--dbpath")
    assert not (tmp_path / "typo.db").exists()


def test_bad_connection_masks_password(capsys, tmp_path):
    args = ["--engine", "postgres", "-o", "password=hunter2", "--host", "127.0.0.1",
            "--port", "1", "--user", "alice", "--dbname", "nowhere", "runs"]
    assert cli.main(args) == 1
    _, err = capsys.readouterr()
    assert "hunter2" not in err
    target, err = split_target(err)
    assert "host=127.0.0.1 port=1 user=alice dbname=nowhere" in target
    assert_one_line_error(err, "cannot connect", "port=1")
    assert "password=***" in err

    conf = tmp_path / "secret.conf"
    conf.write_text("engine=postgres\nhost=127.0.0.1\nport=1\npassword=hunter2\n")
    assert cli.main(["--config", str(conf), "experiments"]) == 1
    _, err = capsys.readouterr()
    assert "hunter2" not in err
    notice, _, err = err.partition("\n")
    assert notice == f"sqltrack: connection settings from config file {conf} (host=127.0.0.1)"
    target, err = split_target(err)
    assert "host=127.0.0.1 port=1" in target
    assert_one_line_error(err, "cannot connect")


def test_mask():
    secret = "pa ss'w0rd"
    text = (
        "failed: password=hunter2 host=x; uri postgresql://bob:topsecret@db:5432/x; "
        f"sslpassword='a b' and {secret}"
    )
    masked = cli.mask(text, {secret})
    for hidden in ("hunter2", "topsecret", "'a b'", secret):
        assert hidden not in masked
    assert "password=*** host=x" in masked and "bob:***@db" in masked


def test_unexpected_settings_error_is_one_line(capsys):
    assert cli.main(["-o", "pool_max_size=zero", "--engine", "sqlite", "setup"]) == 1
    _, err = capsys.readouterr()
    assert_one_line_error(err, "pool_max_size")


# -- as a program ------------------------------------------------------------------
def test_python_m_sqltrack(client_kwargs, seeded, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLTRACK_DSN_")}
    base = [sys.executable, "-m", "sqltrack", *conn_args(client_kwargs)]

    done = subprocess.run([*base, "runs", "--json", "--metric", "loss"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    runs = {r["id"]: r for r in json.loads(done.stdout)}
    assert runs[seeded["live"]]["metrics"] == {"loss": 2.5}

    failed = subprocess.run([*base, "show", "31337"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert failed.returncode == 1
    assert failed.stdout == ""
    _, err = split_target(failed.stderr, client_kwargs)
    assert_one_line_error(err, "run 31337 does not exist")

    helped = subprocess.run([sys.executable, "-m", "sqltrack", "--help"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=120)
    assert helped.returncode == 0
    for command in ("setup", "experiments", "runs", "show", "export", "mark-stale"):
        assert command in helped.stdout


# -- a forgiving command line ------------------------------------------------------
def test_connection_options_after_the_command(run_cli, client_kwargs, seeded, capsys):
    code, before, _ = run_cli("runs", "--json")
    assert code == 0
    assert cli.main(["runs", "--json", *conn_args(client_kwargs)]) == 0
    after, err = capsys.readouterr()
    split_target(err, client_kwargs)
    assert json.loads(after) == json.loads(before)
    # an option the command has itself keeps the command's meaning (export -o FILE)
    if client_kwargs["engine"] == "sqlite":
        out_file = os.path.join(os.path.dirname(client_kwargs["dbpath"]), "e.csv")
        assert cli.main(["export", str(seeded["done"]), "-o", out_file,
                         "--dbpath", client_kwargs["dbpath"]]) == 0
        assert os.path.getsize(out_file) > 0


def test_dbpath_alone_means_sqlite(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database = tmp_path / "x.db"
    assert cli.main(["--dbpath", str(database), "setup"]) == 0
    for args in (["--dbpath", str(database), "runs"], ["runs", "--dbpath", str(database)],
                 ["runs", "--engine", "sqlite", "--dbpath", str(database)],
                 ["runs", "--engine", "sqlite3", "--dbpath", str(database)]):
        capsys.readouterr()
        assert cli.main(args) == 0, args
        assert capsys.readouterr().err.startswith(f"{TARGET_PREFIX}sqlite file {database}")


def test_postgresql_is_an_engine_name(capsys, tmp_path):
    code = cli.main(["runs", "--engine", "postgresql", "--host", str(tmp_path), "--port", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"{TARGET_PREFIX}postgres host={tmp_path} port=1")
    assert cli.main(["--engine", "mysql", "runs"]) == 2
    assert "unknown engine 'mysql'" in capsys.readouterr().err


def test_metric_names_as_logged(client_kwargs, tmp_path, capsys):
    from sqltrack.integrations.common import IntegrationRun

    client = sqltrack.Client(**client_kwargs)
    try:
        tracked = IntegrationRun(client, "logged", quiet=True)
        tracked.start()
        tracked.add_args({"lr": 0.1, "seed": 1})
        tracked.log({"train/loss": 0.5, "Loss": 2.0, "loss": 1.0}, step=0)
        tracked.stop("COMPLETED")
        other = IntegrationRun(client, "logged", quiet=True)
        other.start()
        other.add_args({"lr": 0.2, "seed": 1})
        other.open().add_extras({"name": "second"})
        other.log({"train/loss": 0.25}, step=0)
        other.stop("COMPLETED")
    finally:
        client.close()
    assert cli.main([*conn_args(client_kwargs), "runs", "--json", "--metric", "train/loss",
                     "loss", "Loss"]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert first["metrics"] == {"train/loss": 0.5, "loss": 1.0, "Loss": 2.0}
    assert second["metrics"] == {"train/loss": 0.25, "loss": None, "Loss": None}
    # name, and only the args that differ
    assert (first["name"], second["name"]) == (None, "second")
    assert (first["args"], second["args"]) == ({"lr": 0.1}, {"lr": 0.2})
    assert cli.main([*conn_args(client_kwargs), "runs", "--metric", "train/loss"]) == 0
    header, _, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[-3:] == ["tags", "args", "train/loss"]
    assert "second" in rows[1] and "lr=0.2" in rows[1] and "seed" not in rows[1]


def test_ui_without_its_extra_names_the_install_command(tmp_path):
    """Without starlette, the hint installs the extra the way this copy was installed
    (here a source checkout: pip install -e '<checkout>[ui]')."""
    from sqltrack.cli.checks import install_command

    root = os.path.dirname(os.path.dirname(os.path.abspath(sqltrack.__file__)))
    assert install_command("ui") == f"pip install -e '{root}[ui]'"
    database = tmp_path / "x.db"
    assert cli.main(["--dbpath", str(database), "setup"]) == 0
    code = ("import sys\nsys.modules['starlette'] = None\n"  # as if it were not installed
            "from sqltrack.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", code, "ui", "--dbpath", str(database)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"sqltrack: error: sqltrack ui needs starlette, which is not installed: "
        f"pip install -e '{root}[ui]'")
