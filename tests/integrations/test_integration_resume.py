"""Resuming from a checkpoint rewinds the run (Lightning ``ckpt_path=``, Transformers
``resume_from_checkpoint``, a simulated Slurm requeue), and the wandb-style module's
``resume_from`` / ``fork_from``; both engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from support.helpers import json_value, read_raw
from support.integration_helpers import EXAMPLES, child_env
from support.waiting import Output

import sqltrack
import sqltrack.wandb as wandb

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing comes from a hub
sys.path.insert(0, str(EXAMPLES))
import lightning_train  # noqa: E402 - the examples are the models under test
import transformers_train  # noqa: E402


@pytest.fixture(autouse=True)
def restore_sigterm():
    """A started logger makes SIGTERM raise sqltrack.Terminated; the test runner's
    handler comes back afterwards."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def history(kw, run_id, since: int | None = None) -> list[tuple]:
    """Every metric row of a run (without its run id), in step order."""
    rows = read_raw(kw, "SELECT * FROM metrics WHERE run_id = %s ORDER BY step, progress",
                    [run_id])
    columns = [c for (c,) in _columns(kw)]
    keep = [i for i, c in enumerate(columns) if c != "run_id"]
    step = columns.index("step")
    return [tuple(r[i] for i in keep) for r in rows if since is None or r[step] >= since]


def _columns(kw) -> list[tuple]:
    if kw["engine"] == "sqlite":
        return [(r[1],) for r in read_raw(kw, "PRAGMA table_info(metrics)")]
    return read_raw(kw, "SELECT column_name FROM information_schema.columns WHERE "
                    "table_name = 'metrics' AND table_schema = %s ORDER BY ordinal_position",
                    [kw["schema"]])


def rewound_run(kw, run_id) -> int:
    (found,) = read_raw(kw, "SELECT from_id FROM run_links WHERE kind = 'rewound_from' "
                        "AND to_id = %s", [run_id])
    return found[0]


def rewinds(kw, run_id) -> list[tuple]:
    extras = json_value(read_raw(kw, "SELECT extras FROM runs WHERE id = %s", [run_id])[0][0])
    return [(r["step"], r["rows"]) for r in extras["rewinds"]]


# -- Lightning ------------------------------------------------------------------------
def lightning_fit(logger, checkpoints, ckpt_path=None) -> None:
    torch.manual_seed(0)
    model = lightning_train.Regression(lr=0.05)
    trainer = pl.Trainer(
        max_epochs=3, logger=logger, log_every_n_steps=1, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=checkpoints, save_top_k=-1,
                                                every_n_epochs=1)])
    trainer.fit(model, lightning_train.data(32, 0), lightning_train.data(16, 1),
                ckpt_path=ckpt_path)


def test_lightning_resumed_fit_rewinds_to_the_checkpoint(client_kwargs, tmp_path):
    from sqltrack.integrations.lightning import SqltrackLogger

    kw = client_kwargs
    client = sqltrack.Client(**kw)
    try:
        first = SqltrackLogger(client, experiment="resume", quiet=True)
        lightning_fit(first, tmp_path / "ckpt")
        run_id = first.version
        uninterrupted = history(kw, run_id)
        # 4 steps an epoch, 3 epochs: the checkpoint after epoch 0 has global step 4
        checkpoint = tmp_path / "ckpt" / "epoch=0-step=4.ckpt"
        assert checkpoint.exists(), sorted(os.listdir(tmp_path / "ckpt"))
        second = SqltrackLogger(client, experiment="resume", run_id=run_id, quiet=True)
        lightning_fit(second, tmp_path / "ckpt2", ckpt_path=str(checkpoint))
        assert second.version == run_id
    finally:
        client.close()
    assert [r[0] for r in uninterrupted] == list(range(12))
    assert history(kw, run_id) == uninterrupted  # the resumed fit logged steps 4.. again
    moved = rewound_run(kw, run_id)
    assert history(kw, moved) == history(kw, run_id, since=4)  # the first fit's rows past it
    assert rewinds(kw, run_id) == [(3, 8)]
    assert read_raw(kw, "SELECT status FROM runs WHERE id = %s", [run_id]) == [("COMPLETED",)]


def test_slurm_requeue_ends_with_the_uninterrupted_history(client_kwargs, tmp_path):
    """A job (SLURM_JOB_ID) pre-empted by SIGTERM after a checkpoint, then requeued with
    the same SLURM_JOB_ID: it resumes from the checkpoint and its run's history equals an
    uninterrupted run's; the first attempt's rows past the checkpoint are in a linked run."""
    kw = client_kwargs
    env = child_env(kw)

    def job(job_id: int, checkpoints: str, *more: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(EXAMPLES / "lightning_train.py"), "--epochs", "3",
             "--run-id", "SLURM_JOB_ID", "--experiment", "requeue", "--terminated",
             "PREEMPTED", "--checkpoint-dir", str(tmp_path / checkpoints), *more],
            env={**env, "SLURM_JOB_ID": str(job_id), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)

    reference = Output(job(7001, "ref"))
    _, err = reference.finish(300)
    assert reference.process.returncode == 0, err[-3000:]

    attempt = Output(job(7002, "job", "--wait-at-step", "6"))
    try:
        attempt.line(lambda line: line == "waiting at step 6", "the job reached step 6", 300)
        assert (tmp_path / "job" / "last.ckpt").exists()  # epoch 0's checkpoint (step 4)
        attempt.process.send_signal(signal.SIGTERM)
        _, err = attempt.finish(300)
    finally:
        attempt.process.kill()
    assert attempt.process.returncode == 143, err[-3000:]
    assert read_raw(kw, "SELECT status FROM runs WHERE id = 7002") == [("PREEMPTED",)]
    first_attempt = history(kw, 7002)
    assert [r[0] for r in first_attempt] == list(range(6))  # steps 4, 5 past the checkpoint

    requeued = Output(job(7002, "job"))
    _, err = requeued.finish(300)
    assert requeued.process.returncode == 0, err[-3000:]
    assert read_raw(kw, "SELECT status FROM runs WHERE id = 7002") == [("COMPLETED",)]
    assert history(kw, 7002) == history(kw, 7001)  # same steps, same values
    moved = rewound_run(kw, 7002)
    assert history(kw, moved) == [r for r in first_attempt if r[0] >= 4]
    assert rewinds(kw, 7002) == [(3, 2)]


