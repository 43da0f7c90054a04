"""Engines: one module per database, imported only when a client of it is made."""

from __future__ import annotations

from ..config import Settings
from .base import Dialect, Engine


def make_engine(settings: Settings) -> Engine:
    """The engine for resolved settings (imports its driver on first use)."""
    if settings.engine == "sqlite":
        from .sqlite import SqliteEngine

        return SqliteEngine(settings)
    from .postgres import PostgresEngine

    return PostgresEngine(settings)


def dialect_for(engine_name: str) -> Dialect:
    """The dialect of an engine by name, for code that has only Settings (no driver imported)."""
    from .dialects import DIALECTS

    try:
        return DIALECTS[engine_name]
    except KeyError:
        raise ValueError(f"unknown engine {engine_name!r}") from None
