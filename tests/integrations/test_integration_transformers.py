"""SqltrackCallback with a real Transformers Trainer on CPU (tiny random BERT, synthetic data)."""

from __future__ import annotations

import os
import signal
import sys

import pytest
from support.helpers import json_value, read_raw
from support.integration_helpers import EXAMPLES, run_example, sigterm_after_rows

import sqltrack

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing comes from a hub
from transformers import Trainer  # noqa: E402

sys.path.insert(0, str(EXAMPLES))
import transformers_train as example  # noqa: E402 - the example is the model under test


@pytest.fixture(autouse=True)
def restore_sigterm():
    """A started callback makes SIGTERM raise sqltrack.Terminated; the test runner's
    handler comes back afterwards."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def make_trainer(callback, tmp_path, fail_at_step: int = -1, epochs: float = 2) -> Trainer:
    return Trainer(
        model=example.tiny_model(), args=example.training_args(str(tmp_path), epochs),
        train_dataset=example.Synthetic(32, 0), eval_dataset=example.Synthetic(16, 1),
        callbacks=[callback, example.Pace(0.0, fail_at_step)],
    )


def test_train_two_epochs(client_kwargs, tmp_path):
    from sqltrack.integrations.transformers import SqltrackCallback

    client = sqltrack.Client(**client_kwargs)
    try:
        callback = SqltrackCallback(client, experiment="hf", comment="tiny bert")
        make_trainer(callback, tmp_path).train()
        run_id = callback.run_id
    finally:
        client.close()
    status, args, extras, comment = read_raw(
        client_kwargs, "SELECT status, args, extras, comment FROM runs WHERE id = %s",
        [run_id])[0]
    assert status == "COMPLETED" and comment == "tiny bert"
    args = json_value(args)
    assert args["learning_rate"] == 1e-3 and args["num_train_epochs"] == 2
    assert args["per_device_train_batch_size"] == 8 and args["output_dir"] == str(tmp_path)
    assert args["model_config"]["hidden_size"] == 16
    assert args["model_config"]["num_hidden_layers"] == 1
    names = json_value(extras)["metric_names"]
    assert {"loss", "learning_rate", "grad_norm", "epoch", "eval_loss", "train_loss"} <= set(names)
    rows = read_raw(client_kwargs, "SELECT step, progress, epoch, loss, eval_loss, train_loss "
                    "FROM metrics WHERE run_id = %s ORDER BY step", [run_id])
    # 32 examples / batch 8 = 4 steps an epoch, 2 epochs; progress = step / 8
    assert [(r[0], r[1], r[2]) for r in rows] == [(s, s / 8, s / 4) for s in range(1, 9)]
    assert all(r[3] > 0 for r in rows)
    assert [r[0] for r in rows if r[4] is not None] == [4, 8]  # eval each epoch
    assert [r[0] for r in rows if r[5] is not None] == [8]  # the final summary log


def test_crash_during_train_is_failed(client_kwargs, tmp_path):
    from sqltrack.integrations.transformers import SqltrackCallback

    client = sqltrack.Client(**client_kwargs)
    try:
        callback = SqltrackCallback(client, experiment="hf")
        with pytest.raises(RuntimeError, match="on purpose at step 3"):
            make_trainer(callback, tmp_path, fail_at_step=3).train()
        run_id = callback.run_id
    finally:
        client.close()
    assert read_raw(client_kwargs, "SELECT status FROM runs WHERE id = %s", [run_id]) == [
        ("FAILED",)]
    steps = read_raw(client_kwargs, "SELECT step FROM metrics WHERE run_id = %s ORDER BY step",
                     [run_id])
    assert [s for (s,) in steps] == [1, 2]  # the crash came before step 3 was logged


def test_callback_added_later_is_watched(client_kwargs, tmp_path):
    from sqltrack.integrations.transformers import SqltrackCallback

    client = sqltrack.Client(**client_kwargs)
    try:
        trainer = make_trainer(example.Pace(0.0, -1), tmp_path, fail_at_step=2)
        callback = SqltrackCallback(client, experiment="hf")
        trainer.add_callback(callback)
        callback.watch(trainer)
        with pytest.raises(RuntimeError):
            trainer.train()
        run_id = callback.run_id
    finally:
        client.close()
    assert read_raw(client_kwargs, "SELECT status FROM runs WHERE id = %s", [run_id]) == [
        ("FAILED",)]


def test_example_runs(client_kwargs):
    out = run_example("transformers_train.py", client_kwargs, "--epochs", "1")
    assert out.returncode == 0, out.stderr
    rows = read_raw(client_kwargs, "SELECT id, status FROM runs")
    assert len(rows) == 1 and rows[0][1] == "COMPLETED"
    assert f"run {rows[0][0]}: done" in out.stdout


def test_sigterm_mid_training(client_kwargs):
    """SIGTERM while the Trainer trains (a pre-empted job): the run gets the
    ``terminated`` status, its metrics are written, the process exits with 143."""
    status, err = sigterm_after_rows("transformers_train.py", client_kwargs, 3, "--epochs", "50",
                                     "--step-sleep", "0.05", "--terminated", "PREEMPTED")
    assert status == 143, err
    assert read_raw(client_kwargs, "SELECT status FROM runs") == [("PREEMPTED",)]
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM metrics")[0][0] >= 3


def test_only_world_process_zero_writes(client_kwargs, tmp_path, monkeypatch):
    from sqltrack.integrations.transformers import SqltrackCallback

    client = sqltrack.Client(**client_kwargs)
    try:
        callback = SqltrackCallback(client, experiment="hf")
        trainer = make_trainer(callback, tmp_path, epochs=1)
        monkeypatch.setattr(Trainer, "is_world_process_zero", lambda self: False)
        trainer.train()
        assert callback.run_id is None
        assert client.execute("SELECT COUNT(*) FROM runs") == [(0,)]
    finally:
        client.close()
