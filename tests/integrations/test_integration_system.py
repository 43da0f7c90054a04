"""System metrics: sampled on the event loop, written to system_metrics, both engines."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from support.helpers import read_raw

from sqltrack.model import system_metrics as system


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_samples_until_stopped(client, run, client_kwargs):
    sampler = system.SystemMetrics(client, run.id, interval=0.05).start()
    await _until(lambda: sampler.samples >= 3)
    await sampler.stop()
    taken = sampler.samples
    await asyncio.sleep(0.2)
    assert sampler.samples == taken  # stopped for good
    rows = read_raw(client_kwargs, "SELECT time, name, value FROM system_metrics "
                    "WHERE run_id = %s ORDER BY time, name", [run.id])
    names = {name for _, name, _ in rows}
    assert {"cpu_percent", "process_rss_bytes", "system_memory_used_bytes",
            "system_memory_percent", "process_cpu_percent"} <= names
    assert len({t for t, _, _ in rows}) == taken
    rss = [v for _, n, v in rows if n == "process_rss_bytes"]
    assert all(v > 1e6 for v in rss)
    stamp = rows[0][0]
    if isinstance(stamp, str):  # SQLite: ISO-8601 text in UTC
        assert stamp.endswith("+00:00")
        stamp = datetime.fromisoformat(stamp)
    assert stamp.utcoffset().total_seconds() == 0


async def test_deleting_the_run_deletes_its_samples(client, run, client_kwargs):
    await system.write_sample(client, run.id, {"cpu_percent": 5.0})
    await client.query("DELETE FROM runs WHERE id = %s", [run.id])
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM system_metrics")[0][0] == 0


def test_without_psutil_the_standard_library_readings():
    sampler = system.Sampler()
    sampler.psutil = None
    values = sampler.sample()
    assert values["process_max_rss_bytes"] > 1e6 and values["load_average_1m"] >= 0
    sampler.close()


def test_nvml_fails_soft():
    """nvidia-ml-py is installed (test extra) but this machine has no NVIDIA driver."""
    import pynvml  # noqa: F401 - the package is there

    gpus = system._Nvml()
    assert gpus.handles == []
    values: dict[str, float] = {}
    gpus.read(values)
    assert values == {}
    assert not any(name.startswith("gpu") for name in system.Sampler().sample())


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_interval_must_be_positive(bad):
    with pytest.raises(ValueError, match="positive"):
        system.interval_of(bad)
    assert system.interval_of(True) == system.DEFAULT_INTERVAL
    assert system.interval_of(False) is None and system.interval_of(2) == 2.0
