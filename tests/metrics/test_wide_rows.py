"""Wide metric rows (W6): a batch of rows wider than SQLite's ``WIDE_ROW_PARAMETERS`` (one
row a statement there), and one row's long values by kind (PostgreSQL: the key as
scalars, names and values as arrays). Both engines."""

from __future__ import annotations

import math

import pandas as pd

import sqltrack
from sqltrack.engines.sqlite import WIDE_ROW_PARAMETERS
from sqltrack.read import analysis

NAMES = [f"m{i}" for i in range(WIDE_ROW_PARAMETERS + 50)]


async def make_run(kwargs, **settings):
    client = sqltrack.AsyncClient(**kwargs, **settings)
    experiment = await sqltrack.AsyncExperiment.create(client, name="wide")
    return client, await experiment.get_run()


def wide(step: int) -> dict[str, float]:
    return {name: step + index / 1000 for index, name in enumerate(NAMES)}


async def test_a_buffered_batch_of_wide_rows(client_kwargs):
    """NaN, -0.0, an int into a float column and a repeated step (the later row wins)
    keep their meaning in a batch of wide rows."""
    client, run = await make_run(client_kwargs)
    try:
        await run.add_metrics(dict.fromkeys(NAMES, 0.0), step=0)
        await run.set_buffered(flush_rows=1000, flush_interval=3600.0)
        for step in range(1, 31):
            await run.add_metrics(wide(step), step=step)
        await run.add_metrics({**wide(-1), "m0": math.nan, "m1": -0.0, "m2": 7}, step=5)
        await run.flush()
        frame = (await analysis.metrics_frame(client, run.id)).set_index("step")
        assert len(frame) == 31
        assert frame.loc[30][NAMES[-1]] == 30 + (len(NAMES) - 1) / 1000
        later = frame.loc[5]
        assert pd.isna(later["m0"])  # NaN (the frame's float columns read it as missing)
        assert later["m1"] == 0.0 and math.copysign(1.0, later["m1"]) == 1.0
        assert later["m2"] == 7.0 and later["m3"] == -1 + 3 / 1000
    finally:
        await client.close()


async def test_a_step_logged_again_with_columns_and_long_values(client_kwargs):
    """One row of a column and long values, logged again at a stored step (PostgreSQL
    tries a plain INSERT of the long values first: the conflict must fall back to the
    upsert with nothing of the failed try left), partly new names, and in a block."""
    client, run = await make_run(client_kwargs, metric_columns=1)
    try:
        await run.add_metrics({"loss": 1.0, "a": 1.0, "b": 2.0}, step=3)
        await run.add_metrics({"loss": 1.5, "a": 10.0, "c": 7}, step=3)  # a stored, c new
        await run.add_metrics({"a": 11.0, "c": 5}, step=4)
        async with client:  # one transaction
            await run.add_metrics({"a": 12.0, "b": 3.0}, step=3)
            await run.add_metrics({"a": 13.0}, step=5)
        assert await client.query("SELECT step, loss FROM metrics WHERE run_id = %s "
                                  "ORDER BY step", [run.id]) == [(3, 1.5)]
        frame = (await analysis.metrics_frame(client, run.id)).set_index("step")
        assert (frame.loc[3]["loss"], frame.loc[3]["a"], frame.loc[3]["b"],
                frame.loc[3]["c"]) == (1.5, 12.0, 3.0, 7)
        assert (frame.loc[4]["a"], frame.loc[4]["c"]) == (11.0, 5)
        assert frame.loc[5]["a"] == 13.0
        rows = await client.query("SELECT count(*) FROM metric_values WHERE run_id = %s",
                                  [run.id])
        assert rows == [(6,)]  # a, b, c at 3; a, c at 4; a at 5: each key once
    finally:
        await client.close()


async def test_one_row_of_long_values_of_several_kinds(client_kwargs):
    """Write-through of one row whose names are all long-stored: each kind's values,
    a NaN, an int into a float metric, the row written again (the upsert)."""
    client, run = await make_run(client_kwargs, metric_columns=0)
    try:
        first = {"f": 0.5, "g": 1.5, "i": 3, "b": True, "s": "x"}
        await run.add_metrics(first, step=0)
        await run.add_metrics({"f": math.nan, "g": 2, "i": -4, "b": False, "s": "é"}, step=1)
        await run.add_metrics({**first, "f": 0.25}, step=1)  # again: the later values win
        await run.add_metrics({"g": 9, "i": 2**40}, step=2)
        frame = (await analysis.metrics_frame(client, run.id)).set_index("step")
        assert (frame.loc[0]["f"], frame.loc[0]["g"], frame.loc[0]["i"]) == (0.5, 1.5, 3)
        got = frame.loc[1]
        assert (got["f"], got["g"], got["i"], bool(got["b"]), got["s"]) == (
            0.25, 1.5, 3, True, "x")
        assert (frame.loc[2]["g"], frame.loc[2]["i"]) == (9.0, 2**40)
        await run.add_metrics({"f": math.nan}, step=3)
        frame = (await analysis.metrics_frame(client, run.id)).set_index("step")
        assert math.isnan(frame.loc[3]["f"])
    finally:
        await client.close()
