"""Run identity (colour, display name, differing args) and groups with bands, on the
compare API (httpx, both engines)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx
import pytest

import sqltrack
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER
from sqltrack.ui.identity import PALETTE, aggregate


@pytest.fixture
async def http(client) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        yield http


async def sweep(client) -> list[int]:
    """Six runs: lr 0.1 / 0.01 x seed 0..2; loss = (seed + 1) * lr * 100 - step at steps
    0..3; the first run named, the wandb group is the lr, tags by seed parity."""
    ids = []
    async with client:
        exp = await sqltrack.AsyncExperiment.create(client, name="sweep")
        for lr in (0.1, 0.01):
            for seed in range(3):
                run = await exp.get_run()
                await run.set_args({"lr": lr, "seed": seed, "opt": "adam"})
                extras = {"group": f"g{lr}"}
                if not ids:
                    extras["name"] = "first"
                await run.set_extras(extras)
                await run.set_tags("even" if seed % 2 == 0 else "odd")
                for step in range(4):
                    await run.add_metrics({"loss": (seed + 1) * lr * 100 - step}, step=step)
                await run.set_status("COMPLETED")
                ids.append(run.id)
    return ids


async def test_compare_names_colours_and_differing_args(client, http):
    ids = await sweep(client)
    data = (await http.get("/api/compare/curves",
                           params={"runs": ",".join(map(str, ids))})).json()
    assert data["differing"] == ["lr", "seed"]  # opt is the same everywhere
    runs = data["runs"]
    assert runs[0]["label"] == "first"
    assert runs[1]["label"] == "lr=0.1 seed=1"
    assert runs[4]["label"] == "lr=0.01 seed=1"
    assert [r["color"] for r in runs] == [PALETTE[i % len(PALETTE)] for i in ids]
    assert runs[3]["args"] == {"lr": 0.01, "seed": 0}
    assert all(r["group"] is None for r in runs) and "groups" not in data
    # Two runs that differ by seed only are named by their seed.
    two = (await http.get("/api/compare/curves",
                          params={"runs": f"{ids[4]},{ids[5]}"})).json()
    assert [r["label"] for r in two["runs"]] == ["seed=1", "seed=2"]


@pytest.mark.parametrize("band", ["minmax", "std"])
async def test_compare_grouped_by_arg_mean_and_band(client, http, band):
    ids = await sweep(client)
    data = (await http.get("/api/compare/curves", params={
        "runs": ",".join(map(str, ids)), "group": "args.lr", "band": band})).json()
    assert data["group"] == "args.lr" and data["band"] == band
    assert [r["group"] for r in data["runs"]] == ["0.1"] * 3 + ["0.01"] * 3
    lines = data["groups"]["loss"]
    assert [line["key"] for line in lines] == ["0.1", "0.01"]
    for line, lr, members in zip(lines, (0.1, 0.01), (ids[:3], ids[3:]), strict=True):
        assert [r["id"] for r in line["runs"]] == members
        assert line["color"] == PALETTE[members[0] % len(PALETTE)]
        assert line["step"] == [0, 1, 2, 3] and line["count"] == [3, 3, 3, 3]
        for step, mean, low, high in zip(line["step"], line["mean"], line["low"],
                                         line["high"], strict=True):
            values = [(seed + 1) * lr * 100 - step for seed in range(3)]
            expected = sum(values) / 3
            assert math.isclose(mean, expected)
            if band == "minmax":
                assert math.isclose(low, min(values)) and math.isclose(high, max(values))
            else:
                spread = math.sqrt(sum((v - expected) ** 2 for v in values) / 3)
                assert math.isclose(low, expected - spread)
                assert math.isclose(high, expected + spread)


async def test_compare_groups_by_wandb_group_tags_status_and_refuses_unknown(client, http):
    ids = await sweep(client)
    runs = ",".join(map(str, ids))
    by = {}
    for spec in ("group", "tags", "status", "extras.group"):
        data = (await http.get("/api/compare/curves",
                               params={"runs": runs, "group": spec})).json()
        by[spec] = [line["key"] for line in data["groups"]["loss"]]
    assert by["group"] == by["extras.group"] == ["g0.1", "g0.01"]
    assert by["tags"] == ["even", "odd"]
    assert by["status"] == ["COMPLETED"]
    for params in ({"group": "nope"}, {"group": "args."}, {"group": "args.lr", "band": "x"}):
        response = await http.get("/api/compare/curves", params={"runs": runs, **params})
        assert response.status_code == 400


def test_aggregate_interpolates_runs_on_each_others_steps():
    # One run has points at 0, 2, 4; the other at 0, 4 only (its bucket kept fewer):
    # at step 2 the second run counts with its straight line between 0 and 4.
    line = aggregate([([0, 2, 4], [0.0, 2.0, 4.0]), ([0, 4], [2.0, 6.0]), ([4, 6], [1.0, 1.0])],
                     "minmax")
    assert line["step"] == [0, 2, 4, 6]
    assert line["count"] == [2, 2, 3, 1]
    assert line["mean"] == [1.0, 3.0, (4 + 6 + 1) / 3, 1.0]
    assert line["low"] == [0.0, 2.0, 1.0, 1.0] and line["high"] == [2.0, 4.0, 6.0, 1.0]
