"""The sync tests' databases: ``database(engine, **settings)`` gives the client keyword
arguments of a fresh, empty database (a SQLite file, or a PostgreSQL schema of its own,
dropped afterwards), so that each test copies between databases nothing else touches."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from support.helpers import pg_params


@pytest.fixture
def database(tmp_path, request) -> Iterator[Callable[..., dict[str, Any]]]:
    """``database(engine, **settings)``: client keyword arguments of a fresh database."""
    schemas: list[str] = []

    def make(engine: str, **settings: Any) -> dict[str, Any]:
        if engine == "sqlite":
            return {"engine": "sqlite", "dbpath": str(tmp_path / f"{uuid.uuid4().hex[:8]}.db"),
                    **settings}
        dsn = request.getfixturevalue("pg_dsn")
        schemas.append("t_" + uuid.uuid4().hex[:12])
        return {"engine": "postgres", **pg_params(dsn), "schema": schemas[-1], **settings}

    yield make
    if schemas:
        with psycopg.connect(request.getfixturevalue("pg_dsn"), autocommit=True) as conn:
            for name in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
