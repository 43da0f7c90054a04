"""DataFrames of runs and metrics (sqltrack.analysis), pandas and polars, on both engines."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import pytest

import sqltrack
from sqltrack import analysis

BACKENDS = ("pandas", "polars")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def records(frame: Any) -> list[dict[str, Any]]:
    """Rows of a pandas or polars frame as dicts, missing values as None."""
    if hasattr(frame, "to_dicts"):  # polars
        return frame.to_dicts()
    import pandas as pd

    rows = frame.astype(object).to_dict("records")
    return [{k: (None if _pandas_missing(pd, v) else v) for k, v in r.items()} for r in rows]


def _pandas_missing(pd: Any, value: Any) -> bool:
    # pandas marks a missing float or string as NaN: no telling it from a NaN value
    return value is pd.NA or value is pd.NaT or isinstance(value, float) and math.isnan(value)


def is_nan(frame: Any, column: str, index: int) -> bool:
    """Whether the value at ``index`` of ``column`` is a NaN float (not a missing value)."""
    value = frame[column][index] if hasattr(frame, "to_dicts") else frame[column].iloc[index]
    return isinstance(value, float) and math.isnan(value)


def columns(frame: Any) -> list[str]:
    return list(frame.columns)


async def seed(client) -> dict[str, Any]:
    """Two experiments, three runs with args/env/extras/tags and metrics; their ids."""
    async with client:  # one transaction: fast
        return await _seed(client)


async def _seed(client) -> dict[str, Any]:
    resnet = await sqltrack.AsyncExperiment.create(client, name="resnet")
    other = await sqltrack.AsyncExperiment.create(client, name="other")
    first = await resnet.get_run()
    await first.set_args({"lr": 0.1, "optim": {"name": "sgd", "momentum": 0.9}})
    await first.set_env({"HOME": "/home/alice"})
    await first.set_extras({"gpu": "A100"})
    await first.set_tags("best", "fast")
    await first.set_comment("first")
    await first.start()
    for step in range(3):
        await first.add_metrics({"loss": 1.0 / (step + 1), "epoch": step}, step=step,
                                progress=step / 3)
    await first.add_metrics({"val_acc": 0.5}, step=2, progress=2 / 3)
    second = await resnet.get_run()
    await second.set_args({"lr": 0.01, "batch": 64})
    await second.set_env({})
    await second.set_tags("fast")
    await second.add_metrics({"loss": float("nan"), "phase": "warmup"}, step=0)
    await second.add_metrics({"loss": 0.25}, step=1)
    stray = await other.get_run()
    await stray.add_metrics({"loss": 9.0}, step=0)
    return {"resnet": resnet.id, "other": other.id, "first": first.id, "second": second.id,
            "stray": stray.id}


# -- runs_frame ---------------------------------------------------------------
async def test_runs_frame_by_name_and_id(client, backend):
    ids = await seed(client)
    by_name = await analysis.runs_frame(client, "resnet", backend=backend)
    by_id = await analysis.runs_frame(client, ids["resnet"], backend=backend)
    assert columns(by_name) == list(analysis.RUN_COLUMNS)
    rows = records(by_name)
    assert records(by_id) == rows
    assert [r["id"] for r in rows] == [ids["first"], ids["second"]]
    first = rows[0]
    assert first["experiment_id"] == ids["resnet"]
    assert first["status"] == "RUNNING"
    assert first["comment"] == "first"
    assert first["args"]["optim"] == {"name": "sgd", "momentum": 0.9}
    assert first["tags"] == {"best": True, "fast": True}
    assert first["env"] == {"HOME": "/home/alice"}
    started = first["time_started"]
    assert started.utcoffset().total_seconds() == 0
    assert abs(started.timestamp() - datetime.now(timezone.utc).timestamp()) < 600
    assert rows[1]["time_started"] is None


async def test_runs_frame_all_runs_and_errors(client, backend):
    ids = await seed(client)
    every = records(await analysis.runs_frame(client, backend=backend))
    assert [r["id"] for r in every] == [ids["first"], ids["second"], ids["stray"]]
    with pytest.raises(sqltrack.ExperimentNotFound):
        await analysis.runs_frame(client, "nope", backend=backend)
    with pytest.raises(sqltrack.ExperimentNotFound):
        await analysis.runs_frame(client, 987654, backend=backend)
    with pytest.raises(ValueError, match="cannot expand 'comment'"):
        await analysis.runs_frame(client, expand_json=["comment"], backend=backend)
    with pytest.raises(ValueError, match="unknown backend"):
        await analysis.runs_frame(client, backend="arrow")


async def test_runs_frame_expand_json(client, backend):
    ids = await seed(client)
    frame = await analysis.runs_frame(client, "resnet", expand_json=True, backend=backend)
    names = columns(frame)
    for json_column in analysis.JSON_COLUMNS:
        assert json_column not in names
    expected = ["args.batch", "args.lr", "args.optim.momentum", "args.optim.name",
                "env.HOME", "extras.gpu", "tags.best", "tags.fast"]
    assert [n for n in names if "." in n] == sorted(expected, key=lambda n: (
        analysis.JSON_COLUMNS.index(n.split(".")[0]), n))
    first, second = records(frame)
    assert (first["args.lr"], second["args.lr"]) == (0.1, 0.01)
    assert (first["args.optim.name"], second["args.optim.name"]) == ("sgd", None)
    assert (first["args.batch"], second["args.batch"]) == (None, 64)
    assert (first["tags.best"], second["tags.best"]) == (True, False)
    assert (first["tags.fast"], second["tags.fast"]) == (True, True)
    assert first["env.HOME"] == "/home/alice" and second["env.HOME"] is None
    assert first["extras.gpu"] == "A100"
    assert first["id"] == ids["first"]

    only_args = await analysis.runs_frame(client, "resnet", expand_json=["args"],
                                          backend=backend)
    names = columns(only_args)
    assert "tags" in names and "env" in names and "args" not in names
    assert names.index("args.batch") == list(analysis.RUN_COLUMNS).index("args")


async def test_runs_frame_mixed_json_types(client, backend):
    exp = await sqltrack.AsyncExperiment.create(client, name="mixed")
    one = await exp.get_run()
    await one.set_args({"size": 3})
    two = await exp.get_run()
    await two.set_args({"size": "large"})
    frame = await analysis.runs_frame(client, "mixed", expand_json=["args"], backend=backend)
    assert [r["args.size"] for r in records(frame)] == [3, "large"]


# -- metrics_frame ------------------------------------------------------------
async def test_metrics_frame_wide(client, backend):
    ids = await seed(client)
    frame = await analysis.metrics_frame(client, [ids["first"], ids["second"]], backend=backend)
    assert columns(frame) == ["run_id", "step", "progress", "epoch", "loss", "phase", "val_acc"]
    rows = records(frame)
    assert [(r["run_id"], r["step"]) for r in rows] == [
        (ids["first"], 0), (ids["first"], 1), (ids["first"], 2),
        (ids["second"], 0), (ids["second"], 1),
    ]
    assert rows[1]["loss"] == 0.5 and rows[1]["epoch"] == 1
    assert (rows[0]["val_acc"], rows[2]["val_acc"]) == (None, 0.5)
    assert rows[2]["progress"] == pytest.approx(2 / 3)
    assert is_nan(frame, "loss", 3)  # a NaN value stays NaN
    assert rows[3]["phase"] == "warmup" and rows[4]["phase"] is None
    assert rows[3]["epoch"] is None  # nullable integers in both libraries


async def test_metrics_frame_choice_and_order(client, backend):
    ids = await seed(client)
    frame = await analysis.metrics_frame(
        client, [ids["second"], ids["first"]], ["val_acc"], backend=backend
    )
    # rows without any chosen metric are left out; runs in the order given
    assert records(frame) == [
        {"run_id": ids["first"], "step": 2, "progress": pytest.approx(2 / 3), "val_acc": 0.5},
    ]
    single = await analysis.metrics_frame(client, ids["stray"], backend=backend)
    assert records(single) == [{"run_id": ids["stray"], "step": 0, "progress": 0.0,
                                "loss": 9.0}]
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        await analysis.metrics_frame(client, ids["first"], ["nope"], backend=backend)
    with pytest.raises(sqltrack.RunNotFound):
        await analysis.metrics_frame(client, [ids["first"], 424242], backend=backend)
    with pytest.raises(ValueError, match="unknown shape"):
        await analysis.metrics_frame(client, ids["first"], shape="tall", backend=backend)


async def test_metrics_frame_long(client, backend):
    ids = await seed(client)
    frame = await analysis.metrics_frame(
        client, [ids["first"]], ["loss", "epoch"], shape="long", backend=backend
    )
    assert columns(frame) == ["run_id", "step", "progress", "metric", "value"]
    rows = records(frame)
    assert [(r["step"], r["metric"], r["value"]) for r in rows] == [
        (0, "loss", 1.0), (0, "epoch", 0.0), (1, "loss", 0.5), (1, "epoch", 1.0),
        (2, "loss", pytest.approx(1 / 3)), (2, "epoch", 2.0),
    ]
    assert all(isinstance(r["value"], float) for r in rows)  # int + float -> float
    mixed = await analysis.metrics_frame(client, ids["second"], shape="long", backend=backend)
    values = [(r["step"], r["metric"], r["value"]) for r in records(mixed)]
    assert values[1:] == [(0, "phase", "warmup"), (1, "loss", 0.25)]
    assert values[0][:2] == (0, "loss") and is_nan(mixed, "value", 0)


# -- query_frame --------------------------------------------------------------
async def test_query_frame(client, backend):
    ids = await seed(client)
    mark = "?" if client.engine == "sqlite" else "%s"
    frame = await analysis.query_frame(
        client,
        f"SELECT run_id, COUNT(*) AS n, MAX(step) AS last FROM metrics "
        f"WHERE run_id IN ({mark}, {mark}) GROUP BY run_id ORDER BY run_id",
        [ids["first"], ids["second"]],
        backend=backend,
    )
    assert columns(frame) == ["run_id", "n", "last"]
    assert records(frame) == [
        {"run_id": ids["first"], "n": 3, "last": 2},
        {"run_id": ids["second"], "n": 2, "last": 1},
    ]
    empty = await analysis.query_frame(client, "SELECT id FROM runs WHERE id < 0",
                                       backend=backend)
    assert columns(empty) == ["id"] and records(empty) == []
    with pytest.raises(ValueError, match="duplicate column names"):
        await analysis.query_frame(client, "SELECT id, id FROM runs", backend=backend)


# -- sync twins, optional imports ----------------------------------------------
def test_sync_twins(client_kwargs):
    import sqltrack_sync
    from sqltrack_sync import analysis as sync_analysis

    client = sqltrack.Client(**client_kwargs)
    try:
        exp = sqltrack.Experiment(client, name="sync")
        run = exp.get_run()
        run.add_metrics({"loss": 0.5}, step=3)
        runs = sync_analysis.runs_frame(client, "sync", backend="polars")
        assert runs["id"].to_list() == [run.id]
        metrics = sqltrack_sync.metrics_frame(client, run.id)
        assert metrics.to_dict("records") == [
            {"run_id": run.id, "step": 3, "progress": 0.0, "loss": 0.5}
        ]
        sql = "SELECT COUNT(*) AS n FROM runs"
        assert sync_analysis.query_frame(client, sql)["n"].tolist() == [1]
    finally:
        client.close()


async def test_missing_library_names_the_extra(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "polars", None)  # import polars -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'sqltrack\[polars\]'"):
        await analysis.runs_frame(client, backend="polars")


def test_import_sqltrack_imports_no_dataframe_library():
    code = (
        "import sys, sqltrack, sqltrack.analysis, sqltrack_sync.analysis; "
        "print(sorted(m for m in ('pandas', 'polars', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
