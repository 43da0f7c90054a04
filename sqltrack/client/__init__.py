"""The client: ``AsyncClient``, its explicit state, its connections and hooks.

``from sqltrack.client import AsyncClient`` works as before; the class lives in
``sqltrack.client.async_client`` and is imported on first access, so lower layers
may import ``sqltrack.client.connections`` without loading the client itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .async_client import AsyncClient as AsyncClient


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from .async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'sqltrack.client' has no attribute {name!r}")
