"""A compare of many runs reads them together (issue 22: 20 runs of a sweep on a 10^7-row
PostgreSQL table in < 150 ms): the statements of ``/api/compare/curves`` do not grow with
the runs compared on PostgreSQL (the last keys, the curves' ends and counts and their
buckets' extremes are each read for all the runs at once), and on SQLite only by the
extremes' statements of ``Dialect.curve_extremes`` (one a run here), whose rows it reads
in-process. The answer is the one each run gets alone. Both engines, real databases."""

from __future__ import annotations

import pytest
from support.helpers import RowCounts

import sqltrack

STEPS = 300
MAX_POINTS = 40
#: Statements a compare may add per run beyond the first: PostgreSQL none, SQLite the
#: extremes of its curves (one statement with these few buckets).
EXTRA_PER_RUN = {"postgres": 0, "sqlite": 1}


async def runs_of_a_sweep(client, count: int) -> list[int]:
    """``count`` runs of STEPS steps with ``loss`` and ``acc`` (columns) and ``long``
    (long-stored), one NaN and one infinity in each run's loss; the last run stops early."""
    exp = await sqltrack.AsyncExperiment.create(client, name="sweep")
    ids = []
    for n in range(count):
        run = await exp.get_run()
        await run.add_metrics({"loss": 1.0, "acc": 0.0, "long": 2.0}, step=0)
        steps = STEPS if n < count - 1 else STEPS // 3
        await client.query(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < %s) "
            "INSERT INTO metrics (run_id, step, progress, loss, acc) "
            "SELECT %s, x, x * 0.5, (x * 7919 - x * 7919 / 613 * 613) * 0.01 + %s, x * 0.001 FROM s",
            [steps - 1, run.id, n])
        await client.query(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < %s) "
            "INSERT INTO metric_values (run_id, step, progress, name, value) "
            "SELECT %s, x, x * 0.5, 'long', (x * 13 - x * 13 / 101 * 101) * 0.1 FROM s",
            [steps - 1, run.id])
        for step, value in ((17, float("nan")), (101 + n, float("inf"))):
            await client.query("UPDATE metrics SET loss = %s WHERE run_id = %s AND step = %s",
                               [value, run.id, step])
        ids.append(run.id)
    return ids


async def compare(http, ids: list[int], **params) -> dict:
    response = await http.get("/api/compare/curves", params={
        "runs": ",".join(map(str, ids)), "max_points": MAX_POINTS, **params})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("after", [None, "some"])
async def test_compare_statements_do_not_grow_with_the_runs(engine, client, http,
                                                            monkeypatch, after):
    ids = await runs_of_a_sweep(client, 6)
    afters = {} if after is None else {"after": ",".join(
        f"{run_id}:{40 + 3 * n}:{(40 + 3 * n) * 0.5}" for n, run_id in enumerate(ids))}
    rows = RowCounts(client, monkeypatch)
    alone = {}
    for run_id in ids:
        data = await compare(http, [run_id], **afters)
        alone[run_id] = (data["runs"][0]["last"],
                         {name: curves[str(run_id)] for name, curves in data["metrics"].items()})
    statements = []
    for count in (1, len(ids)):
        rows.counts.clear()
        data = await compare(http, ids[:count], **afters)
        statements.append(len(rows.counts))
    assert statements[1] <= statements[0] + EXTRA_PER_RUN[engine] * (len(ids) - 1), statements
    # what each run gets alone: its last key and curves (downsampled, NaN and inf counted)
    assert [r["id"] for r in data["runs"]] == ids
    for run, run_id in zip(data["runs"], ids, strict=True):
        last, curves = alone[run_id]
        assert run["last"] == last
        assert {name: c[str(run_id)] for name, c in data["metrics"].items()} == curves
    loss = data["metrics"]["loss"][str(ids[0])]
    assert loss["downsampled"] and loss["points"] <= MAX_POINTS
    assert loss["non_finite"] == (2 if after is None else 1)
    assert data["metrics"]["long"][str(ids[-1])]["total"] == (
        STEPS // 3 if after is None else STEPS // 3 - 1 - (40 + 3 * 5))
