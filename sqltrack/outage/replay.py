"""Replaying a spool: its entries written to their database, oldest first, then forgotten.

Rows go through the client's metric writer (the same checks and write as any other
batch); run updates (a run made offline, its status and times) reuse the run SQL of
the model (``sqltrack.model.statements``). Replay is idempotent: metric rows are
upserts on ``(run_id, step, progress)`` and run updates set values, so an entry
written twice (a replay killed between the write and the removal of the entry)
gives the same result. The file itself: ``sqltrack.outage.spool``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from ..errors import is_transient
from ..metrics.writer import MetricWriter
from ..model.statements import Database, create_run_with_id, update_run
from .io import offload
from .spool import Entry, ReplayResult, Spool


class ReplayTarget(Database, Protocol):
    """The database a spool is replayed into (an ``AsyncClient`` is one)."""

    @property
    def metrics(self) -> MetricWriter: ...


async def replay(spool: Spool, target: ReplayTarget, wait: float = 0.0) -> ReplayResult:
    """Write the spool's entries for its target to ``target``, oldest first, and forget them.

    Stops at the first outage (raised; the rest stays for later); an entry the
    target refuses is kept with its error (``refused``) and the replay goes on.
    Another process replaying the file: wait up to ``wait`` seconds, then return
    with ``busy`` set.
    """
    result = ReplayResult()
    if not spool.opened() and not spool.exists():
        return result
    async with spool.replaying(wait) as held:
        if held is None:
            result.busy = True
            result.left = await offload(spool.pending)
            return result
        while True:
            entries = await offload(spool.take)
            if not entries:
                break
            for group in _groups(entries):
                seqs = [entry.seq for entry in group]
                try:
                    await _write(target, group)
                except Exception as error:
                    if is_transient(error):
                        result.left = await offload(spool.pending)
                        raise
                    await offload(spool.refuse, seqs, f"{error}")
                    result.refused += len(seqs)
                    result.errors.append(f"run {group[0].run_id}: {error}")
                    continue
                await offload(spool.remove, seqs)
                if group[0].row is None:
                    result.run_updates += len(group)
                else:
                    result.rows += len(group)
    return result


async def replay_pending(target: ReplayTarget, spool: Spool | None, wait: float = 0.0) -> None:
    """Replay ``spool`` if it holds entries; an outage leaves them for later (a
    buffered run retries them), anything else raises."""
    if spool is None or not await offload(spool.pending):
        return
    try:
        await replay(spool, target, wait)
    except Exception as error:
        if not is_transient(error):
            raise


def _groups(entries: list[Entry]) -> Iterator[list[Entry]]:
    """Consecutive entries of one run and one kind (rows go out as one batch)."""
    group: list[Entry] = []
    for entry in entries:
        if group and (entry.run_id != group[0].run_id
                      or (entry.row is None) != (group[0].row is None)):
            yield group
            group = []
        group.append(entry)
    if group:
        yield group


async def _write(target: ReplayTarget, group: list[Entry]) -> None:
    if group[0].row is not None:
        await target.metrics.write_rows([e.row for e in group if e.row is not None])
        return
    for entry in group:
        await apply_run_update(target, entry.run_id, entry.update or {})


async def apply_run_update(target: Database, run_id: int, update: dict[str, Any]) -> None:
    """Create a run made offline, set its spooled status and times (idempotent: plain
    assignments, and an insert that finds the run keeps it)."""
    experiment_id = update.get("experiment_id")
    if experiment_id is not None:
        found = await create_run_with_id(target, run_id, experiment_id)
        if found != experiment_id:
            raise ValueError(f"run {run_id} belongs to experiment {found}, "
                             f"not {experiment_id}")
    columns = [c for c in ("status", "time_started", "time_updated") if c in update]
    if not columns:
        return
    params: list[Any] = []
    for column in columns:
        value = update[column]
        params.append(value if column == "status"
                      else target.dialect.timestamp(datetime.fromisoformat(value)))
    assignment = ", ".join(f"{column} = %s" for column in columns)  # fixed column names
    await update_run(target, run_id, assignment, params)
