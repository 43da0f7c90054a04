"""A compare of many runs reads them together (issue 22: 20 runs of a sweep on a 10^7-row
PostgreSQL table in < 150 ms): besides the buckets' extremes, the statements of
``/api/compare/curves`` do not grow with the runs compared (the last keys, the curves'
ends and counts are each read for all the runs at once); the extremes' statements
(``Dialect.curve_points_of``, ``curve_extremes_of``) hold the curves of runs of up to
``curve_steps_per_statement`` steps each on PostgreSQL (SQLite reads each run's
in-process). The answer is the one each run gets alone. Both engines, real databases."""

from __future__ import annotations

import json
import math

import pytest

import sqltrack
from sqltrack.engines.base import CurveSet
from sqltrack.read.queries import jsonable

STEPS = 300
MAX_POINTS = 40


async def runs_of_a_sweep(client, count: int) -> list[int]:
    """``count`` runs of STEPS steps with ``loss`` and ``acc`` (columns) and ``long``
    (long-stored), one NaN and one infinity in each run's loss (SQLite keeps NaN as
    NULL); the last run stops early."""
    exp = await sqltrack.AsyncExperiment.create(client, name="sweep")
    await client.query("INSERT INTO metric_names (name, kind) VALUES ('long', 'float')")
    ids = []
    for n in range(count):
        run = await exp.get_run()
        await run.add_metrics({"loss": 1.0, "acc": 0.0}, step=0)
        steps = STEPS if n < count - 1 else STEPS // 3
        await client.query(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < %s) "
            "INSERT INTO metrics (run_id, step, progress, loss, acc) "
            "SELECT %s, x, x * 0.5, (x * 7919 - x * 7919 / 613 * 613) * 0.01 + %s, "
            "x * 0.001 FROM s",
            [steps - 1, run.id, n])
        await client.query(
            "WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x < %s) "
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
    alone = {}
    for run_id in ids:
        data = await compare(http, [run_id], **afters)
        alone[run_id] = (data["runs"][0]["last"],
                         {name: curves[str(run_id)] for name, curves in data["metrics"].items()})
    statements: list[str] = []
    extremes: set[str] = set()  # the statements of Dialect.curve_points_of / extremes_of
    query, dialect = client.query, client.dialect
    made_by = {name: getattr(dialect, name) for name in ("curve_extremes_of", "curve_points_of")}

    async def counted(sql, *args, **kwargs):
        statements.append(sql)
        return await query(sql, *args, **kwargs)

    def recorded(name):
        def made(sets):
            found = made_by[name](sets)
            extremes.update(sql for sql, _, _ in found or [])
            return found
        return made

    monkeypatch.setattr(client, "query", counted)
    for name in made_by:
        monkeypatch.setattr(dialect, name, recorded(name))
    others, read = [], []
    for count in (1, len(ids)):
        statements.clear()
        data = await compare(http, ids[:count], **afters)
        others.append(sum(1 for sql in statements if sql not in extremes))
        read.append(sum(1 for sql in statements if sql in extremes))
    assert others[1] == others[0], others
    if engine == "postgres":  # two passes, one statement each (these runs are short):
        # the buckets (two sets a run: the tables), then the odd ones (NaN, inf)
        assert read == [2, 2], read
    # what each run gets alone: its last key and curves (downsampled, NaN and inf counted)
    assert [r["id"] for r in data["runs"]] == ids
    for run, run_id in zip(data["runs"], ids, strict=True):
        last, curves = alone[run_id]
        assert run["last"] == last
        assert {name: c[str(run_id)] for name, c in data["metrics"].items()} == curves
    loss = data["metrics"]["loss"][str(ids[0])]
    assert loss["downsampled"] and loss["points"] <= MAX_POINTS
    assert loss["non_finite"] == (1 if after is not None or engine == "sqlite" else 2)
    assert loss["total"] == (STEPS - 41 if after is not None
                             else STEPS - (1 if engine == "sqlite" else 0))
    for name in ("long", "acc"):
        assert data["metrics"][name][str(ids[-1])]["downsampled"]
    assert data["metrics"]["long"][str(ids[-1])]["total"] == (
        STEPS // 3 if after is None else STEPS // 3 - 1 - (40 + 3 * 5))


def test_json_lists_of_numbers_keep_finite_values_only():
    """``queries.jsonable`` (every API answer) on a curve's lists: a list whose numbers
    have a finite sum is kept whole, else NaN and infinities become null, also when the
    sum of finite values overflows or other kinds are mixed in."""
    nan, inf = float("nan"), float("inf")
    assert jsonable([1.0, 2, 0.5]) == [1.0, 2, 0.5]
    assert jsonable([1.0, nan, 2, inf]) == [1.0, None, 2, None]
    assert jsonable([1e308, 1e308, -inf]) == [1e308, 1e308, None]
    assert jsonable([1e308, 1e308]) == [1e308, 1e308]  # the sum is infinite, not the values
    assert jsonable([True, 1.5, None, -inf, "x"]) == [True, 1.5, None, None, "x"]


async def test_points_of_curves_are_their_bucket_rows_made_one(engine, client):
    """``Dialect.curve_points_of`` (PostgreSQL; SQLite has none) against the rows of
    ``curve_extremes_of`` for the same sets (several runs, a value missing at some steps,
    NaN and infinity in some buckets, a statement split by buckets with three values):
    per value, the values counted in buckets of finite extremes, the others by bucket,
    and the finite extremes once each in key order."""
    ids = await runs_of_a_sweep(client, 3)
    await client.query("UPDATE metrics SET acc = NULL WHERE step > 250 AND step < 280")
    sets = [CurveSet("metrics", "run_id = %s", [run_id], ['"loss"', '"acc"', '"loss"'],
                     low, 7, 40) for run_id in ids for low in (0, 13)]
    by_curve = client.dialect.curve_points_of(sets)
    if engine == "sqlite":
        assert by_curve is None
        return
    assert by_curve is not None
    expected: dict[tuple[int, int], tuple[int, dict[int, int], list]] = {}
    for sql, params, covered in client.dialect.curve_extremes_of(sets):
        counts: dict[tuple[int, int], int] = {}
        odd: set[tuple[int, int]] = set()
        found: dict[tuple[int, int], dict[tuple[int, float], float]] = {}
        for k, i, y, step, progress, count in await client.query(sql, params):
            key = (covered[k // 3], k % 3)
            counts[key, i] = counts.get((key, i), 0) + count
            if y is not None and not math.isfinite(y):
                odd.add((key, i))
            elif y is not None:
                found.setdefault(key, {})[(int(step), float(progress))] = y
        for key in {key for key, _ in counts}:
            counted, by_bucket, points = expected.get(key, (0, {}, []))
            mine = {i: n for (at, i), n in counts.items() if at == key}
            counted += sum(n for i, n in mine.items() if (key, i) not in odd)
            by_bucket.update({i: n for i, n in mine.items() if (key, i) in odd})
            points = sorted([*points, *found.get(key, {}).items()])
            expected[key] = (counted, by_bucket, points)
    got: dict[tuple[int, int], tuple[int, dict[int, int], list]] = {}
    for sql, params, covered in by_curve:
        for k, counted, odd_json, steps, progresses, ys in await client.query(sql, params):
            key = (covered[k // 3], k % 3)
            before, by_bucket, points = got.get(key, (0, {}, []))
            by_bucket.update({i: n for i, n in odd_json or []})
            keys = zip(json.loads(steps), json.loads(progresses), strict=True)
            points = sorted([*points, *zip(keys, json.loads(ys), strict=True)])
            got[key] = (before + counted, by_bucket, points)
    assert got == expected
    assert any(by_bucket for _, by_bucket, _ in got.values())  # NaN and inf were met
