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

What the integrations share: :func:`ranked` (``per_rank=``: which metrics each rank
stores, and under which name), :func:`current_job` (this process's rank, world size and
process group store) and :func:`publish_run` / :func:`receive_run`, rank zero's run
passed on through that store without a collective (the wandb-style module: a script
may open the run on rank zero only, and must not hang).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
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


def per_rank_patterns(per_rank: bool | str | Sequence[str]) -> bool | tuple[str, ...]:
    """The integrations' ``per_rank=`` setting normalised: True / False, or a tuple of
    metric names and ``fnmatch`` patterns (one str is one name)."""
    if isinstance(per_rank, bool):
        return per_rank
    return (per_rank,) if isinstance(per_rank, str) else tuple(per_rank)


def is_per_rank(name: str, per_rank: bool | tuple[str, ...]) -> bool:
    """Whether every rank logs ``name`` (``per_rank``: see :func:`per_rank_patterns`)."""
    if isinstance(per_rank, bool):
        return per_rank
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in per_rank)


def ranked(metrics: Mapping[str, Any], per_rank: bool | tuple[str, ...], rank: int,
           world: int = 1, names: Any = None, lead: bool | None = None) -> dict[str, Any]:
    """``metrics`` as rank ``rank`` of an integration stores them: the ``per_rank`` ones
    under ``<name>/rank<r>``. The leading process (``lead``; default: rank zero) keeps
    the others as they are and records in ``names`` (a ``MetricNames``) the columns of
    every rank's per-rank names (the other ranks do not write the run's name mapping);
    the other ranks keep only the per-rank ones (by default metrics come from rank zero)."""
    from .names import rank_name

    lead = rank == 0 if lead is None else lead
    values: dict[str, Any] = {}
    for name, value in metrics.items():
        if is_per_rank(name, per_rank):
            if lead and names is not None:
                for other in range(max(1, world)):
                    names.column(rank_name(name, other))
            values[rank_name(name, rank)] = value
        elif lead:
            values[name] = value
    return values


@dataclasses.dataclass(frozen=True)
class Job:
    """This process's place in a job of several processes: its global ``rank``, the
    ``world`` size and the process group's key-value ``store`` (None without an
    initialised ``torch.distributed`` process group)."""

    rank: int
    world: int
    store: Any = None


def _env_int(*names: str) -> int | None:
    for name in names:
        text = os.environ.get(name, "").strip()
        if text.isdigit():
            return int(text)
    return None


def current_job() -> Job | None:
    """The job this process is one of (None: a single process). ``torch.distributed``
    when it is initialised (it is never imported here), else ``WORLD_SIZE`` (torchrun)
    or ``SLURM_NTASKS`` above 1 with the rank of ``sqltrack.model.system_metrics.
    current_rank``."""
    from ..model.system_metrics import current_rank

    dist: Any = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        world = int(dist.get_world_size())
        return Job(int(dist.get_rank()), world, _default_store(dist)) if world > 1 else None
    size = _env_int("WORLD_SIZE", "SLURM_NTASKS")
    return Job(current_rank(), size) if size is not None and size > 1 else None


def _default_store(dist: Any) -> Any:
    """The key-value store of the default process group (None if this torch has none)."""
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - a torch without it: no store
        return None


#: Keys of :func:`publish_run` in the process group's store: per restart of an elastic
#: job (``TORCHELASTIC_RESTART_COUNT``) and per call (``{n}``).
STORE_KEY = "sqltrack/{restart}/{what}/{n}"


def store_key(what: str, n: int) -> str:
    """The store key of the ``n``-th ``what`` (e.g. ``"wandb.init"``) of this job."""
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0").strip() or "0"
    return STORE_KEY.format(restart=restart, what=what, n=int(n))


def publish_run(store: Any, key: str, value: Mapping[str, Any] | None) -> None:
    """Rank zero tells the others its run: ``value`` (JSON: run id and what they need to
    join), or None when it could not open it (they then raise instead of waiting).
    Not collective: setting a key never waits, so a program that opens the run on rank
    zero only does not hang."""
    import json

    store.set(key, json.dumps({"failed": True} if value is None else dict(value)))


def receive_run(store: Any, key: str) -> dict[str, Any]:
    """What rank zero published under ``key`` (waits for it, up to the store's timeout);
    raises when rank zero could not open the run."""
    import json

    value = json.loads(store.get(key))
    if value.get("failed"):
        raise RuntimeError("rank zero could not open the shared run (see its error)")
    return dict(value)


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
