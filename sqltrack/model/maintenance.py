"""Maintenance: clean up after processes that died without saying so.

A run whose process was killed (OOM killer, pre-emption, a lost node) stays
RUNNING forever. ``mark_stale_runs`` gives such runs a final status once they
have not been updated for a while.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..checks import check_int, check_status

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient


def _cutoff(older_than: timedelta | float) -> datetime | None:
    """Now minus ``older_than`` (a timedelta or seconds); None when before year 1."""
    if isinstance(older_than, bool) or not isinstance(older_than, (timedelta, int, float)):
        raise TypeError(f"older_than must be a timedelta or seconds, not {older_than!r}")
    seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"older_than must be a non-negative age, not {older_than!r}")
    try:
        return datetime.now(timezone.utc) - timedelta(seconds=seconds)
    except OverflowError:
        return None


async def mark_stale_runs(
    client: AsyncClient,
    older_than: timedelta | float,
    status: str = "NODE_FAIL",
    experiment_id: int | None = None,
) -> list[int]:
    """Give ``status`` to RUNNING runs not updated for ``older_than``; return their ids.

    A run's last sign of life is ``time_updated``, else ``time_started``, else
    ``time_created``. One atomic UPDATE marks them all, so a run that is updated
    at the same moment is not marked. ``time_updated`` is left as it was (the
    last sign of life). ``experiment_id`` limits the sweep to one experiment.
    """
    status = check_status(status)
    cutoff = _cutoff(older_than)
    if cutoff is None:  # older than any possible timestamp
        return []
    sql = (
        "UPDATE runs SET status = %s WHERE status = %s "
        "AND COALESCE(time_updated, time_started, time_created) < %s"
    )
    params: list[Any] = [status, "RUNNING", client.dialect.timestamp(cutoff)]
    if experiment_id is not None:
        sql += " AND experiment_id = %s"
        params.append(check_int(experiment_id, "experiment_id"))
    rows = await client.query(sql + " RETURNING id", params)
    return sorted(row[0] for row in rows)
