"""What every engine provides: a connection pool and the SQL dialect differences.

Everything above this layer (client, experiments, runs, metrics) writes SQL once,
with ``%s`` placeholders, and asks the engine for the few pieces that differ.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..config import Settings

#: Python kinds a metric column can hold; ``None`` means "declared by the user, not checked".
METRIC_KINDS = ("bool", "int", "float", "str", "datetime")


class Engine(ABC):
    """One database engine: pool of driver connections plus dialect pieces."""

    name: str
    #: False: ``open`` raises SchemaMissing instead of creating the base schema.
    create_schema: bool = True
    #: What opening did to the schema ("created ...", "upgraded ..."), None: nothing.
    schema_outcome: str | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- pool -----------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Create the pool and make sure the base schema exists."""

    @abstractmethod
    async def close(self) -> None:
        """Close every connection of the pool."""

    @abstractmethod
    async def acquire(self) -> Any:
        """Take a driver connection from the pool (bounded wait, then an error)."""

    @abstractmethod
    async def release(self, conn: Any) -> None:
        """Give a connection back to the pool, idle."""

    def lost_connection(self, error: BaseException, conn: Any) -> bool:
        """Whether ``error`` means the server connection is gone (worth one retry)."""
        return False

    async def recover(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """After a lost connection: drop the pool's dead connections."""

    @abstractmethod
    async def begin_block(self, conn: Any) -> None:
        """Prepare a connection for a user transaction block (``async with client``)."""

    @abstractmethod
    async def end_block(self, conn: Any, commit: bool) -> None:
        """Commit or roll back the block's transaction and make the connection idle."""

    @abstractmethod
    async def commit(self, conn: Any) -> None: ...

    @abstractmethod
    async def rollback(self, conn: Any) -> None: ...

    # -- statements -----------------------------------------------------------
    @abstractmethod
    async def cursor(self, conn: Any) -> Any:
        """A driver cursor of ``conn`` (``async with`` it, or close it)."""

    @abstractmethod
    async def fetch(self, conn: Any, sql: str, params: Sequence = (), *, oneshot: bool) -> list:
        """Run one statement and return its rows (``[]`` when it returns none).

        ``oneshot`` means no transaction is open around it: the engine commits it
        with as few round trips as it can.
        """

    @abstractmethod
    async def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence], *, oneshot: bool):
        """Run one statement for each parameter row."""

    @abstractmethod
    async def executescript(self, conn: Any, script: str, *, oneshot: bool) -> None:
        """Run several ``;``-separated statements without parameters."""

    # -- dialect --------------------------------------------------------------
    def sql(self, query: str) -> str:
        """Our own SQL is written with ``%s`` placeholders; engines translate it.

        Never applied to users' SQL, which uses the driver's placeholders as written.
        """
        return query

    @abstractmethod
    def quote_ident(self, name: str) -> str:
        """Quote a validated identifier for this engine."""

    @abstractmethod
    def json_param(self) -> str:
        """SQL for a JSON value given as a parameter (the parameter is ``dump_json`` output)."""

    @abstractmethod
    def json_merge(self, column: str) -> str:
        """SQL expression: ``column`` with the keys of a JSON object parameter merged in."""

    @abstractmethod
    def json_remove(self, column: str) -> str:
        """SQL expression: ``column`` without the keys listed in a parameter."""

    @abstractmethod
    def key_list_param(self, keys: Sequence[str]) -> Any:
        """The parameter value for ``json_remove``."""

    def dump_json(self, value: Any) -> Any:
        """The parameter value for a JSON column."""
        import json

        return json.dumps(value, allow_nan=True)

    def timestamp(self, value: datetime) -> Any:
        """The parameter value for a timestamp column."""
        return value

    @abstractmethod
    def is_foreign_key_error(self, error: BaseException) -> bool:
        """Whether a statement failed on a foreign key (a referenced row is missing)."""

    @abstractmethod
    def metric_column_type(self, kind: str) -> str:
        """Column type for a new metric column of a Python kind (see METRIC_KINDS)."""

    @abstractmethod
    async def metric_columns(self, conn: Any, *, oneshot: bool) -> dict[str, str | None]:
        """Existing metric columns: name -> kind (None for types we do not check)."""

    @abstractmethod
    async def add_metric_column(self, conn: Any, name: str, kind: str, *, oneshot: bool) -> None:
        """Add a metric column; succeed when another process added it at the same moment."""

    @abstractmethod
    async def write_metrics(
        self,
        conn: Any,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
        *,
        oneshot: bool,
    ) -> None:
        """Upsert one metrics row and set ``runs.time_updated`` (unless ``updated`` is None).

        Costs one round trip (PostgreSQL) or one hop into the worker thread (SQLite).
        Raises LookupError when the run does not exist.
        """

    @abstractmethod
    async def write_metrics_batch(
        self,
        conn: Any,
        names: tuple[str, ...],
        run_id: int,
        rows: list[tuple],
        updated: datetime | None,
        *,
        oneshot: bool,
    ) -> None:
        """Upsert many ``(run_id, step, progress, *values)`` rows with unique keys.

        Sets ``runs.time_updated`` once (unless ``updated`` is None).
        """

    def metric_value(self, value: Any) -> Any:
        """The parameter value for a metric (engines override for what they cannot store)."""
        return value


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
