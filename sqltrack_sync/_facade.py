"""Hand-written plumbing of the generated blocking classes (``sqltrack_sync.client`` etc.).

The generator (``tools/gen_sync.py``) writes only forwarding methods; what every
blocking class needs besides them lives here, linted and type-checked:
``ClientBase`` (the ``with client as conn`` block, ``cursor()``, the mix-up
errors, the exit clean-up), ``Wrapper`` (what ``Experiment`` and ``Run`` share)
and ``unwrap`` (the AsyncClient behind a blocking Client).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, NoReturn, TypeVar

from sqltrack.client.async_client import AsyncClient
from sqltrack_sync import _portal, _process
from sqltrack_sync._dbapi import Connection, Cursor

#: Attributes that only an AsyncClient has: reaching for them means a mix-up
#: (``query`` included: the core coroutines use it, so a Client given to one
#: fails before any statement runs).
ASYNC_ONLY = frozenset(
    {"query", "metrics", "statements", "hooks", "settings", "_engine", "_run"}
)

#: The AsyncClient members the blocking Client forwards (the documented API); the
#: others are the core's (engine-level) and raise a mix-up error on a Client.
FORWARDED = ("engine", "close", "execute", "executemany", "executescript", "commit", "rollback")

W = TypeVar("W", bound="Wrapper")


def async_client_needed() -> TypeError:
    """The error for a blocking Client used where an AsyncClient is needed."""
    return TypeError(
        "this is a blocking sqltrack.Client; coroutines need an "
        "sqltrack.AsyncClient (or use the blocking functions of sqltrack_sync)"
    )


def unwrap(client: object) -> AsyncClient:
    """The AsyncClient behind a blocking Client; a clear error for anything else."""
    if isinstance(client, ClientBase):
        return client._async
    if isinstance(client, AsyncClient):
        raise TypeError(
            "got an AsyncClient: the blocking API needs sqltrack.Client(...); "
            "with an AsyncClient, await the coroutines of sqltrack instead"
        )
    raise TypeError(f"expected a sqltrack.Client, got {client!r}")


class ClientBase:
    """What the generated blocking ``Client`` has besides its forwarded methods."""

    _async: AsyncClient

    def _open(self, async_client: AsyncClient) -> None:
        """Drive ``async_client``; its exit clean-up and process policy start here."""
        self._async = async_client
        _process.register_cleanup(self)

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client")

    def __getattr__(self, name: str) -> NoReturn:
        if name in ASYNC_ONLY or hasattr(AsyncClient, name):
            raise async_client_needed()
        raise AttributeError(name)

    def __aenter__(self) -> NoReturn:
        raise async_client_needed()

    def __aexit__(self, *exc: object) -> NoReturn:
        raise async_client_needed()

    @property
    def async_client(self) -> AsyncClient:
        """The AsyncClient this client drives (for use from coroutines)."""
        return self._async

    def __enter__(self) -> Connection:
        """Hold one connection for the block (per thread; nested blocks reuse it)."""
        return Connection(self._async, _portal.call(self._async.__aenter__))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _portal.call(self._async.__aexit__, exc_type, exc, tb)

    @contextmanager
    def cursor(self) -> Iterator[Cursor]:
        """``with client.cursor() as cursor``: a driver cursor inside a client block."""
        with self as conn, conn.cursor() as cursor:
            yield cursor

    async def aclose_at_exit(self) -> None:
        """At interpreter exit: stop runs left open, then close the pool."""
        await _process.close_at_exit(self._async)


class Wrapper:
    """What the generated ``Experiment`` and ``Run`` share: the client and the async object."""

    _client: Any
    _async: Any

    @classmethod
    def _wrap(cls: type[W], client: ClientBase, async_obj: Any) -> W:
        """An instance around an existing async object (no database call)."""
        obj = cls.__new__(cls)
        obj._client = client
        obj._async = async_obj
        return obj

    def __repr__(self) -> str:
        return repr(self._async).replace("<Async", "<")
