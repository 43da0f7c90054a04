"""A database password never shows: not in reprs, error messages, tracebacks, logs or CLI output.

The password is given each way the settings allow: keyword argument,
``SQLTRACK_DSN_PASSWORD``, a config file (by path and by ``SQLTRACK_CONFIG_PATH``),
and inside a connection URI in ``dbname`` (libpq reads one there) or ``conninfo``.
Failing connections go to a closed port on 127.0.0.1 and to a socket directory
that does not exist; working ones go to a server that checks the password
(``scram-sha-256``, ``support/scram.py``), directly and through a PgBouncer with
``auth_type = scram-sha-256``: only the right password logs in, so each way really
carried it. Everything printed or logged (DEBUG, every logger) is searched for the password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
import urllib.parse

import psycopg
import pytest
from support.scram import PASSWORD

import sqltrack
from sqltrack import cli

pytestmark = pytest.mark.faults

SECRET = PASSWORD  # the scram server's role logs in with it, and with nothing else
FORMS = (SECRET, urllib.parse.quote(SECRET, safe=""), "Sq1-s3cr3t")


def assert_hidden(text: str, where: str) -> None:
    for form in FORMS:
        assert form not in text, f"the password shows in {where}: {text}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("SQLTRACK_DSN_") or name in ("SQLTRACK_CONFIG_PATH", "PGPASSWORD"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.chdir(tmp_path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_for(way: str, base: dict[str, str], tmp_path, monkeypatch) -> dict:
    """Client kwargs whose password comes the given way (the rest from ``base``)."""
    kwargs = {"engine": "postgres", **base, "pool_timeout": 2}
    if way == "kwargs":
        return {**kwargs, "password": SECRET}
    if way == "env":
        monkeypatch.setenv("SQLTRACK_DSN_PASSWORD", SECRET)
        return kwargs
    if way in ("config", "config-env"):
        path = tmp_path / "sqltrack.conf"
        path.write_text(f"# test\npassword={SECRET}\n", encoding="utf-8")
        if way == "config":
            return {"config": str(path), **kwargs}
        monkeypatch.setenv("SQLTRACK_CONFIG_PATH", str(path))
        return kwargs
    assert way in ("uri", "conninfo")
    user = urllib.parse.quote(base.get("user", "postgres"))
    host = base.get("host", "127.0.0.1")
    where = (f"{urllib.parse.quote(host, safe='')}" if host.startswith("/")
             else f"{host}:{base.get('port', '5432')}")
    dbname = base.get("dbname", "postgres")
    uri = f"postgresql://{user}:{urllib.parse.quote(SECRET, safe='')}@{where}/{dbname}"
    rest = {k: v for k, v in kwargs.items() if k not in ("host", "port", "user", "dbname")}
    return {**rest, ("dbname" if way == "uri" else "conninfo"): uri}


def make_client(kwargs: dict, blocking: bool = False):
    config = kwargs.pop("config", None)
    make = sqltrack.Client if blocking else sqltrack.AsyncClient
    return make(config, **kwargs)


def cli_args(kwargs: dict) -> list[str]:
    args = ["--engine", "postgres"]
    if "config" in kwargs:
        args += ["--config", kwargs["config"]]
    for key, value in kwargs.items():
        if key not in ("engine", "config", "schema", "pool_timeout"):
            args += ["-o", f"{key}={value}"]
    if "schema" in kwargs:
        args += ["--schema", kwargs["schema"]]
    return args


WAYS = ["kwargs", "env", "config", "config-env", "uri", "conninfo"]


@pytest.mark.parametrize("target", ["closed-port", "no-socket"])
@pytest.mark.parametrize("way", WAYS)
def test_failing_connection_never_shows_the_password(
    way, target, tmp_path, monkeypatch, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    if target == "closed-port":
        base = {"host": "127.0.0.1", "port": str(closed_port()), "user": "postgres",
                "dbname": "test"}
    else:
        base = {"host": str(tmp_path / "no-such-dir"), "user": "postgres", "dbname": "test"}
    kwargs = settings_for(way, base, tmp_path, monkeypatch)
    client = make_client(dict(kwargs))
    assert_hidden(repr(client), "repr(client)")
    assert_hidden(repr(client.settings), "repr(client.settings)")
    assert_hidden(str(client.settings), "str(client.settings)")

    async def fail() -> None:
        try:
            await client.query("SELECT 1")
        finally:
            await client.close()

    blocking = make_client(dict(kwargs), blocking=True)
    assert_hidden(repr(blocking), "repr(Client)")
    for attempt in (lambda: asyncio.run(fail()), lambda: blocking.execute("SELECT 1")):
        with pytest.raises(sqltrack.errors.ConnectionLost) as caught:
            attempt()
        shown = "".join(traceback.format_exception(caught.value))
        assert_hidden(shown, "the exception and its traceback")
        assert_hidden(repr(caught.value), "repr(exception)")
    blocking.close()
    for record in caplog.records:
        assert_hidden(record.getMessage(), f"log record {record.name}")
        if record.exc_info:
            assert_hidden("".join(traceback.format_exception(*record.exc_info)), "a logged error")

    code = cli.main([*cli_args(kwargs), "runs"])
    out, err = capsys.readouterr()
    assert code == 1 and "cannot connect" in err, err
    assert_hidden(out + err, "CLI output")
    with pytest.raises(Exception) as caught:  # noqa: B017, PT011
        cli.main([*cli_args(kwargs), "--debug", "runs"])
    assert_hidden("".join(traceback.format_exception(caught.value)), "CLI --debug traceback")
    out, err = capsys.readouterr()
    assert_hidden(out + err, "CLI --debug output")


@pytest.fixture
def scram_schema(scram):
    name = "cred_" + os.urandom(5).hex()
    yield name
    with psycopg.connect(**scram.admin, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.mark.parametrize("through", ["direct", "pgbouncer"])
@pytest.mark.parametrize("way", WAYS)
def test_working_connection_never_shows_the_password(
    way, through, scram, scram_schema, request, tmp_path, monkeypatch, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    target = (scram.params if through == "direct"
              else {**request.getfixturevalue("scram_bouncer").params, "user": scram.role})
    base = {**target, "schema": scram_schema}
    kwargs = settings_for(way, base, tmp_path, monkeypatch)
    client = make_client(dict(kwargs), blocking=True)
    try:
        assert_hidden(repr(client), "repr(Client)")
        # the server checks the password: this login is the proof it was carried
        assert client.execute("SELECT current_user") == [(scram.role,)]
        run = sqltrack.Experiment(client, name="secret-test").get_run()
        with run.track():
            run.add_metrics({"loss": 0.5}, step=0)
            run.add_env()  # SQLTRACK_DSN_PASSWORD, if set, is stored masked
        stored = client.execute("SELECT env::text FROM runs WHERE id = %s", [run.id])
        assert_hidden(stored[0][0], "the stored environment")
        assert_hidden(repr(client), "repr(Client)")
        with pytest.raises(sqltrack.errors.DatabaseError) as caught:
            client.execute("SELECT no_such_column FROM runs")
        assert_hidden("".join(traceback.format_exception(caught.value)), "a query error")
    finally:
        client.close()
    for record in caplog.records:
        assert_hidden(record.getMessage(), f"log record {record.name}")

    for command in (["runs"], ["show", str(run.id)], ["experiments", "--json"]):
        code = cli.main([*cli_args(kwargs), *command])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert_hidden(out + err, f"CLI output of {command}")
