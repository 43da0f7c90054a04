"""sqltrack: experiment tracking in plain SQL (PostgreSQL or SQLite), async-first.

The async API lives here: ``AsyncClient``, ``AsyncExperiment``, ``AsyncRun``.
``sqltrack.Client``, ``sqltrack.Experiment`` and ``sqltrack.Run`` are the
blocking classes of the generated ``sqltrack_sync`` package (imported on first
access), so the documented blocking API works as written.

The functions (``run_add_tags``, ``setup``, ...) serve both: given an
``AsyncClient`` they return the coroutine to await; given a blocking ``Client``
they do the work and return its result, as the spec documents (typed with
``@overload`` for both in the generated ``sqltrack._dual``)::

    await sqltrack.run_add_tags(async_client, run_id, "best")
    sqltrack.run_add_tags(client, run_id, "best")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import sigterm  # noqa: F401 - sqltrack.sigterm after `import sqltrack`, as in 0.1.x
from ._dual import (
    experiment_add_link,
    experiment_add_tags,
    experiment_remove_link,
    experiment_remove_tags,
    experiment_set_comment,
    experiment_set_name,
    experiment_set_tags,
    mark_stale_runs,
    run_add_args,
    run_add_env,
    run_add_extras,
    run_add_link,
    run_add_metrics,
    run_add_tags,
    run_from_env,
    run_remove_args,
    run_remove_env,
    run_remove_extras,
    run_remove_link,
    run_remove_tags,
    run_set_args,
    run_set_comment,
    run_set_created,
    run_set_env,
    run_set_extras,
    run_set_started,
    run_set_status,
    run_set_tags,
    run_set_updated,
    setup,
    sync,
)
from .client import AsyncClient
from .errors import (
    ClientClosed,
    ConnectionLost,
    DatabaseError,
    ExperimentNotFound,
    ForeignKeyViolation,
    IntegrityError,
    MetricTypeError,
    MetricWriteError,
    PoolTimeout,
    RunNotFound,
    SchemaMissing,
    ServerUnreachable,
    SqltrackError,
    UniqueViolation,
)
from .experiments import AsyncExperiment
from .runs import AsyncRun
from .signals import Terminated
from .values import STATUSES

if TYPE_CHECKING:  # the blocking classes, for type checkers (imported lazily at run time)
    from sqltrack_sync import Client, Experiment, Run

__version__ = "0.2.0"

#: Names served by the generated blocking facade, imported on first access.
_SYNC_NAMES = ("Client", "Experiment", "Run")

__all__ = [
    "AsyncClient",
    "AsyncExperiment",
    "AsyncRun",
    "ClientClosed",
    "ConnectionLost",
    "DatabaseError",
    "ExperimentNotFound",
    "ForeignKeyViolation",
    "IntegrityError",
    "MetricTypeError",
    "MetricWriteError",
    "PoolTimeout",
    "RunNotFound",
    "STATUSES",
    "SchemaMissing",
    "ServerUnreachable",
    "SqltrackError",
    "UniqueViolation",
    "Terminated",
    "experiment_add_link",
    "experiment_add_tags",
    "experiment_remove_link",
    "experiment_remove_tags",
    "experiment_set_comment",
    "experiment_set_name",
    "experiment_set_tags",
    "mark_stale_runs",
    "run_add_args",
    "run_add_env",
    "run_add_extras",
    "run_add_link",
    "run_add_metrics",
    "run_add_tags",
    "run_from_env",
    "run_remove_args",
    "run_remove_env",
    "run_remove_extras",
    "run_remove_link",
    "run_remove_tags",
    "run_set_args",
    "run_set_comment",
    "run_set_created",
    "run_set_env",
    "run_set_extras",
    "run_set_started",
    "run_set_status",
    "run_set_tags",
    "run_set_updated",
    "setup",
    "sync",
    "Client",  # the three blocking classes (_SYNC_NAMES)
    "Experiment",
    "Run",
]


def __getattr__(name: str) -> Any:
    if name in _SYNC_NAMES:
        import sqltrack_sync

        return getattr(sqltrack_sync, name)
    if name == "analysis":  # DataFrame helpers: imported on first use, like pandas / polars
        import importlib

        return importlib.import_module("sqltrack.analysis")
    raise AttributeError(f"module 'sqltrack' has no attribute {name!r}")
