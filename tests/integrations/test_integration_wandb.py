"""The wandb-style module (``import sqltrack.wandb as wandb``), both engines."""

from __future__ import annotations

import argparse
import signal

import pytest
from support.helpers import json_value, read_raw
from support.integration_helpers import run_example, sigterm_after_rows

import sqltrack
import sqltrack.wandb as wandb


@pytest.fixture(autouse=True)
def restore_sigterm():
    """A started run makes SIGTERM raise sqltrack.Terminated; the test runner's handler
    comes back afterwards."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


@pytest.fixture
def client(client_kwargs):
    c = sqltrack.Client(**client_kwargs)
    yield c
    if wandb.run is not None:
        wandb.finish()
    c.close()


def metric_rows(client_kwargs, run_id, columns: str):
    return read_raw(client_kwargs, f"SELECT step, {columns} FROM metrics WHERE run_id = %s "
                    "ORDER BY step", [run_id])


def test_a_wandb_script(client, client_kwargs):
    run = wandb.init(project="mnist", name="baseline", config=argparse.Namespace(lr=0.1),
                     tags=["cnn", "small"], notes="first try", client=client, group="g1")
    assert wandb.run is run and wandb.config is run.config and run.project == "mnist"
    for i in range(3):
        wandb.log({"train/loss": 1.0 / (i + 1), "nested": {"acc": 0.5}})
    wandb.config.update({"epochs": 3})
    wandb.config.batch = 32
    assert wandb.config.lr == 0.1 and wandb.config["epochs"] == 3
    wandb.summary["best"] = 0.97
    run_id = run.id
    wandb.finish()
    assert wandb.run is None
    name, status, args, tags, comment, extras = read_raw(
        client_kwargs, "SELECT e.name, r.status, r.args, r.tags, r.comment, r.extras FROM runs r "
        "JOIN experiments e ON e.id = r.experiment_id WHERE r.id = %s", [run_id])[0]
    assert (name, status, comment) == ("mnist", "COMPLETED", "first try")
    assert json_value(args) == {"lr": 0.1, "epochs": 3, "batch": 32}
    assert json_value(tags) == {"cnn": True, "small": True}
    extras = json_value(extras)
    assert extras["name"] == "baseline" and extras["group"] == "g1"
    assert extras["metric_names"] == {"train__loss": "train/loss", "nested__acc": "nested/acc"}
    assert extras["summary"] == {"train/loss": 1 / 3, "nested/acc": 0.5, "best": 0.97}
    assert metric_rows(client_kwargs, run_id, "progress, train__loss") == [
        (0, 0.0, 1.0), (1, 0.0, 0.5), (2, 0.0, 1 / 3)]


def test_step_rules(client, client_kwargs):
    """wandb's rules: commit=False merges, step= merges until a later step or commit."""
    run = wandb.init(project="steps", client=client)
    wandb.log({"a": 1})                     # step 0, committed
    wandb.log({"b": 2}, commit=False)       # step 1, pending
    wandb.log({"c": 3})                     # step 1 with b, committed
    wandb.log({"a": 4}, step=5)             # step 5, pending
    wandb.log({"b": 5}, step=5)             # merged into 5
    wandb.log({"c": 6}, step=7)             # 5 written; 7 pending
    wandb.log({"a": 7}, step=3)             # below the current step: dropped
    wandb.log({"b": 8}, step=7, commit=True)  # 7 written, the next step is 8
    wandb.log({"a": 9}, commit=False)       # 8 pending, written by finish
    run_id = run.id
    wandb.finish()
    assert metric_rows(client_kwargs, run_id, "a, b, c") == [
        (0, 1.0, None, None), (1, None, 2.0, 3.0), (5, 4.0, 5.0, None),
        (7, None, 8.0, 6.0), (8, 9.0, None, None)]


