"""The one mapping of framework metric names to columns, and IntegrationRun on both engines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.helpers import ROOT, json_value, read_raw

import sqltrack
from sqltrack.integrations.common import IntegrationRun, json_safe
from sqltrack.integrations.names import (
    EXTRAS_KEY,
    MetricNames,
    column_name,
)
from sqltrack.metrics.table import check_metric_name


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("train/loss", "train__loss"),
        ("lr-SGD", "lr_SGD"),
        ("val_acc_epoch", "val_acc_epoch"),
        ("eval/f1@5", "eval__f1_5"),
        ("5x", "_5x"),
        ("", "_"),
        ("step", "step_"),
        ("Progress", "Progress_"),
        ("δ loss", "__loss"),
    ],
)
def test_column_name(name, column):
    assert column_name(name) == column
    assert check_metric_name(column) == column


def test_long_names_keep_a_hash_of_the_original():
    a, b = "x" * 70 + "a", "x" * 70 + "b"
    assert len(column_name(a)) == 63 and check_metric_name(column_name(a))
    assert column_name(a) != column_name(b)
    # The same name gives the same column in every process (a resumed run finds its
    # columns): two fresh interpreters with different string hash seeds agree.
    code = ("import sys\nfrom sqltrack.integrations.names import column_name\n"
            "print(column_name(sys.argv[1]))\nprint(column_name(sys.argv[2]))\n")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    seen = []
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code, a, b], capture_output=True,
                              text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": path})
        assert done.returncode == 0, done.stderr
        seen.append(done.stdout.split())
    assert seen[0] == seen[1] == [column_name(a), column_name(b)], seen


def test_names_sharing_a_column_are_both_kept():
    """wandb accepts ``Loss`` and ``loss`` in one run: the later name gets a distinct
    column (its own hash), the mapping records both."""
    names = MetricNames()
    assert names.columns({"train/loss": 1.0}) == {"train__loss": 1.0}
    other = names.column("train__loss")
    upper = names.column("Train/Loss")  # SQLite column names ignore case
    assert other.startswith("train__loss_") and upper.startswith("Train__Loss_")
    assert len({c.lower() for c in ("train__loss", other, upper)}) == 3
    assert check_metric_name(other) == other and check_metric_name(upper) == upper
    assert names.column("train__loss") == other  # stable within the run
    assert names.originals == {"train__loss": "train/loss", other: "train__loss",
                               upper: "Train/Loss"}
    # the same names in a fresh mapping in the same order get the same columns
    again = MetricNames()
    assert [again.column(n) for n in ("train/loss", "train__loss", "Train/Loss")] == [
        "train__loss", other, upper]
    long_a, long_b = "y" * 70, "Y" * 70
    kept = MetricNames().columns({long_a: 1, long_b: 2})
    assert len(kept) == 2 and all(len(c) <= 63 for c in kept)


def test_names_recorded_before_keep_their_columns():
    names = MetricNames({"a__b": "a/b"})
    assert names.column("a/b") == "a__b" and not names.changed
    assert names.column("a__b") not in ("a__b",) and names.changed


def test_json_safe():
    import argparse
    import enum

    class Color(enum.Enum):
        red = "r"

    got = json_safe({"ns": argparse.Namespace(lr=0.1), "t": (1, 2), "nan": float("nan"),
                     "c": Color.red, 3: {"deep": {1, }}, "o": object, "s": "a\x00b"})
    assert got["ns"] == {"lr": 0.1} and got["t"] == [1, 2] and got["nan"] == "nan"
    assert got["c"] == "r" and got["3"] == {"deep": [1]} and got["s"] == "a\\x00b"
    assert got["o"] == str(object)


def test_integration_run_records_original_names(client_kwargs):
    client = sqltrack.Client(**client_kwargs)
    try:
        tracked = IntegrationRun(client, "names", buffered=True)
        tracked.start()
        tracked.add_args({"lr": 0.1, "nested": {"depth": 2}})
        tracked.log({"train/loss": 0.5, "lr-SGD": 1, "skip": object()}, step=1, progress=0.5)
        tracked.log({"train/loss": 0.25, "eval/f1@5": True}, step=2, progress=1.0)
        tracked.log({"train__loss": 1.0, "Train/Loss": 2.0}, step=3)
        tracked.stop("COMPLETED")
        run_id = tracked.run.id
    finally:
        client.close()
    rows = read_raw(client_kwargs, "SELECT step, progress, train__loss, \"lr_SGD\", eval__f1_5 "
                    "FROM metrics WHERE run_id = %s ORDER BY step", [run_id])
    assert [tuple(r[:3]) for r in rows] == [(1, 0.5, 0.5), (2, 1.0, 0.25), (3, 0.0, None)]
    assert rows[0][3] == 1.0 and bool(rows[1][4]) is True
    status, args, extras = read_raw(
        client_kwargs, "SELECT status, args, extras FROM runs WHERE id = %s", [run_id])[0]
    assert status == "COMPLETED"
    assert json_value(args) == {"lr": 0.1, "nested": {"depth": 2}}
    mapping = json_value(extras)[EXTRAS_KEY]
    by_name = {original: column for column, original in mapping.items()}
    assert set(by_name) == {"train/loss", "lr-SGD", "eval/f1@5", "train__loss", "Train/Loss"}
    assert by_name["train/loss"] == "train__loss" and by_name["lr-SGD"] == "lr_SGD"
    kept = read_raw(client_kwargs, f'SELECT "{by_name["train__loss"]}", '
                    f'"{by_name["Train/Loss"]}" FROM metrics WHERE run_id = %s AND step = 3',
                    [run_id])
    assert [tuple(r) for r in kept] == [(1.0, 2.0)]


def test_integration_run_resumed_keeps_names(client_kwargs, monkeypatch):
    """A requeued job (run_id="SLURM_JOB_ID") continues its run and its name mapping."""
    client = sqltrack.Client(**client_kwargs)
    try:
        first = IntegrationRun(client, "resume")
        first.start()
        first.log({"a/b": 1.0}, step=1)
        first.stop("REQUEUED")
        monkeypatch.setenv("SLURM_JOB_ID", str(first.run.id))
        second = IntegrationRun(client, "resume", run_id="SLURM_JOB_ID")
        second.start()
        second.log({"c/d": 3.0}, step=2)
        second.stop("COMPLETED")
        assert second.run.id == first.run.id
    finally:
        client.close()
    extras = read_raw(client_kwargs, "SELECT extras FROM runs WHERE id = %s", [first.run.id])
    assert json_value(extras[0][0])[EXTRAS_KEY] == {"a__b": "a/b", "c__d": "c/d"}


def test_import_sqltrack_imports_no_framework():
    code = (
        "import sys, sqltrack, sqltrack_sync, sqltrack.integrations, sqltrack.wandb\n"
        "import sqltrack.integrations.names, sqltrack.model.system_metrics\n"
        "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'transformers', "
        "'psutil', 'pynvml', 'numpy') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_integration_run_pickles_without_its_client(client_kwargs):
    """Lightning's ddp_spawn pickles loggers: the copy opens its own client (from the
    usual chain) and continues the same run."""
    import pickle

    client = sqltrack.Client(**client_kwargs)
    try:
        tracked = IntegrationRun(client, "pickled", settings=client_kwargs)
        tracked.start()
        tracked.log({"a/b": 1.0}, step=0)
        copy = pickle.loads(pickle.dumps(tracked))
        assert copy.client is None and copy.run_id == tracked.run_id
        copy.log({"a/b": 2.0}, step=1)
        copy.stop("COMPLETED")  # and closes the client it made
        tracked.stop("COMPLETED")
    finally:
        client.close()
    assert read_raw(client_kwargs, "SELECT step, a__b FROM metrics ORDER BY step") == [
        (0, 1.0), (1, 2.0)]
    assert read_raw(client_kwargs, "SELECT status FROM runs") == [("COMPLETED",)]


def test_per_rank_names(monkeypatch):
    """``<name>/rank<r>`` for the integrations, its column for plain ``add_metrics``."""
    from sqltrack.integrations.distributed import per_rank
    from sqltrack.integrations.names import rank_name

    assert rank_name("throughput", 1) == "throughput/rank1"
    assert column_name(rank_name("eval/acc", 12)) == "eval__acc__rank12"
    assert per_rank({"throughput": 9.5, "eval/acc": 1}, rank=3) == {
        "throughput__rank3": 9.5, "eval__acc__rank3": 1}
    monkeypatch.setenv("RANK", "5")  # no process group here: the rank from RANK
    assert per_rank({"loss": 0.5}) == {"loss__rank5": 0.5}


def test_ranked_metrics_of_rank_zero_and_the_others():
    """What each rank stores (shared by the Lightning logger and the wandb-style module):
    rank zero everything, per-rank names renamed, and every rank's names recorded; the
    other ranks only their per-rank names; one str is one name, not its letters."""
    from sqltrack.integrations.distributed import per_rank_patterns, ranked
    from sqltrack.integrations.names import MetricNames

    patterns = per_rank_patterns(["tp", "eval/*"])
    names = MetricNames()
    metrics = {"loss": 1.0, "tp": 2.0, "eval/acc": 3.0}
    assert ranked(metrics, patterns, 0, 3, names) == {
        "loss": 1.0, "tp/rank0": 2.0, "eval/acc/rank0": 3.0}
    assert set(names.originals) == {f"{c}__rank{r}" for c in ("tp", "eval__acc")
                                    for r in range(3)}
    assert ranked(metrics, patterns, 2) == {"tp/rank2": 2.0, "eval/acc/rank2": 3.0}
    assert ranked(metrics, (), 1) == {}
    assert ranked(metrics, True, 1) == {f"{k}/rank1": v for k, v in metrics.items()}
    assert ranked(metrics, per_rank_patterns("loss"), 5, lead=True) == {
        "loss/rank5": 1.0, "tp": 2.0, "eval/acc": 3.0}
    assert per_rank_patterns("loss") == ("loss",) and per_rank_patterns(False) is False
