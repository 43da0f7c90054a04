"""The client's state: one explicit value instead of flags (as httpx's ``ClientState``)."""

from __future__ import annotations

import enum


class ClientState(enum.Enum):
    """Where a client is in its life.

    ``UNOPENED``: nothing connected yet (opening happens on first use, or after a
    fork or a restart at exit); ``OPEN``: the pool is up and the schema checked;
    ``CLOSED``: done for good, every further use raises ``ClientClosed``.
    """

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"