def test_finish_exit_code_and_context_manager(client, client_kwargs):
    failed = wandb.init(project="codes", client=client)
    wandb.log({"x": 1})
    wandb.finish(exit_code=2)
    with pytest.raises(ZeroDivisionError):
        with wandb.init(project="codes", client=client) as raised:
            wandb.log({"x": 1 / 0})
    with wandb.init(project="codes", client=client) as fine:
        wandb.log({"x": 1})
    statuses = dict(read_raw(client_kwargs, "SELECT id, status FROM runs"))
    assert statuses == {failed.id: "FAILED", raised.id: "FAILED", fine.id: "COMPLETED"}


def test_resume_continues_the_run(client, client_kwargs, monkeypatch):
    first = wandb.init(project="resume", client=client)
    wandb.log({"loss": 1.0})
    wandb.finish()
    with pytest.raises(ValueError, match="no run '999'"):
        wandb.init(project="resume", id="999", resume="must", client=client)
    with pytest.raises(ValueError, match="no run '99999999999999999999'"):  # beyond bigint
        wandb.init(project="resume", id="99999999999999999999", resume="must", client=client)
    with pytest.raises(ValueError, match="exists already"):
        wandb.init(project="resume", id=first.id, resume="never", client=client)
    monkeypatch.setenv("SLURM_JOB_ID", str(first.id))
    again = wandb.init(project="resume", id="SLURM_JOB_ID", resume="must", client=client)
    assert again.id == first.id
    wandb.log({"loss": 0.5}, step=1)
    wandb.finish()
    assert read_raw(client_kwargs, "SELECT id FROM runs") == [(first.id,)]
    assert metric_rows(client_kwargs, first.id, "loss") == [(0, 1.0), (1, 0.5)]


def test_not_scalars_are_skipped(client, client_kwargs):
    run = wandb.init(project="media", client=client)
    wandb.log({"image": object(), "loss": 0.5})
    run_id = run.id
    wandb.finish()
    assert metric_rows(client_kwargs, run_id, "loss") == [(0, 0.5)]


def test_log_before_init_is_an_error():
    with pytest.raises(RuntimeError, match="init"):
        wandb.log({"x": 1})


def test_example_script(client_kwargs):
    out = run_example("wandb_style.py", client_kwargs, "--steps", "4")
    assert out.returncode == 0, out.stderr
    (run_id, status, args, extras), = read_raw(client_kwargs,
                                               "SELECT id, status, args, extras FROM runs")
    assert status == "COMPLETED" and f"run {run_id}: done" in out.stdout
    assert json_value(args)["steps"] == 4 and json_value(args)["optimizer"] == "sgd"
    assert json_value(extras)["metric_names"]["train__acc_1"] == "train/acc@1"
    assert [s for s, _ in metric_rows(client_kwargs, run_id, "train__loss")] == [0, 1, 2, 3]


def test_example_script_without_finish_and_crashing(client_kwargs):
    """No finish(): the run is stopped at exit, COMPLETED; a crash: FAILED, rows kept."""
    assert run_example("wandb_style.py", client_kwargs, "--steps", "2", "--no-finish"
                       ).returncode == 0
    crashed = run_example("wandb_style.py", client_kwargs, "--fail-at-step", "2")
    assert crashed.returncode == 1 and "on purpose" in crashed.stderr
    rows = read_raw(client_kwargs, "SELECT id, status, extras FROM runs ORDER BY id")
    assert [r[1] for r in rows] == ["COMPLETED", "FAILED"]
    assert "best_loss" in json_value(rows[0][2])["summary"]  # written at exit
    assert [s for s, _ in metric_rows(client_kwargs, rows[1][0], "train__loss")] == [0, 1]


def test_example_script_sigterm(client_kwargs):
    status, err = sigterm_after_rows("wandb_style.py", client_kwargs, 3, "--steps", "2000",
                                     "--step-sleep", "0.02", "--terminated", "PREEMPTED")
    assert status == 143, err
    assert read_raw(client_kwargs, "SELECT status FROM runs") == [("PREEMPTED",)]
