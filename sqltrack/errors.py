"""Exceptions that say what went wrong and what to do about it."""

from __future__ import annotations


class SqltrackError(Exception):
    """Base class of sqltrack's own errors."""


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


class SchemaMissing(SqltrackError, LookupError):
    """The database has no sqltrack tables and the client may not create them."""


class PoolTimeout(SqltrackError, TimeoutError):
    """No connection became free within the pool timeout."""


class ClientClosed(SqltrackError, RuntimeError):
    """The client was closed; make a new one."""
