"""Exceptions that say what went wrong and what to do about it: one tree for both engines.

::

    SqltrackError
    ├── DatabaseError             the database (or its driver) refused a statement
    │   ├── IntegrityError        a constraint refused the change
    │   │   ├── UniqueViolation       a unique key (a taken experiment name, a metrics row key)
    │   │   └── ForeignKeyViolation   a referenced row is missing
    │   └── ConnectionLost        the server connection failed or broke (connect, restart, failover)
    │       └── ServerUnreachable     the server did not answer for a while (an outage), named
    ├── PoolTimeout (TimeoutError)         no pooled connection became free in time
    ├── MetricWriteError                   buffered metric rows could not be written
    ├── RunNotFound (LookupError)          the run id does not exist
    ├── ExperimentNotFound (LookupError)   the experiment id or name does not exist
    ├── SchemaMissing (LookupError)        no sqltrack tables, and none may be created
    ├── MetricTypeError (TypeError)        a value does not fit its metric column
    └── ClientClosed (RuntimeError)        the client was closed

Driver errors (psycopg, sqlite3) are translated where the engine runs a statement
(``sqltrack/engines/``), for sqltrack's own statements and for raw SQL given to
``client.execute`` / ``executemany`` / ``executescript`` / ``query`` alike; the
driver's exception stays chained as ``__cause__`` (and ``sqlstate`` is kept when the
driver has one). Driver objects you use yourself (the connection of ``async with
client as conn``, ``client.cursor()``) raise the driver's own errors.
"""

from __future__ import annotations


class SqltrackError(Exception):
    """Base class of sqltrack's own errors."""


class DatabaseError(SqltrackError):
    """The database or its driver reported an error; the driver's error is ``__cause__``."""

    #: SQLSTATE of the error when the driver reports one (PostgreSQL), else None.
    sqlstate: str | None = None


class IntegrityError(DatabaseError):
    """A constraint of the database refused the change."""


class UniqueViolation(IntegrityError):
    """A unique key is taken (an experiment name, a metrics row key, ...)."""


class ForeignKeyViolation(IntegrityError):
    """A row refers to a row that does not exist (or would be left without it)."""


class ConnectionLost(DatabaseError):
    """The server connection failed or broke; an idempotent statement may be retried."""


class ServerUnreachable(ConnectionLost):
    """The server did not answer (stopped, restarting, out of the network) for a while.

    Raised instead of a pool timeout when the pool waited because no connection
    to the server could be made, and by a write-through call once its
    ``retry_window`` is over: the message names the server and the last reason.
    """


class RunNotFound(SqltrackError, LookupError):
    """The run id does not exist in the database."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} does not exist; create it with AsyncRun.create / Run(...)")
        self.run_id = run_id


class ExperimentNotFound(SqltrackError, LookupError):
    """The experiment id or name does not exist in the database."""

    def __init__(self, experiment: int | str) -> None:
        super().__init__(
            f"experiment {experiment!r} does not exist; "
            "create it with AsyncExperiment.create / Experiment(...)"
        )
        self.experiment = experiment


class MetricTypeError(SqltrackError, TypeError):
    """A metric value does not fit the type of its existing column."""


class MetricWriteError(SqltrackError):
    """Buffered metric rows could not be written (the cause is chained)."""


class SchemaMissing(SqltrackError, LookupError):
    """The database has no sqltrack tables and the client may not create them."""


class PoolTimeout(SqltrackError, TimeoutError):
    """No connection became free within the pool timeout."""


class ClientClosed(SqltrackError, RuntimeError):
    """The client was closed; make a new one."""
