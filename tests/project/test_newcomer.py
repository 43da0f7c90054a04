"""A newcomer's first ten minutes (issue 9, item 6), on both engines where it applies.

The example says where it wrote and what to run next; read-only commands never
create tables and say which database they looked at; every command names its
database; ``args='auto'`` in a Jupyter kernel records nothing; a metric value
that is not one scalar is a MetricTypeError naming the metric.
"""

from __future__ import annotations

import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from support.helpers import json_value, read_raw

import sqltrack
from sqltrack import cli
from sqltrack.metrics.table import metric_kind
from sqltrack.read.queries import metric_columns

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TARGET_PREFIX = "sqltrack: database: "

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


def tables(client_kwargs: dict[str, Any]) -> list[str]:
    """Every table of the test database (the SQLite file, the PostgreSQL schema)."""
    if client_kwargs["engine"] == "sqlite":
        with sqlite3.connect(client_kwargs["dbpath"]) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return sorted(r[0] for r in rows)
    conninfo = {k: v for k, v in client_kwargs.items() if k not in ("engine", "schema")}
    with psycopg.connect(**conninfo) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            [client_kwargs["schema"]],
        ).fetchall()
        types = conn.execute(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = %s", [client_kwargs["schema"]],
        ).fetchall()
    return sorted(r[0] for r in rows + types)


