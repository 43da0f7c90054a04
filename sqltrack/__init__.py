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

The name tables (those imports, ``__all__``, ``_LAZY``, ``_SUBMODULES``) are written
by ``tools/gen_sync.py`` between the GENERATED markers below: change the generator's
inputs (the async source, its ``EXTRA_HOME`` / ``SUBMODULES``) and rerun it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# -- BEGIN GENERATED public names (tools/gen_sync.py; DO NOT EDIT) --
from sqltrack.errors import (
    CannotConnect,
    ClientClosed,
    ConnectionLost,
    DatabaseBusy,
    DatabaseError,
    ExperimentNotFound,
    ForeignKeyViolation,
    IntegrityError,
    MetricTypeError,
    MetricWriteError,
    PoolTimeout,
    QueryRefused,
    RunNotFound,
    SchemaMissing,
    ServerUnreachable,
    SqltrackError,
    UniqueViolation,
)

if TYPE_CHECKING:  # the lazily imported names, for type checkers
    from sqltrack._dual import (
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
        run_fork,
        run_from_env,
        run_remove_args,
        run_remove_env,
        run_remove_extras,
        run_remove_link,
        run_remove_tags,
        run_rewind,
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
        setup_reader,
        sync,
    )
    from sqltrack.checks import STATUSES
    from sqltrack.client.async_client import AsyncClient
    from sqltrack.model.experiments import AsyncExperiment
    from sqltrack.model.runs import AsyncRun
    from sqltrack.process import sigterm as sigterm
    from sqltrack.process.signals import Terminated
    from sqltrack.read import analysis as analysis
    from sqltrack_sync import Client, Experiment, Run

__all__ = [
    "AsyncClient",
    "AsyncExperiment",
    "AsyncRun",
    "CannotConnect",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "DatabaseBusy",
    "DatabaseError",
    "Experiment",
    "ExperimentNotFound",
    "ForeignKeyViolation",
    "IntegrityError",
    "MetricTypeError",
    "MetricWriteError",
    "PoolTimeout",
    "QueryRefused",
    "Run",
    "RunNotFound",
    "STATUSES",
    "SchemaMissing",
    "ServerUnreachable",
    "SqltrackError",
    "Terminated",
    "UniqueViolation",
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
    "run_fork",
    "run_from_env",
    "run_remove_args",
    "run_remove_env",
    "run_remove_extras",
    "run_remove_link",
    "run_remove_tags",
    "run_rewind",
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
    "setup_reader",
    "sync",
]

#: Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY: dict[str, str] = {
    "AsyncClient": "sqltrack.client.async_client",
    "AsyncExperiment": "sqltrack.model.experiments",
    "AsyncRun": "sqltrack.model.runs",
    "Client": "sqltrack_sync",
    "Experiment": "sqltrack_sync",
    "Run": "sqltrack_sync",
    "STATUSES": "sqltrack.checks",
    "Terminated": "sqltrack.process.signals",
    "experiment_add_link": "sqltrack._dual",
    "experiment_add_tags": "sqltrack._dual",
    "experiment_remove_link": "sqltrack._dual",
    "experiment_remove_tags": "sqltrack._dual",
    "experiment_set_comment": "sqltrack._dual",
    "experiment_set_name": "sqltrack._dual",
    "experiment_set_tags": "sqltrack._dual",
    "mark_stale_runs": "sqltrack._dual",
    "run_add_args": "sqltrack._dual",
    "run_add_env": "sqltrack._dual",
    "run_add_extras": "sqltrack._dual",
    "run_add_link": "sqltrack._dual",
    "run_add_metrics": "sqltrack._dual",
    "run_add_tags": "sqltrack._dual",
    "run_fork": "sqltrack._dual",
    "run_from_env": "sqltrack._dual",
    "run_remove_args": "sqltrack._dual",
    "run_remove_env": "sqltrack._dual",
    "run_remove_extras": "sqltrack._dual",
    "run_remove_link": "sqltrack._dual",
    "run_remove_tags": "sqltrack._dual",
    "run_rewind": "sqltrack._dual",
    "run_set_args": "sqltrack._dual",
    "run_set_comment": "sqltrack._dual",
    "run_set_created": "sqltrack._dual",
    "run_set_env": "sqltrack._dual",
    "run_set_extras": "sqltrack._dual",
    "run_set_started": "sqltrack._dual",
    "run_set_status": "sqltrack._dual",
    "run_set_tags": "sqltrack._dual",
    "run_set_updated": "sqltrack._dual",
    "setup": "sqltrack._dual",
    "setup_reader": "sqltrack._dual",
    "sync": "sqltrack._dual",
}
#: Modules that are public names (``dir()`` lists them), imported on first access.
_SUBMODULES = ("analysis", "sigterm")
# -- END GENERATED public names --

__version__ = "0.2.0"


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
