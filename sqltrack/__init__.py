"""sqltrack: experiment tracking in plain SQL (PostgreSQL or SQLite), async-first.

The async API lives here: ``AsyncClient``, ``AsyncExperiment``, ``AsyncRun`` and
the ``experiment_*`` / ``run_*`` coroutines. ``sqltrack.Client``,
``sqltrack.Experiment``, ``sqltrack.Run`` and the blocking functions come from
the generated ``sqltrack_sync`` package (imported on first access), so the
documented blocking API works as ``sqltrack.Client(...)``.
"""

from __future__ import annotations

from typing import Any

from .client import AsyncClient
from .errors import (
    ClientClosed,
    ExperimentNotFound,
    MetricTypeError,
    PoolTimeout,
    RunNotFound,
    SqltrackError,
)
from .experiments import (
    AsyncExperiment,
    experiment_add_link,
    experiment_add_tags,
    experiment_remove_link,
    experiment_remove_tags,
    experiment_set_comment,
    experiment_set_name,
    experiment_set_tags,
)
from .runs import (
    AsyncRun,
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
)
from .schema import setup
from .signals import Terminated
from .values import STATUSES

__version__ = "0.2.0"

#: Names served by the generated blocking facade, imported on first access.
_SYNC_NAMES = ("Client", "Experiment", "Run")

__all__ = [
    "AsyncClient",
    "AsyncExperiment",
    "AsyncRun",
    "ClientClosed",
    "ExperimentNotFound",
    "MetricTypeError",
    "PoolTimeout",
    "RunNotFound",
    "STATUSES",
    "SqltrackError",
    "Terminated",
    "experiment_add_link",
    "experiment_add_tags",
    "experiment_remove_link",
    "experiment_remove_tags",
    "experiment_set_comment",
    "experiment_set_name",
    "experiment_set_tags",
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
    *_SYNC_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _SYNC_NAMES:
        import sqltrack_sync

        return getattr(sqltrack_sync, name)
    raise AttributeError(f"module 'sqltrack' has no attribute {name!r}")
