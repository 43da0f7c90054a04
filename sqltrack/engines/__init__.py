"""Engines: one module per database, imported only when a client of it is made."""

from __future__ import annotations

from ..config import Settings
from .base import Engine


def make_engine(settings: Settings) -> Engine:
    """The engine for resolved settings (imports its driver on first use)."""
    if settings.engine == "sqlite":
        from .sqlite import SqliteEngine

        return SqliteEngine(settings)
    from .postgres import PostgresEngine

    return PostgresEngine(settings)
