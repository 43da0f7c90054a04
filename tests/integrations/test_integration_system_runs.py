"""System metrics while a run is tracked: ``run.track(system_metrics=...)`` (async and
blocking), and the ``system_metrics=`` option of the integrations, both engines."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest
from support.helpers import read_raw
from support.integration_helpers import EXAMPLES

import sqltrack

sys.path.insert(0, str(EXAMPLES))
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing comes from a hub


def samples(client_kwargs, run_id) -> int:
    """Distinct sample times of a run."""
    return read_raw(client_kwargs, "SELECT COUNT(DISTINCT time) FROM system_metrics "
                    "WHERE run_id = %s", [run_id])[0][0]


def names(client_kwargs, run_id) -> set[str]:
    return {n for (n,) in read_raw(client_kwargs, "SELECT DISTINCT name FROM system_metrics "
                                   "WHERE run_id = %s", [run_id])}


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def restore_sigterm():
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


async def test_async_track_samples_until_the_run_stops(client, run, client_kwargs):
    async with run.track(system_metrics=0.05):
        deadline = asyncio.get_running_loop().time() + 30
        while samples(client_kwargs, run.id) < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
    taken = samples(client_kwargs, run.id)
    await asyncio.sleep(0.2)
    assert samples(client_kwargs, run.id) == taken  # stopped with the run
    assert {"cpu_percent", "process_rss_bytes", "system_memory_percent"} <= names(
        client_kwargs, run.id)


async def test_async_start_and_stop(client, run, client_kwargs):
    await run.start(system_metrics=0.05)
    deadline = asyncio.get_running_loop().time() + 30
    while samples(client_kwargs, run.id) < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    await run.stop()
    taken = samples(client_kwargs, run.id)
    await asyncio.sleep(0.2)
    assert samples(client_kwargs, run.id) == taken


async def test_off_by_default(client, run, client_kwargs):
    async with run.track():
        await asyncio.sleep(0.1)
    assert samples(client_kwargs, run.id) == 0


def test_blocking_track(client_kwargs):
    client = sqltrack.Client(**client_kwargs)
    try:
        run = sqltrack.Experiment(client, name="system").get_run()
        with run.track(system_metrics=0.05):
            wait_for(lambda: samples(client_kwargs, run.id) >= 3)
        taken = samples(client_kwargs, run.id)
        time.sleep(0.2)
        assert samples(client_kwargs, run.id) == taken
    finally:
        client.close()


def test_lightning_logger_option(client_kwargs, tmp_path):
    import lightning.pytorch as pl
    import lightning_train

    from sqltrack.integrations.lightning import SqltrackLogger

    client = sqltrack.Client(**client_kwargs)
    try:
        logger = SqltrackLogger(client, experiment="system", system_metrics=0.05)
        pl.Trainer(max_epochs=1, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                   enable_checkpointing=False, enable_model_summary=False,
                   default_root_dir=str(tmp_path)).fit(
            lightning_train.Regression(step_sleep=0.05), lightning_train.data(32, 0))
        run_id = logger.version
    finally:
        client.close()
    assert samples(client_kwargs, run_id) >= 2
    assert "cpu_percent" in names(client_kwargs, run_id)


def test_transformers_callback_option(client_kwargs, tmp_path):
    import transformers_train as example
    from transformers import Trainer

    from sqltrack.integrations.transformers import SqltrackCallback

    client = sqltrack.Client(**client_kwargs)
    try:
        callback = SqltrackCallback(client, experiment="system", system_metrics=0.05)
        Trainer(model=example.tiny_model(), args=example.training_args(str(tmp_path), 1),
                train_dataset=example.Synthetic(32, 0), eval_dataset=example.Synthetic(16, 1),
                callbacks=[callback, example.Pace(0.05, -1)]).train()
        run_id = callback.run_id
        taken = samples(client_kwargs, run_id)
        time.sleep(0.2)
        assert samples(client_kwargs, run_id) == taken >= 2  # stopped with the run
    finally:
        client.close()


def test_bad_interval_is_refused_before_the_run_starts(client_kwargs):
    client = sqltrack.Client(**client_kwargs)
    try:
        run = sqltrack.Experiment(client, name="system").get_run()
        with pytest.raises(ValueError, match="positive"):
            run.start(system_metrics=-1)
        assert client.execute("SELECT status FROM runs") == [("PENDING",)]
    finally:
        client.close()


def test_wandb_init_option(client_kwargs):
    import sqltrack.wandb as wandb

    client = sqltrack.Client(**client_kwargs)
    try:
        run = wandb.init(project="system", client=client, system_metrics=0.05)
        wandb.log({"loss": 1.0})
        wait_for(lambda: samples(client_kwargs, run.id) >= 2)
        wandb.finish()
        taken = samples(client_kwargs, run.id)
        time.sleep(0.2)
        assert samples(client_kwargs, run.id) == taken
    finally:
        client.close()


async def test_sampling_without_a_status_async(client, run, client_kwargs):
    """``start_system_metrics`` / ``stop_system_metrics``: what the ranks other than zero
    do; the run's status stays rank zero's."""
    kw = client_kwargs
    await run.set_status("COMPLETED")  # rank zero finished already
    await run.start_system_metrics(0.05)
    await run.start_system_metrics(0.05)  # once sampling, left as it is
    deadline = asyncio.get_running_loop().time() + 60
    while samples(kw, run.id) < 2:
        assert asyncio.get_running_loop().time() < deadline, "no samples"
        await asyncio.sleep(0.02)
    await run.stop_system_metrics()
    taken = samples(kw, run.id)
    await run.stop_system_metrics()  # stopped: nothing to do
    assert read_raw(kw, "SELECT status FROM runs WHERE id = %s", [run.id]) == [("COMPLETED",)]
    assert samples(kw, run.id) == taken  # no sample after the stop returned
    with pytest.raises(ValueError, match="positive number"):
        await run.start_system_metrics(-1)


def test_sampling_without_a_status_blocking(client_kwargs):
    kw = client_kwargs
    client = sqltrack.Client(**kw)
    try:
        run = sqltrack.Experiment(client, name="ranks").get_run()
        assert run.start_system_metrics(0.05) is run
        wait_for(lambda: samples(kw, run.id) >= 1, 60)
        assert run.stop_system_metrics() is run
        assert read_raw(kw, "SELECT status FROM runs WHERE id = %s", [run.id]) == [("PENDING",)]
    finally:
        client.close()
