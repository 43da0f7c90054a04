"""sqltrack.export as a library: export_runs on both engines (the CLI's export calls it)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from sqltrack import export
from sqltrack.errors import RunNotFound


async def _logged(run, steps: int = 3):
    for step in range(steps):
        await run.add_metrics({"loss": 1.0 / (step + 1), "ok": step % 2 == 0}, step=step)
    return run


async def test_export_runs_csv_jsonl_parquet(client, run, tmp_path):
    await _logged(run)
    rows = await export.export_runs(client, [run.id, run.id], tmp_path / "a.csv")
    assert rows == 3
    with (tmp_path / "a.csv").open(newline="") as f:
        records = list(csv.DictReader(f))
    assert list(records[0]) == ["run_id", "step", "progress", "loss", "ok"]
    assert [(r["step"], r["loss"], r["ok"]) for r in records] == [
        ("0", "1.0", "True"), ("1", "0.5", "False"), ("2", str(1 / 3), "True")
    ]

    assert await export.export_runs(client, run.id, str(tmp_path / "a.jsonl")) == 3
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {"run_id": run.id, "step": 1, "progress": 0.0,
                                    "loss": 0.5, "ok": False}

    import pyarrow.parquet as pq

    assert await export.export_runs(client, [run.id], tmp_path / "a.out", format="parquet") == 3
    table = pq.read_table(tmp_path / "a.out")
    assert table.column("loss").to_pylist() == [1.0, 0.5, 1 / 3]
    assert not list(tmp_path.glob("*.partial"))


async def test_export_runs_progress_lines(client, run, tmp_path, monkeypatch):
    await _logged(run, steps=5)
    monkeypatch.setattr(export, "PROGRESS_EVERY", 2)
    monkeypatch.setattr("sqltrack.read.queries.METRIC_PAGE", 2)  # pages of 2 rows: 2, 2, 1
    progress = io.StringIO()
    assert await export.export_runs(client, [run.id], tmp_path / "p.csv", progress=progress) == 5
    assert progress.getvalue().splitlines() == ["exported 2 rows ...", "exported 4 rows ..."]


async def test_export_runs_errors_write_nothing(client, run, tmp_path):
    await _logged(run)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "x.csv"
    with pytest.raises(RunNotFound) as caught:
        await export.export_runs(client, [run.id, 987654], target)
    assert caught.value.run_id == 987654
    with pytest.raises(FileNotFoundError, match="does not exist"):
        await export.export_runs(client, [run.id], out / "nowhere" / "x.csv")
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        await export.export_runs(client, [run.id], target, format="xml")
    with pytest.raises(TypeError, match="run ids must be integers"):
        await export.export_runs(client, ["1"], target)  # type: ignore[list-item]
    assert list(out.iterdir()) == []


def test_export_format_from_extension():
    assert export.export_format(None, "a.JSONL") == "jsonl"
    assert export.export_format(None, "a.parquet") == "parquet"
    assert export.export_format(None, "a.txt") == "csv"
    assert export.export_format("csv", "a.parquet") == "csv"


def test_blocking_twin(client_kwargs, tmp_path):
    """``sqltrack_sync.export_runs`` (generated) runs the same export for a blocking Client."""
    import sqltrack
    import sqltrack_sync

    client = sqltrack.Client(**client_kwargs)
    try:
        run = sqltrack.Experiment(client, name="blocking-export").get_run()
        for step in range(2):
            run.add_metrics({"loss": float(step)}, step=step)
        target = tmp_path / "b.jsonl"
        assert sqltrack_sync.export_runs(client, [run.id], target) == 2
        assert [json.loads(line)["loss"] for line in target.read_text().splitlines()] == [0.0, 1.0]
        with pytest.raises(RunNotFound):
            sqltrack_sync.export.export_runs(client, [run.id + 1000], tmp_path / "c.csv")
    finally:
        client.close()
