"""SqltrackLogger with a real Lightning Trainer on CPU (tiny model, synthetic data)."""

from __future__ import annotations

import dataclasses
import pickle
import signal
import sys

import lightning.pytorch as pl
import pytest
from support.helpers import json_value, read_raw
from support.integration_helpers import EXAMPLES, run_example, sigterm_after_rows

import sqltrack

sys.path.insert(0, str(EXAMPLES))
import lightning_train  # noqa: E402 - the example is the model under test


@pytest.fixture(autouse=True)
def restore_sigterm():
    """A started logger makes SIGTERM raise sqltrack.Terminated; the test runner's
    handler comes back afterwards."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def trainer(logger, tmp_path, epochs: int = 2):
    return pl.Trainer(
        max_epochs=epochs, logger=logger, log_every_n_steps=1, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=str(tmp_path),
    )


def the_run(client_kwargs, run_id):
    return read_raw(client_kwargs, "SELECT status, args, extras, experiment_id FROM runs "
                    "WHERE id = %s", [run_id])[0]


def test_fit_two_epochs(client_kwargs, tmp_path):
    from sqltrack.integrations.lightning import SqltrackLogger

    client = sqltrack.Client(**client_kwargs)
    try:
        logger = SqltrackLogger(client, experiment="lightning", tags=["tiny"])
        trainer(logger, tmp_path).fit(lightning_train.Regression(lr=0.05),
                                      lightning_train.data(32, 0), lightning_train.data(16, 1))
        run_id = logger.version
        assert logger.name == "lightning"
        assert pickle.loads(pickle.dumps(logger)).version == run_id  # ddp_spawn pickles it
    finally:
        client.close()
    status, args, extras, _ = the_run(client_kwargs, run_id)
    assert status == "COMPLETED"
    assert json_value(args) == {"lr": 0.05, "fail_at_step": -1, "step_sleep": 0.0}
    assert json_value(extras)["metric_names"] == {
        "train__loss_step": "train/loss_step", "train__loss_epoch": "train/loss_epoch",
        "val__loss": "val/loss", "lr_SGD": "lr-SGD", "epoch": "epoch"}
    rows = read_raw(client_kwargs, "SELECT step, progress, epoch, train__loss_step, val__loss, "
                    "train__loss_epoch FROM metrics WHERE run_id = %s ORDER BY step", [run_id])
    # 32 samples / batch 8 = 4 steps an epoch, 2 epochs: steps 0..7, progress step / 8
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (s, s / 8, float(s // 4)) for s in range(8)]
    assert all(r[3] > 0 for r in rows)
    assert [r[0] for r in rows if r[4] is not None] == [3, 7]  # validation each epoch end
    assert [r[0] for r in rows if r[5] is not None] == [3, 7]
    tags = read_raw(client_kwargs, "SELECT tags FROM runs WHERE id = %s", [run_id])[0][0]
    assert json_value(tags) == {"tiny": True}


def test_failing_training_is_failed(client_kwargs, tmp_path):
    from sqltrack.integrations.lightning import SqltrackLogger

    client = sqltrack.Client(**client_kwargs)
    try:
        logger = SqltrackLogger(client, experiment="lightning")
        with pytest.raises(RuntimeError, match="on purpose at step 5"):
            trainer(logger, tmp_path).fit(lightning_train.Regression(fail_at_step=5),
                                          lightning_train.data(32, 0))
        run_id = logger.version
    finally:
        client.close()
    assert the_run(client_kwargs, run_id)[0] == "FAILED"
    steps = read_raw(client_kwargs, "SELECT step FROM metrics WHERE run_id = %s ORDER BY step",
                     [run_id])
    assert [s for (s,) in steps] == [0, 1, 2, 3, 4]  # everything logged before the failure


def test_pytorch_lightning_namespace(client_kwargs, tmp_path):
    """The logger for the ``pytorch_lightning`` package, with its own Trainer."""
    import pytorch_lightning as ptl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from sqltrack.integrations.pytorch_lightning import SqltrackLogger

    class Tiny(ptl.LightningModule):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters({"width": 2})
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    client = sqltrack.Client(**client_kwargs)
    try:
        logger = SqltrackLogger(client, experiment="ptl")
        ptl.Trainer(max_steps=3, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                    enable_checkpointing=False, enable_model_summary=False,
                    default_root_dir=str(tmp_path)).fit(
            Tiny(), DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=4))
        run_id = logger.version
    finally:
        client.close()
    status, args, _, _ = the_run(client_kwargs, run_id)
    assert status == "COMPLETED" and json_value(args) == {"width": 2}
    rows = read_raw(client_kwargs, "SELECT step, progress FROM metrics WHERE run_id = %s "
                    "AND train__loss IS NOT NULL ORDER BY step", [run_id])
    assert rows == [(0, 0.0), (1, 1 / 3), (2, 2 / 3)]


def test_example_runs(client_kwargs):
    """examples/lightning_train.py as a user runs it: settings from SQLTRACK_DSN_*."""
    out = run_example("lightning_train.py", client_kwargs, "--epochs", "1")
    assert out.returncode == 0, out.stderr
    rows = read_raw(client_kwargs, "SELECT r.id, r.status FROM runs r JOIN experiments e "
                    "ON e.id = r.experiment_id WHERE e.name = 'lightning-example'")
    assert len(rows) == 1 and rows[0][1] == "COMPLETED"
    assert f"run {rows[0][0]} of experiment 'lightning-example': done" in out.stdout


def test_sigterm_mid_training(client_kwargs):
    """SIGTERM while the Trainer trains (a pre-empted job): the run gets the
    ``terminated`` status, its metrics are written, the process exits with 143."""
    status, err = sigterm_after_rows("lightning_train.py", client_kwargs, 3, "--epochs", "50",
                                     "--step-sleep", "0.05", "--terminated", "PREEMPTED")
    assert status == 143, err
    assert read_raw(client_kwargs, "SELECT status FROM runs") == [("PREEMPTED",)]
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM metrics")[0][0] >= 3


@dataclasses.dataclass
class Optim:
    name: str = "sgd"
    betas: tuple = (0.9, 0.99)


class Configured(lightning_train.Regression):
    """Hyperparameters given as a nested config."""

    def __init__(self, optim: Optim, schedule: dict):
        super().__init__()
        self.save_hyperparameters()


def test_nested_hyperparameters_and_requeue(client_kwargs, tmp_path, monkeypatch):
    """Nested configs become JSON args; a requeued job (same SLURM_JOB_ID) continues
    its run: the second fit writes into the first run."""
    from sqltrack.integrations.lightning import SqltrackLogger

    client = sqltrack.Client(**client_kwargs)
    try:
        first = SqltrackLogger(client, experiment="requeue", run_id="SLURM_JOB_ID")
        model = Configured(Optim(), {"warmup": 2, "decay": float("inf")})
        trainer(first, tmp_path, epochs=1).fit(model, lightning_train.data(32, 0))
        monkeypatch.setenv("SLURM_JOB_ID", str(first.version))
        second = SqltrackLogger(client, experiment="requeue", run_id="SLURM_JOB_ID")
        trainer(second, tmp_path, epochs=1).fit(model, lightning_train.data(32, 0))
        assert second.version == first.version
    finally:
        client.close()
    status, args, _, _ = the_run(client_kwargs, first.version)
    assert status == "COMPLETED"
    args = json_value(args)
    assert args["optim"] == {"name": "sgd", "betas": [0.9, 0.99]}
    assert args["schedule"] == {"warmup": 2, "decay": "inf"}
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM runs") == [(1,)]


def test_only_rank_zero_writes(client_kwargs, tmp_path, monkeypatch):
    """On another rank of a DDP job the logger writes nothing (no run is made)."""
    from lightning.pytorch.utilities import rank_zero_only

    from sqltrack.integrations.lightning import SqltrackLogger

    client = sqltrack.Client(**client_kwargs)
    try:
        logger = SqltrackLogger(client, experiment="ranks")
        monkeypatch.setattr(rank_zero_only, "rank", 1)
        logger.log_hyperparams({"lr": 1})
        logger.log_metrics({"loss": 1.0}, step=0)
        logger.finalize("success")
        assert logger.version is None
        assert client.execute("SELECT COUNT(*) FROM runs") == [(0,)]
    finally:
        client.close()


@pytest.mark.parametrize("given_save_dir", [False, True])
def test_log_dir_and_checkpoints_where_documented(client_kwargs, tmp_path, given_save_dir):
    """``log_dir`` is ``<save_dir>/<experiment>/version_<run id>`` (save_dir: given, else the
    trainer's default_root_dir) and the checkpoints are in its ``checkpoints`` folder."""
    from sqltrack.integrations.lightning import SqltrackLogger

    root = tmp_path / "root"
    save_dir = tmp_path / "saved" if given_save_dir else root
    client = sqltrack.Client(**client_kwargs)
    try:
        logger = SqltrackLogger(client, experiment="paths", quiet=True,
                                save_dir=save_dir if given_save_dir else None)
        fit = pl.Trainer(max_epochs=1, logger=logger, log_every_n_steps=1, accelerator="cpu",
                         devices=1, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=str(root))
        fit.fit(lightning_train.Regression(lr=0.05), lightning_train.data(32, 0),
                lightning_train.data(16, 1))
        run_id = logger.version
        expected = save_dir / "paths" / f"version_{run_id}"
        assert logger.save_dir == str(save_dir) and fit.log_dir == str(save_dir)
        assert logger.root_dir == str(save_dir / "paths")
        assert logger.log_dir == str(expected)
        checkpoints = list((expected / "checkpoints").glob("*.ckpt"))
        assert len(checkpoints) == 1, list(tmp_path.rglob("*.ckpt"))
        assert fit.checkpoint_callback.dirpath == str(expected / "checkpoints")
    finally:
        client.close()
