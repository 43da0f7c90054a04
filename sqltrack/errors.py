"""Exceptions that say what went wrong and what to do about it: one tree for both engines.

::

    SqltrackError
    ├── DatabaseError             the database (or its driver) refused a statement
    │   ├── IntegrityError        a constraint refused the change
    │   │   ├── UniqueViolation       a unique key (a taken experiment name, a metrics row key)
    │   │   └── ForeignKeyViolation   a referenced row is missing
    │   ├── DatabaseBusy          another connection held a lock past the wait (SQLite)
    │   ├── QueryRefused          users' read-only SQL refused or stopped (the web page)
    │   └── ConnectionLost        the server connection failed or broke (connect, restart, failover)
    │       ├── CannotConnect         the first connection was never made (settings, no server)
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
driver has one). Each error says whether it is transient (``error.transient``, or
:func:`is_transient` for any exception): the server or the file may answer if asked
again later (an outage, a lock), as opposed to a refusal that will not change. The
outage handling (buffered runs, the spool) uses nothing else. Driver objects you use
yourself (the connection of ``async with client as conn``, ``client.cursor()``) raise
the driver's own errors.
"""

from __future__ import annotations


class SqltrackError(Exception):
    """Base class of sqltrack's own errors."""

    #: Whether asking again later may succeed (an outage, a lock), not a refusal.
    transient: bool = False


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


class DatabaseBusy(DatabaseError):
    """Another connection held a lock for longer than the wait (SQLite's busy timeout)."""

    transient = True


class QueryRefused(DatabaseError):
    """Users' read-only SQL (the web page) was refused or stopped; the message is one line."""


class ConnectionLost(DatabaseError):
    """The server connection failed or broke; an idempotent statement may be retried."""

    transient = True


class CannotConnect(ConnectionLost):
    """The client's first connection could not be made: nothing was ever connected.

    The message is one line: what was tried (engine, host or socket, port, user,
    database; or the file), the driver's reason, and, when no settings were found at
    all, how to choose SQLite or a config file. A subclass of ConnectionLost (still
    transient: a server that is starting answers later), so ``except ConnectionLost``
    keeps catching it. The driver's error is its ``__cause__``, as for every
    translated error; ``reason`` is the ConnectionLost the engine raised.
    """

    def __init__(self, message: str, reason: BaseException | None = None) -> None:
        super().__init__(message)
        self.reason = reason


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

    transient = True


class ClientClosed(SqltrackError, RuntimeError):
    """The client was closed; make a new one."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away if asked again later (worth waiting for), not a refusal.

    sqltrack's errors say so themselves (``transient``); of the rest, a lost network
    connection (``ConnectionError``) and a timeout (``TimeoutError``, e.g. a bounded
    wait for a server that did not answer) are. Driver errors never get here: the
    engines translate every one of them.
    """
    if isinstance(error, SqltrackError):
        return error.transient
    return isinstance(error, (ConnectionError, TimeoutError))
