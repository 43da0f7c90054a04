"""The page's reader role for the tests of users' SQL (PostgreSQL; SQLite needs none)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from support.helpers import drop_role

import sqltrack
from sqltrack.ui import readonly


@pytest.fixture
async def policy(client, engine, request) -> AsyncIterator[readonly.Policy]:
    """How the test's page runs users' SQL: on PostgreSQL as a reader role of its own,
    made by ``setup_reader`` (the tests log in as a superuser, so it is allowed)."""
    if engine != "postgres":
        yield readonly.Policy()
        return
    dsn = request.getfixturevalue("pg_dsn")
    role = "t_reader_" + uuid.uuid4().hex[:10]
    try:
        await sqltrack.setup_reader(client, role)
        yield readonly.Policy(reader=role, allow_superuser=True)
    finally:
        drop_role(dsn, role)
