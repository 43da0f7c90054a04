"""Engines: one module per database, imported only when a client of it is made.

An engine is its dialect (``dialects.py``: the SQL differences, no I/O, registered in
``DIALECTS``) and its I/O class (named by the dialect's ``engine_class``).
"""

from __future__ import annotations

import importlib

from ..config import Settings
from .base import Dialect, Engine


def make_engine(settings: Settings) -> Engine:
    """The engine for resolved settings (imports its module and driver on first use)."""
    module, _, name = dialect_for(settings.engine).engine_class.partition(":")
    engine_type: type[Engine] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return engine_type(settings)


def dialect_for(engine_name: str) -> Dialect:
    """The dialect of an engine by name, for code that has only Settings (no driver imported)."""
    from .dialects import DIALECTS

    try:
        return DIALECTS[engine_name]
    except KeyError:
        raise ValueError(f"unknown engine {engine_name!r}") from None
