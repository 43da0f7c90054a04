"""Password authentication, on a server that asks for one and through a PgBouncer that does.

The server (``support/scram.py``) checks ``scram-sha-256`` for its login role; PgBouncer
(``auth_type = scram-sha-256``, the role's stored SCRAM secret in its auth_file) checks the
client's password itself and logs in to the server with the client's SCRAM keys. The
password reaches sqltrack each way its settings allow: the ``password`` keyword,
``SQLTRACK_DSN_PASSWORD``, a config file (by ``config=`` path, by ``SQLTRACK_CONFIG_PATH``
and as ``./sqltrack.conf``), a URI (``postgresql://user:pw@host/db``, given as ``dbname``
or ``conninfo``) and libpq's own ``PGPASSWORD``. Each logs in (a run is written and read
back as the role) directly and through PgBouncer. A wrong password, each of those ways,
is ``CannotConnect`` (the first connection was never made) at once, saying that the
password was refused, and neither the wrong password nor the right one shows in its
message, its repr or its traceback.
"""

from __future__ import annotations

import time
import traceback
import urllib.parse
import uuid

import psycopg
import pytest

import sqltrack
from sqltrack.errors import CannotConnect

pytestmark = pytest.mark.faults

WRONG = "Wr0ng pa'ss#%@y"

WAYS = ["keyword", "env", "config", "config-env", "config-cwd", "uri", "conninfo", "PGPASSWORD"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for name in list(os.environ):
        if name.startswith("SQLTRACK_DSN_") or name in ("SQLTRACK_CONFIG_PATH", "PGPASSWORD",
                                                        "PGPASSFILE", "PGSERVICE"):
            monkeypatch.delenv(name)
    # no ~/.pgpass either: only the way under test may give a password
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=["direct", "pgbouncer"])
def target(request, scram) -> dict[str, str]:
    """The role's keywords (no password) straight to the server or through PgBouncer."""
    if request.param == "direct":
        return dict(scram.params)
    bouncer = request.getfixturevalue("scram_bouncer")
    return {**bouncer.params, "user": scram.role}


@pytest.fixture
def schema(scram):
    name = "pw_" + uuid.uuid4().hex[:10]
    yield name
    with psycopg.connect(**scram.admin, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def forms(password: str) -> tuple[str, ...]:
    """The password as given, URI-quoted, and its first word (a partial leak)."""
    return (password, urllib.parse.quote(password, safe=""), password.split()[0])


def assert_hidden(text: str, password: str, where: str) -> None:
    for form in forms(password):
        assert form not in text, f"the password shows in {where}: {text}"


def settings_for(way: str, target: dict[str, str], password: str, schema: str,
                 tmp_path, monkeypatch) -> tuple[object, dict]:
    """``(config, kwargs)`` of a client whose password comes the given way."""
    kwargs = {"engine": "postgres", **target, "schema": schema, "pool_timeout": 10}
    if way == "keyword":
        return None, {**kwargs, "password": password}
    if way == "env":
        monkeypatch.setenv("SQLTRACK_DSN_PASSWORD", password)
        return None, kwargs
    if way == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", password)
        return None, kwargs
    if way.startswith("config"):
        # the whole connection in the file, not only the password
        lines = [f"{key}={value}" for key, value in kwargs.items() if key != "pool_timeout"]
        text = "# sqltrack settings\n" + "\n".join([*lines, f"password={password}"]) + "\n"
        if way == "config-cwd":
            (tmp_path / "sqltrack.conf").write_text(text, encoding="utf-8")
            return None, {"pool_timeout": 10}
        path = tmp_path / "elsewhere.conf"
        path.write_text(text, encoding="utf-8")
        if way == "config":
            return str(path), {"pool_timeout": 10}
        monkeypatch.setenv("SQLTRACK_CONFIG_PATH", str(path))
        return None, {"pool_timeout": 10}
    assert way in ("uri", "conninfo")
    host = target["host"]
    where = (urllib.parse.quote(host, safe="") if host.startswith("/")
             else f"{host}:{target.get('port', '5432')}")
    uri = (f"postgresql://{urllib.parse.quote(target['user'], safe='')}:"
           f"{urllib.parse.quote(password, safe='')}@{where}/{target.get('dbname', 'postgres')}")
    rest = {k: v for k, v in kwargs.items() if k not in ("host", "port", "user", "dbname")}
    return None, {**rest, ("dbname" if way == "uri" else "conninfo"): uri}


@pytest.mark.parametrize("way", WAYS)
def test_the_password_logs_in(way, target, schema, scram, tmp_path, monkeypatch):
    config, kwargs = settings_for(way, target, scram.password, schema, tmp_path, monkeypatch)
    client = sqltrack.Client(config, **kwargs)
    try:
        assert client.execute("SELECT current_user")[0][0] == scram.role
        run = sqltrack.Experiment(client, name=f"password-{way}").get_run()
        with run.track():
            run.add_metrics({"loss": 0.25}, step=0)
        stored = client.execute("SELECT loss FROM metrics WHERE run_id = %s", [run.id])
        assert stored == [(0.25,)]
        assert_hidden(repr(client), scram.password, "repr(Client)")
    finally:
        client.close()
    with psycopg.connect(**scram.admin) as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'runs'",
            [schema],
        ).fetchone()
    assert owner == (scram.role,), "the tables were not made by the password's role"


@pytest.mark.parametrize("way", WAYS)
async def test_the_password_logs_in_async(way, target, schema, scram, tmp_path, monkeypatch):
    config, kwargs = settings_for(way, target, scram.password, schema, tmp_path, monkeypatch)
    client = sqltrack.AsyncClient(config, **kwargs)
    try:
        assert (await client.query("SELECT current_user"))[0][0] == scram.role
    finally:
        await client.close()


@pytest.mark.parametrize("way", WAYS)
def test_a_wrong_password_is_cannot_connect_and_never_shown(
    way, target, schema, scram, tmp_path, monkeypatch
):
    config, kwargs = settings_for(way, target, WRONG, schema, tmp_path, monkeypatch)
    client = sqltrack.Client(config, **kwargs)
    started = time.monotonic()
    try:
        with pytest.raises(CannotConnect) as caught:
            client.execute("SELECT 1")
    finally:
        client.close()
    took = time.monotonic() - started
    error = caught.value
    message = str(error)
    # says what was refused: the server's words, or PgBouncer's (it checks SCRAM itself)
    assert ("password authentication failed" in message
            or "SASL authentication failed" in message), message
    assert message.startswith("cannot connect to postgres "), message
    assert f"user={scram.role}" in message, message
    assert "\n" not in message, message
    # a refusal is not an outage: no waiting out the pool timeout (10 s) for it
    assert took < 8, f"a refused password took {took:.1f} s to report"
    shown = "".join(traceback.format_exception(error))
    for password in (WRONG, scram.password):
        assert_hidden(message, password, "the message")
        assert_hidden(repr(error), password, "repr(error)")
        assert_hidden(shown, password, "the traceback")
        assert_hidden(repr(client), password, "repr(Client)")
    assert isinstance(error.__cause__, psycopg.OperationalError)


def test_no_password_is_refused_too(target, schema, scram, tmp_path, monkeypatch):
    """The server (and PgBouncer) really ask: without a password the role gets nowhere."""
    client = sqltrack.Client(engine="postgres", **target, schema=schema, pool_timeout=10)
    try:
        with pytest.raises(CannotConnect) as caught:
            client.execute("SELECT 1")
    finally:
        client.close()
    assert "password" in str(caught.value) or "SASL" in str(caught.value), caught.value