# -- the example --------------------------------------------------------------
def test_example_prints_where_it_wrote_and_the_next_commands(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "train.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    dbpath = tmp_path / "sqltrack-example.db"
    assert dbpath.is_file()
    lines = done.stdout.splitlines()
    assert f"wrote {dbpath}" in lines
    base = f"sqltrack --engine sqlite --dbpath {shlex.quote(str(dbpath))}"
    commands = [line.split("#")[0].strip() for line in lines if line.strip().startswith(base)]
    assert commands == [f"{base} runs", f"{base} ui"]

    # the printed command works as printed (through the installed entry point's module)
    words = shlex.split(commands[0])
    shown = subprocess.run([sys.executable, "-m", "sqltrack", *words[1:]], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "example-resnet" in shown.stdout and "COMPLETED" in shown.stdout
    assert shown.stderr.splitlines()[0] == f"{TARGET_PREFIX}sqlite file {dbpath}"

    # the README says the same, and never points at a database nothing created
    for command in ("runs", "ui"):
        assert (f'sqltrack --engine sqlite --dbpath "$PWD/sqltrack-example.db" {command}'
                in README)
    assert "--dbpath sqltrack-example.db ui" in README
    assert "--dbpath runs.db ui" not in README


# -- read-only commands -------------------------------------------------------
READ_ONLY = {
    "experiments": ["experiments"],
    "runs": ["runs"],
    "show": ["show", "1"],
    "export": ["export", "1", "-o", "out.csv"],
    "ui": ["ui", "--port", "0"],
}


def _assert_refused(code: int, err: str, where: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(TARGET_PREFIX) and where in lines[0]
    error = lines[1]
    assert error.startswith("sqltrack: error: no sqltrack tables in ")
    for hint in ("--engine sqlite --dbpath", "--host", "--dbname", "SQLTRACK_DSN_",
                 "sqltrack.conf", "sqltrack setup"):
        assert hint in error, error


@pytest.mark.parametrize("command", sorted(READ_ONLY))
def test_read_only_commands_never_create_tables(command, client_kwargs, capsys, tmp_path):
    if client_kwargs["engine"] == "sqlite":  # a SQLite file of someone else's
        with sqlite3.connect(client_kwargs["dbpath"]) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
        where = client_kwargs["dbpath"]
        before = ["notes"]
    else:
        where = f"schema={client_kwargs['schema']}"
        before = []
    code = cli.main([*conn_args(client_kwargs), *READ_ONLY[command]])
    out, err = capsys.readouterr()
    assert out == ""
    _assert_refused(code, err, where)
    assert tables(client_kwargs) == before
    assert not (tmp_path / "out.csv").exists()


def test_runs_without_options_refuses_the_default_database(pg_dsn, pg_schema, monkeypatch,
                                                           capsys):
    """Seen: ``sqltrack runs`` with no options created the whole schema in database ``root``.

    Here the settings come from SQLTRACK_DSN_* only (no option on the command line).
    """
    from support.helpers import pg_params

    for key, value in pg_params(pg_dsn).items():
        monkeypatch.setenv(f"SQLTRACK_DSN_{key.upper()}", value)
    monkeypatch.setenv("SQLTRACK_DSN_SCHEMA", pg_schema)
    code = cli.main(["runs"])
    out, err = capsys.readouterr()
    assert out == ""
    _assert_refused(code, err, f"schema={pg_schema}")
    assert tables({"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema}) == []


def test_setup_then_read_only_commands_work(client_kwargs, capsys):
    assert cli.main([*conn_args(client_kwargs), "setup"]) == 0
    assert "runs" in tables(client_kwargs)
    capsys.readouterr()
    assert cli.main([*conn_args(client_kwargs), "runs"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("id  experiment")
    assert err.count("\n") == 1 and err.startswith(TARGET_PREFIX)


# -- the target line ----------------------------------------------------------
def test_every_command_names_its_target_without_the_password(pg_dsn, pg_schema, capsys,
                                                              tmp_path):
    from support.helpers import pg_params

    params = pg_params(pg_dsn)
    # trust authentication ignores the password; it must still never be shown
    conninfo = " ".join(f"{k}={v}" for k, v in params.items() if k != "dbname")
    dbname = f"dbname={params['dbname']} {conninfo} password=hunter2"
    base = ["--engine", "postgres", "--dbname", dbname, "--schema", pg_schema,
            "-o", "sslpassword=hunter3"]
    commands = [["setup"], ["experiments"], ["runs"], ["show", "1"],
                ["export", "1", "-o", str(tmp_path / "x.csv")],
                ["mark-stale", "--older-than", "1h"]]
    for command in commands:
        cli.main([*base, *command])
        out, err = capsys.readouterr()
        assert "hunter2" not in out + err and "hunter3" not in out + err
        target = err.splitlines()[0]
        assert target.startswith(f"{TARGET_PREFIX}postgres host={params['host']} ")
        assert f"dbname={params['dbname']}" in target and f"schema={pg_schema}" in target


def test_sqlite_target_is_the_absolute_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--engine", "sqlite", "--dbpath", "rel.db", "setup"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"{TARGET_PREFIX}sqlite file {tmp_path / 'rel.db'}"


# -- args='auto' in a real Jupyter kernel -------------------------------------
def test_add_args_in_a_jupyter_kernel_records_nothing(client_kwargs, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    code = (
        "import sys, sqltrack\n"
        f"client = sqltrack.Client(**{client_kwargs!r})\n"
        "run = sqltrack.Experiment(client, name='notebook').get_run()\n"
        "run.add_args()\n"
        "print(run.id)\n"
        "print(sys.argv)\n"
        "client.close()\n"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = notebook.cells[0].outputs
    assert [o.get("output_type") for o in outputs] == ["stream"], outputs
    run_id_text, argv_text = outputs[0]["text"].splitlines()[:2]
    assert "-f" in argv_text  # the kernel's own command line, with its connection file
    (stored,), = read_raw(client_kwargs, "SELECT args FROM runs WHERE id = %s",
                          [int(run_id_text)])
    assert json_value(stored) in (None, {})


# -- metric values that are not one scalar ------------------------------------
class _Tensor:
    """Duck-typed like a torch tensor: ``.item()`` fails unless it holds one element."""

    def __init__(self, *values: float) -> None:
        self.values = values
        self.shape = (len(values),)

    def item(self) -> float:
        if len(self.values) != 1:
            raise RuntimeError(f"a Tensor with {len(self.values)} elements cannot be "
                               "converted to Scalar")
        return self.values[0]


@pytest.mark.parametrize("value", [np.array([0.1, 0.2]), [0.1, 0.2], _Tensor(0.1, 0.2),
                                   np.zeros((2, 2))],
                         ids=["numpy-2", "list", "tensor-2", "numpy-2x2"])
@pytest.mark.parametrize("buffered", [False, True], ids=["write-through", "buffered"])
async def test_non_scalar_metric_is_a_metric_type_error(client, run, client_kwargs, value,
                                                         buffered):
    if buffered:
        await run.set_buffered()
    with pytest.raises(sqltrack.MetricTypeError, match="metric 'val_top5'"):
        await run.add_metrics({"train_loss": 0.5, "val_top5": value}, step=1)
    if buffered:
        await run.flush()
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM metrics WHERE run_id = %s",
                    [run.id]) == [(0,)]
    assert await metric_columns(client) == {}


async def test_one_element_values_are_stored_as_scalars(run, client_kwargs):
    await run.add_metrics({"a": np.array([0.25]), "b": np.float32(0.5), "c": np.int64(3),
                           "d": np.array(7), "e": _Tensor(1.5), "f": np.bool_(True)}, step=0)
    rows = read_raw(client_kwargs, "SELECT a, b, c, d, e, f FROM metrics WHERE run_id = %s",
                    [run.id])
    assert rows == [(0.25, 0.5, 3, 7, 1.5, True)] or rows == [(0.25, 0.5, 3, 7, 1.5, 1)]


def test_metric_error_names_the_metric_and_the_shape():
    with pytest.raises(sqltrack.MetricTypeError) as raised:
        metric_kind("grad_norm", _Tensor(1.0, 2.0))
    assert str(raised.value).startswith("metric 'grad_norm': a metric value is one scalar, "
                                        "not a value of shape (2,) of type _Tensor")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
