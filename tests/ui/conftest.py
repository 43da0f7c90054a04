"""The page's reader role for the tests of users' SQL (PostgreSQL; SQLite needs none), and
an HTTP client of the page that runs users' SQL as that role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from support.helpers import drop_role

import sqltrack
from sqltrack.ui import create_app, readonly
from sqltrack.ui.app import TOKEN_HEADER


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


@pytest.fixture
async def http(client, policy) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the page over the test's AsyncClient, users' SQL run as ``policy``
    says (a test file may define its own ``http``)."""
    app = create_app(client, reader=policy.reader, allow_superuser=policy.allow_superuser)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        yield http
