"""The checks of ``add_metrics`` are skipped only for a call that would pass them.

``MetricTable.prepare`` remembers the names and value kinds of the last call of
plain values (bool, int, float) that passed every check; a call with the same
names and kinds skips the checks. Anything else (another kind, text, None, a
numpy scalar, a new name, columns changed by a rollback) is checked in full.
"""

from __future__ import annotations

import pytest
from support.helpers import read_raw

import sqltrack
from sqltrack.errors import MetricTypeError


async def test_same_names_other_kinds_are_checked(run, client_kwargs) -> None:
    import numpy as np  # the test extras install it (never skipped)
    for step in range(3):
        await run.add_metrics({"a": 1.0, "n": 1, "b": 2.0}, step=step)
    with pytest.raises(MetricTypeError):
        await run.add_metrics({"a": "text", "n": 1, "b": 2.0}, step=3)
    with pytest.raises(MetricTypeError):
        await run.add_metrics({"a": 1.0, "n": 1.5, "b": 2.0}, step=3)  # float into int
    with pytest.raises(MetricTypeError):
        await run.add_metrics({"a": 1.0, "n": True, "b": 2.0}, step=3)  # bool into int
    await run.add_metrics({"a": 1.0, "n": 2, "b": None}, step=4)
    await run.add_metrics({"a": 1.0, "n": 3, "b": np.float64(3.5)}, step=5)
    await run.add_metrics({"a": 1.0, "n": 4, "b": np.float64(4.5)}, step=6)
    rows = read_raw(client_kwargs, "SELECT step, n, b FROM metrics WHERE run_id = %s "
                    "ORDER BY step", (run.id,))
    assert rows == [(0, 1, 2.0), (1, 1, 2.0), (2, 1, 2.0), (4, 2, None), (5, 3, 3.5),
                    (6, 4, 4.5)]
    assert all(type(b) in (float, type(None)) for _, _, b in rows)


async def test_bad_name_after_good_calls_is_refused(run) -> None:
    for step in range(3):
        await run.add_metrics({"loss": 1.0}, step=step)
    with pytest.raises(ValueError):
        await run.add_metrics({"loss": 1.0, "bad name": 2.0}, step=3)


async def test_rolled_back_column_is_checked_again(client, client_kwargs) -> None:
    run = await (await sqltrack.AsyncExperiment.create(client, name="r")).get_run()
    await run.add_metrics({"loss": 1.0}, step=0)
    with pytest.raises(RuntimeError):
        async with client:
            await run.add_metrics({"loss": 1.0, "extra": 1}, step=1)
            await run.add_metrics({"loss": 1.0, "extra": 2}, step=2)
            raise RuntimeError("roll back")
    # the column "extra" is gone with the block; the same call creates it again
    await run.add_metrics({"loss": 1.0, "extra": 3}, step=3)
    assert read_raw(client_kwargs, "SELECT step, extra FROM metrics WHERE run_id = %s "
                    "ORDER BY step", (run.id,)) == [(0, None), (3, 3)]
