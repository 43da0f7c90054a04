"""One run for every rank of a plain ``torch.distributed`` job.

    import torch.distributed as dist
    from sqltrack.integrations.distributed import shared_run

    dist.init_process_group("gloo")            # or nccl; any backend
    client = sqltrack.Client()
    run = shared_run(client, experiment_id)    # the same Run on every rank
    with run.track(system_metrics=10):          # each rank samples its own process / GPU
        ...
        if dist.get_rank() == 0:                # metrics from rank zero, as usual
            run.add_metrics({"loss": loss}, step=step)

Rank zero gets or creates the run (``Run(client, experiment_id, run_id)``: ``run_id``
None makes a new one; a str names an environment variable such as ``"SLURM_JOB_ID"``)
and broadcasts its id; the other ranks load that run only after it exists. So no
duplicate runs and no duplicate-key errors, whatever the number of ranks. Without an
initialised process group (or with one process) it is simply ``Run(...)``.

Every rank may call ``run.track()`` / ``start()`` / ``stop()``: the status updates are
plain updates of one row (the last one wins; give the ranks other than zero
``normal="COMPLETED"`` as well, the default). System metrics carry the rank and the
host (``sqltrack.model.system_metrics``): one run holds the samples of every rank.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def _group_rank(group: Any) -> tuple[Any, int, int] | None:
    """``(torch.distributed, rank, world size)`` when a process group is up, else None."""
    try:
        dist: Any = importlib.import_module("torch.distributed")
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist, dist.get_rank(group), dist.get_world_size(group)


def _broadcast_id(dist: Any, run_id: int | None, group: Any) -> int | None:
    """Rank zero of ``group`` sends ``run_id`` (None: it failed); every rank gets it."""
    box: list[Any] = [run_id]
    source = 0 if group is None else dist.get_global_rank(group, 0)  # a global rank
    dist.broadcast_object_list(box, src=source, group=group)
    return None if box[0] is None else int(box[0])


def _received(run_id: int | None) -> int:
    if run_id is None:
        raise RuntimeError("rank zero could not open the shared run (see its error)")
    return run_id


def broadcast_run_id(run_id: int | None, group: Any = None, failed: bool = False) -> int | None:
    """Rank zero's ``run_id`` on every rank of the process group (collective: every rank
    calls it; the others pass None). None without a process group of two or more ranks.
    Rank zero passes ``failed=True`` when it could not open the run: the other ranks then
    raise instead of waiting."""
    found = _group_rank(group)
    if found is None or found[2] == 1:
        return None if failed else run_id
    dist, rank, _ = found
    sent = _broadcast_id(dist, None if failed or rank != 0 else run_id, group)
    if failed:
        return None
    return _received(sent)


def per_rank(metrics: Mapping[str, Any], rank: int | None = None) -> dict[str, Any]:
    """``metrics`` named per rank, for ``run.add_metrics``: ``{"throughput": 9.5}`` of rank 1
    -> ``{"throughput__rank1": 9.5}``, the column the integrations use for the name
    ``throughput/rank1`` (``sqltrack.integrations.names.rank_name``). ``rank``: this
    process's global rank when None (``sqltrack.model.system_metrics.current_rank``).

    Every rank writes its own columns into the row of the same ``(step, progress)``
    (rows are upserts that keep the columns not given), so one row a step holds every
    rank's value: ``SELECT step, throughput__rank0, throughput__rank1 FROM metrics``.
    """
    from ..model.system_metrics import current_rank
    from .names import column_name, rank_name

    rank = current_rank() if rank is None else int(rank)
    return {column_name(rank_name(name, rank)): value for name, value in metrics.items()}


def shared_run(client: Any, experiment_id: int | None = None,
               run_id: int | str | None = None, group: Any = None) -> Any:
    """The same ``sqltrack.Run`` on every rank of the process group (``group``: the
    default one). Collective: every rank of the group must call it. See the module doc."""
    import sqltrack

    found = _group_rank(group)
    if found is None or found[2] == 1:
        return sqltrack.Run(client, experiment_id, run_id)
    dist, rank, _ = found
    if rank == 0:
        try:
            run = sqltrack.Run(client, experiment_id, run_id)
        except BaseException:
            _broadcast_id(dist, None, group)  # the other ranks raise instead of waiting
            raise
        _broadcast_id(dist, run.id, group)
        return run
    return sqltrack.Run(client, run_id=_received(_broadcast_id(dist, None, group)))


async def async_shared_run(client: Any, experiment_id: int | None = None,
                           run_id: int | str | None = None, group: Any = None) -> Any:
    """``shared_run`` for an ``AsyncClient``: the same ``AsyncRun`` on every rank (the
    broadcast blocks the event loop for as long as rank zero takes to open the run)."""
    import sqltrack

    found = _group_rank(group)
    if found is None or found[2] == 1:
        return await sqltrack.AsyncRun.create(client, experiment_id, run_id)
    dist, rank, _ = found
    if rank == 0:
        try:
            run = await sqltrack.AsyncRun.create(client, experiment_id, run_id)
        except BaseException:
            _broadcast_id(dist, None, group)
            raise
        _broadcast_id(dist, run.id, group)
        return run
    received = _received(_broadcast_id(dist, None, group))
    return await sqltrack.AsyncRun.create(client, run_id=received)
