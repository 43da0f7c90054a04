"""A tiny Lightning model trained on synthetic data, logged by SqltrackLogger.

Run (pip install -e '.[lightning]'; settings from SQLTRACK_DSN_* or ./sqltrack.conf):

    SQLTRACK_DSN_ENGINE=sqlite SQLTRACK_DSN_DBPATH=runs.db python examples/lightning_train.py
    sqltrack --engine sqlite --dbpath runs.db runs

The only sqltrack line is ``logger=SqltrackLogger(...)``. Options: --epochs,
--lr, --fail-at-step N (raise there: the run ends FAILED), --step-sleep S (slow
steps, to send SIGTERM meanwhile: the run gets --terminated, exit status 143),
--run-id (an id, or a variable such as SLURM_JOB_ID), --system-metrics SECONDS.

A requeued Slurm job: --run-id SLURM_JOB_ID --checkpoint-dir DIR saves a checkpoint
each epoch and, when DIR/last.ckpt exists (the job ran before), resumes from it; the
logger then rewinds the run to that checkpoint. --wait-at-step N stops at step N until
a signal ends the process (a pre-emption at a known point, for the tests).
"""

import argparse
import os
import tempfile
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from sqltrack.integrations.lightning import SqltrackLogger


class Regression(pl.LightningModule):
    def __init__(self, lr: float = 0.05, fail_at_step: int = -1, step_sleep: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.hparams["fail_at_step"]:
            raise RuntimeError(f"failing on purpose at step {self.global_step}")
        time.sleep(self.hparams["step_sleep"])
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log("lr-SGD", self.hparams["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


class WaitAt(pl.Callback):
    """Wait at ``step`` (before its batch) until a signal ends the process (at most ten
    minutes): a job pre-empted at a known point."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            print(f"waiting at step {self.step}", flush=True)
            for _ in range(12000):
                time.sleep(0.05)


def data(n: int, seed: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    return DataLoader(TensorDataset(x, y), batch_size=8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--fail-at-step", type=int, default=-1)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--terminated", default="CANCELLED")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--system-metrics", type=float, default=0)
    parser.add_argument("--experiment", default="lightning-example")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--wait-at-step", type=int, default=-1)
    args = parser.parse_args(argv)
    run_id = int(args.run_id) if args.run_id and args.run_id.isdigit() else args.run_id
    logger = SqltrackLogger(experiment=args.experiment, run_id=run_id,
                            terminated=args.terminated, system_metrics=args.system_metrics)
    callbacks: list[pl.Callback] = []
    ckpt_path = None
    if args.checkpoint_dir:
        callbacks.append(pl.callbacks.ModelCheckpoint(
            dirpath=args.checkpoint_dir, save_last=True, save_top_k=-1, every_n_epochs=1))
        last = os.path.join(args.checkpoint_dir, "last.ckpt")
        ckpt_path = last if os.path.exists(last) else None
    if args.wait_at_step >= 0:
        callbacks.append(WaitAt(args.wait_at_step))
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_epochs=args.epochs, logger=logger, log_every_n_steps=1, accelerator="cpu",
        devices=1, enable_progress_bar=False, enable_checkpointing=bool(args.checkpoint_dir),
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
        default_root_dir=tempfile.mkdtemp(prefix="lightning-example-"),
    )
    model = Regression(args.lr, args.fail_at_step, args.step_sleep)
    trainer.fit(model, data(32, 0), data(16, 1), ckpt_path=ckpt_path)
    print(f"run {logger.version} of experiment {logger.name!r}: done")


if __name__ == "__main__":
    main()
