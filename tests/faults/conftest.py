"""Servers the fault tests share: one password-checking PostgreSQL, and a PgBouncer in front.

Both are started on first use and stopped at the end of the session
(``tests/support/scram.py``, ``tests/support/pgbouncer.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.pgbouncer import PgBouncer, running_pgbouncer
from support.scram import ScramServer, scram_server


@pytest.fixture(scope="session")
def scram() -> Iterator[ScramServer]:
    """A throwaway server with ``scram-sha-256`` for its login role (and trust for postgres)."""
    with scram_server() as server:
        yield server


@pytest.fixture(scope="session")
def scram_bouncer(scram: ScramServer) -> Iterator[PgBouncer]:
    """PgBouncer (transaction mode, ``auth_type = scram-sha-256``) in front of ``scram``:
    its auth_file holds the role's stored SCRAM secret, never the password."""
    with running_pgbouncer(
        scram.params, pool_size=4, auth_type="scram-sha-256",
        users={scram.role: scram.secret}, probe={"password": scram.password},
    ) as bouncer:
        yield bouncer
