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

``import sqltrack`` loads only the error classes; every other public name (and
the ``sigterm`` and ``analysis`` modules) is imported on first access through
the module ``__getattr__`` below, so a program that only imports sqltrack, or
runs on SQLite, does not pay for asyncio, the PostgreSQL driver, the spool or
``sqltrack sync``. Type checkers see the names imported under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # the lazily imported names, for type checkers
    from sqltrack_sync import Client, Experiment, Run

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
    from .checks import STATUSES
    from .client.async_client import AsyncClient
    from .model.experiments import AsyncExperiment
    from .model.runs import AsyncRun
    from .process import sigterm as sigterm
    from .process.signals import Terminated
    from .read import analysis as analysis

__version__ = "0.2.0"

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

#: Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY: dict[str, str] = {
    "AsyncClient": "sqltrack.client.async_client",
    "AsyncExperiment": "sqltrack.model.experiments",
    "AsyncRun": "sqltrack.model.runs",
    "STATUSES": "sqltrack.checks",
    "Terminated": "sqltrack.process.signals",
    # the three blocking classes of the generated facade
    "Client": "sqltrack_sync",
    "Experiment": "sqltrack_sync",
    "Run": "sqltrack_sync",
    **dict.fromkeys((
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
    ), "sqltrack._dual"),
}
#: Submodules listed by ``dir()``: ``sqltrack.process.sigterm`` (as in 0.1.x) and
#: ``sqltrack.read.analysis`` (DataFrame helpers, like pandas / polars). Any submodule is
#: reachable as an attribute after ``import sqltrack`` (imported on first access).
_SUBMODULES = ("analysis", "sigterm")


def __getattr__(name: str) -> Any:
    home = _LAZY.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value  # later lookups find it without __getattr__
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"sqltrack.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"sqltrack.{name}":
                raise
    raise AttributeError(f"module 'sqltrack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
