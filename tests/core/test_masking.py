"""One masking function: a password in a URI, a conninfo or a DSN is masked the same way
in the CLI's output, in ``repr(settings)`` and in ``env='auto'``.

The CLI goes to a closed port on 127.0.0.1 (it prints its target line and one
error line); ``env='auto'`` is stored by a run on each engine.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

import sqltrack
from sqltrack import cli
from sqltrack.environment import MASKED, mask_passwords

SECRET = "Sq1-s3cr3t"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def forms(port: int) -> dict[str, str]:
    """Connection strings holding SECRET, by kind; each is malformed (an unknown option or
    an open quote), so the settings refuse it with an error that shows it, masked."""
    return {
        "uri": f"postgresql://bob:{SECRET}@127.0.0.1:{port}/db?badopt=1",
        "conninfo": f"host=127.0.0.1 port={port} user=bob password={SECRET} dbname=db badkey=1",
        "uri-at-in-password": f"postgresql://bob:{SECRET}@x@127.0.0.1:{port}/db?badopt=1",
        "dsn-pwd-key": f"host=127.0.0.1 port={port} pwd={SECRET} dbname=db",
        "conninfo-quoted": f"host=127.0.0.1 port={port} password='{SECRET} x' dbname='db",
    }


PORT = closed_port()
KINDS = list(forms(PORT))


def masked_everywhere(value: str, err: str, settings_repr: str, stored: str) -> None:
    """The CLI's error line, repr(settings) and env='auto' show the same masked text."""
    masked = mask_passwords(value)
    assert SECRET not in masked and MASKED in masked
    assert SECRET not in err + settings_repr + stored
    assert stored == masked
    assert repr(masked) in settings_repr
    (line,) = err.splitlines()  # refused before connecting: no target line
    assert line.startswith("sqltrack: error: config value dbname=") and repr(masked) in line


@pytest.mark.parametrize("kind", KINDS)
async def test_cli_settings_and_env_auto_mask_identically(kind, client, run, monkeypatch,
                                                          capsys):
    value = forms(PORT)[kind]
    for name in ("SQLTRACK_DSN_DBNAME", "SQLTRACK_DSN_CONNINFO", "SQLTRACK_CONFIG_PATH"):
        monkeypatch.delenv(name, raising=False)

    monkeypatch.setenv("DATABASE_URL", value)
    await run.add_env("auto")
    rows = await client.query("SELECT env FROM runs WHERE id = %s", [run.id])
    env = rows[0][0]
    stored = (json.loads(env) if isinstance(env, str) else env)["DATABASE_URL"]

    # A libpq keyword taking free text keeps the string whole: repr masks it.
    settings = sqltrack.AsyncClient(engine="postgres", application_name=value).settings

    argv = ["--engine", "postgres", "--dbname", value, "runs"]
    assert await asyncio.to_thread(cli.main, argv) == 1  # the CLI runs its own loop
    out, err = capsys.readouterr()
    assert out == ""
    masked_everywhere(value, err, repr(settings), stored)
    assert cli.mask is mask_passwords  # the CLI has no masking of its own


@pytest.mark.parametrize("form", ["uri", "conninfo"])
def test_valid_connection_string_password_masked(form, clean_env, capsys):
    """A well-formed string is split into settings: the password shows as *** in repr and
    never in the CLI's target and error lines."""
    value = (f"postgresql://bob:{SECRET}@127.0.0.1:{PORT}/db" if form == "uri"
             else f"host=127.0.0.1 port={PORT} user=bob password={SECRET} dbname=db")
    settings = sqltrack.AsyncClient(engine="postgres", dbname=value).settings
    assert f"'password': {MASKED!r}" in repr(settings) and SECRET not in repr(settings)
    assert cli.main(["--engine", "postgres", "--dbname", value, "runs"]) == 1
    out, err = capsys.readouterr()
    target, error = err.splitlines()
    assert SECRET not in out + err
    assert f"host=127.0.0.1 port={PORT} user=bob dbname=db" in target
    assert error.startswith("sqltrack: error: cannot connect")