# -- Transformers ---------------------------------------------------------------------
def hf_train(callback, output_dir, resume=None) -> None:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=2, per_device_train_batch_size=8,
        per_device_eval_batch_size=16, learning_rate=1e-3, logging_steps=1,
        eval_strategy="epoch", save_strategy="epoch", report_to="none", disable_tqdm=True,
        use_cpu=True, dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=transformers_train.tiny_model(), args=args,
                      train_dataset=transformers_train.Synthetic(32, 0),
                      eval_dataset=transformers_train.Synthetic(16, 1), callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume)


def test_transformers_resume_from_checkpoint_rewinds(client_kwargs, tmp_path):
    from sqltrack.integrations.transformers import SqltrackCallback

    kw = client_kwargs
    client = sqltrack.Client(**kw)
    try:
        first = SqltrackCallback(client, experiment="hf-resume", quiet=True)
        hf_train(first, tmp_path / "out")
        run_id = first.run_id
        before = read_raw(kw, "SELECT step, loss, eval_loss FROM metrics WHERE run_id = %s "
                          "ORDER BY step", [run_id])
        second = SqltrackCallback(client, experiment="hf-resume", run_id=run_id, quiet=True)
        hf_train(second, tmp_path / "out2", resume=str(tmp_path / "out" / "checkpoint-4"))
    finally:
        client.close()
    # 4 steps an epoch, 2 epochs; the checkpoint of epoch 1 is at step 4
    assert [r[0] for r in before] == list(range(1, 9))
    after = read_raw(kw, "SELECT step, loss, eval_loss FROM metrics WHERE run_id = %s "
                     "ORDER BY step", [run_id])
    assert after == before  # steps 5..8 logged again, with the same values
    moved = rewound_run(kw, run_id)
    assert read_raw(kw, "SELECT step, loss, eval_loss FROM metrics WHERE run_id = %s "
                    "ORDER BY step", [moved]) == [r for r in before if r[0] > 4]
    assert rewinds(kw, run_id) == [(4, 4)]


# -- the wandb-style module -----------------------------------------------------------
@pytest.fixture
def client(client_kwargs):
    c = sqltrack.Client(**client_kwargs)
    yield c
    if wandb.run is not None:
        wandb.finish()
    c.close()


def losses(kw, run_id) -> list[tuple]:
    return [tuple(r) for r in read_raw(kw, "SELECT step, loss FROM metrics WHERE run_id = %s "
                                       "ORDER BY step", [run_id])]


def test_wandb_resume_from_rewinds(client, client_kwargs):
    kw = client_kwargs
    run = wandb.init(project="p", client=client, quiet=True)
    for i in range(10):
        wandb.log({"loss": float(i)})
    run_id = run.id
    wandb.finish()
    again = wandb.init(client=client, resume_from=f"{run_id}?_step=5", quiet=True)
    assert again.id == run_id
    for i in range(3):
        wandb.log({"loss": 100.0 + i})  # steps 6, 7, 8
    wandb.finish()
    assert losses(kw, run_id) == [(s, float(s)) for s in range(6)] + [
        (6, 100.0), (7, 101.0), (8, 102.0)]
    assert losses(kw, rewound_run(kw, run_id)) == [(s, float(s)) for s in range(6, 10)]
    assert rewinds(kw, run_id) == [(5, 4)]
    assert read_raw(kw, "SELECT COUNT(*) FROM experiments") == [(1,)]  # the run's experiment


def test_wandb_fork_from_forks(client, client_kwargs):
    kw = client_kwargs
    run = wandb.init(project="p", client=client, config={"lr": 0.1}, quiet=True)
    for i in range(6):
        wandb.log({"loss": float(i)})
    parent = run.id
    wandb.finish()
    child = wandb.init(client=client, fork_from=f"{parent}?_step=2", quiet=True)
    assert child.id != parent
    wandb.log({"loss": 50.0})  # step 3 of the fork
    wandb.finish()
    assert losses(kw, child.id) == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 50.0)]
    assert losses(kw, parent) == [(s, float(s)) for s in range(6)]  # unchanged
    assert read_raw(kw, "SELECT kind, to_id FROM run_links WHERE from_id = %s",
                    [child.id]) == [("forked_from", parent)]
    args, status = read_raw(kw, "SELECT args, status FROM runs WHERE id = %s", [child.id])[0]
    assert json_value(args) == {"lr": 0.1} and status == "COMPLETED"


@pytest.mark.parametrize("given", [
    {"resume_from": "12"}, {"fork_from": "x?_step=1"}, {"resume_from": "1?_step=-1"},
    {"resume_from": "1?_step=2", "fork_from": "1?_step=2"}, {"fork_from": "1?_step=2", "id": 1},
])
def test_wandb_history_points_checked(client, given):
    with pytest.raises(ValueError, match="wandb.init"):
        wandb.init(client=client, quiet=True, **given)


def test_wandb_resume_from_an_unknown_run(client, client_kwargs):
    with pytest.raises(ValueError, match="there is no run 404"):
        wandb.init(client=client, resume_from="404?_step=3", quiet=True)
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM runs") == [(0,)]
