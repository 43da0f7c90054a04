"""A tiny randomly initialised BERT trained on synthetic data, logged by SqltrackCallback.

Run (pip install -e '.[transformers]'; settings from SQLTRACK_DSN_* or ./sqltrack.conf):

    SQLTRACK_DSN_ENGINE=sqlite SQLTRACK_DSN_DBPATH=runs.db python examples/transformers_train.py
    sqltrack --engine sqlite --dbpath runs.db runs

The only sqltrack line is ``callbacks=[SqltrackCallback(...)]``; nothing is
downloaded (the model is built from a config). Options: --epochs, --fail-at-step
N (a crash there: the run ends FAILED), --step-sleep S (slow steps, to send
SIGTERM meanwhile: the run gets --terminated, exit status 143).
"""

import argparse
import os
import tempfile
import time
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from sqltrack.integrations.transformers import SqltrackCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Synthetic(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Token sequences whose label is whether token 1 occurs in them."""

    def __init__(self, n: int, seed: int, length: int = 8) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, 30, (n, length), generator=generator)
        self.ids[: n // 2, 0] = 1
        self.labels = (self.ids == 1).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.labels[i]}


class Pace(TrainerCallback):
    """Slows steps down (--step-sleep) or crashes at one (--fail-at-step)."""

    def __init__(self, sleep: float, fail_at_step: int) -> None:
        self.sleep, self.fail_at_step = sleep, fail_at_step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if state.global_step == self.fail_at_step:
            raise RuntimeError(f"failing on purpose at step {state.global_step}")
        time.sleep(self.sleep)


def tiny_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16,
                        num_labels=2)  # type: ignore[call-arg]  # a PretrainedConfig kwarg
    return BertForSequenceClassification(config)


def training_args(output_dir: str, epochs: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=8,
        per_device_eval_batch_size=16, learning_rate=1e-3, logging_steps=1,
        eval_strategy="epoch", save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True, dataloader_num_workers=0, seed=0,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--fail-at-step", type=int, default=-1)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--terminated", default="CANCELLED")
    parser.add_argument("--system-metrics", type=float, default=0)
    parser.add_argument("--experiment", default="transformers-example")
    args = parser.parse_args(argv)
    callback = SqltrackCallback(experiment=args.experiment, terminated=args.terminated,
                                system_metrics=args.system_metrics)
    trainer = Trainer(
        model=tiny_model(), args=training_args(tempfile.mkdtemp(prefix="hf-example-"), args.epochs),
        train_dataset=Synthetic(32, 0), eval_dataset=Synthetic(16, 1),
        callbacks=[callback, Pace(args.step_sleep, args.fail_at_step)],
    )
    trainer.train()
    print(f"run {callback.run_id}: done")


if __name__ == "__main__":
    main()
