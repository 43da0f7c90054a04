"""Loopback is loopback: ``sqltrack ui --host`` with any name or address that binds a
loopback address checks the Host header (no DNS rebinding), serves its own printed
address, and warns only when the bind is not loopback (a real server, a real socket)."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import sqltrack
from sqltrack import cli
from sqltrack.ui import allowed_hosts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sqltrack.__file__)))


def _machine_name_on_loopback() -> str:
    name = socket.gethostname()
    address = socket.getaddrinfo(name, 0, type=socket.SOCK_STREAM)[0][4][0]
    assert address.startswith("127."), f"{name} resolves to {address}, not loopback"
    return name


@contextmanager
def _ui(database: str, host: str) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    """``sqltrack ui --host HOST --port 0`` in a subprocess: (printed URL, token, process)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sqltrack", "ui", "--dbpath", database, "--host", host,
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()  # the start-up line (blocks until printed)
        match = re.search(r"(http://\S+)\?token=(\S+)", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        os.set_blocking(process.stderr.fileno(), False)
        yield match.group(1), match.group(2), process
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(url: str, token: str, host_header: str | None = None) -> int:
    match = re.match(r"http://(\[[^\]]+\]|[^:/]+):(\d+)/", url)
    assert match
    address, port = match.group(1).strip("[]"), int(match.group(2))
    deadline = time.monotonic() + 30
    while True:
        connection = http.client.HTTPConnection(address, port, timeout=10)
        try:
            headers = {"X-Sqltrack-Token": token, "Sec-Fetch-Site": "same-origin"}
            if host_header is not None:
                headers["Host"] = host_header
            connection.request("GET", "/api/experiments", headers=headers)
            return connection.getresponse().status
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            connection.close()


@pytest.mark.parametrize("host", ["127.0.0.2", "127.1", "machine name"])
def test_every_loopback_bind_checks_the_host_and_serves_its_own_address(tmp_path, host):
    if host == "machine name":
        host = _machine_name_on_loopback()
    database = str(tmp_path / "x.db")
    assert cli.main(["--dbpath", database, "setup"]) == 0
    with _ui(database, host) as (url, token, process):
        assert _get(url, token) == 200, url  # the printed address, Host as in it
        port = url.rsplit(":", 1)[1].strip("/")
        assert _get(url, token, f"{host}:{port}") == 200  # the name given to --host
        assert _get(url, token, f"evil.example:{port}") == 400  # DNS rebinding
        assert _get(url, token, f"attacker.test:{port}") == 400
        stderr = process.stderr.read() or ""
    assert "warning" not in stderr, stderr


def test_the_warning_names_a_bind_that_is_not_loopback(tmp_path):
    database = str(tmp_path / "x.db")
    assert cli.main(["--dbpath", database, "setup"]) == 0
    with _ui(database, "0.0.0.0") as (url, token, process):
        deadline = time.monotonic() + 30
        stderr = ""
        while "warning" not in stderr and time.monotonic() < deadline:
            stderr += process.stderr.read() or ""
            time.sleep(0.05)
        port = url.rsplit(":", 1)[1].strip("/")
        assert _get(f"http://127.0.0.1:{port}/", token, f"any.name:{port}") == 200
    assert "warning: 0.0.0.0 is not a loopback address" in stderr


def test_allowed_hosts_resolves_the_name():
    assert allowed_hosts("0.0.0.0") == ["*"]
    for host in ("127.0.0.1", "::1", "localhost", "127.1", "127.0.0.2",
                 _machine_name_on_loopback()):
        names = allowed_hosts(host)
        assert "*" not in names and host.lower() in names and "127.0.0.1" in names, host
    assert "127.0.0.2" in allowed_hosts("127.0.0.2")
    assert "127.0.0.1" in allowed_hosts("127.1")
    assert allowed_hosts("some.name", "10.1.2.3") == ["*"]  # the bound address decides
    assert "*" not in allowed_hosts("some.name", "127.0.0.5")
