"""System metrics per rank and node: ``rank`` and ``host`` in system_metrics' key, the rank
a process finds for itself, the GPUs a rank samples; both engines."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timezone

from support.helpers import read_raw

from sqltrack.model import system_metrics as system

WHEN = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


async def test_ranks_and_hosts_are_part_of_the_key(client, run, client_kwargs):
    kw = client_kwargs
    for rank, host in ((0, "node-a"), (1, "node-a"), (2, "node-b"), (3, "node-b")):
        await system.write_sample(client, run.id, {"cpu_percent": 10.0 + rank}, WHEN,
                                  rank=rank, host=host)
    await system.write_sample(client, run.id, {"cpu_percent": 99.0}, WHEN, rank=1,
                              host="node-a")  # the same key again: the first stays
    rows = read_raw(kw, "SELECT rank, host, value FROM system_metrics WHERE run_id = %s "
                    "ORDER BY rank", [run.id])
    assert [tuple(r) for r in rows] == [(0, "node-a", 10.0), (1, "node-a", 11.0),
                                        (2, "node-b", 12.0), (3, "node-b", 13.0)]
    # min / mean / max across ranks, and per node (the README's queries).
    across = read_raw(kw, "SELECT name, MIN(value), AVG(value), MAX(value) FROM system_metrics "
                      "WHERE run_id = %s GROUP BY name, time", [run.id])
    assert [tuple(r) for r in across] == [("cpu_percent", 10.0, 11.5, 13.0)]
    per_node = read_raw(kw, "SELECT host, AVG(value) FROM system_metrics WHERE run_id = %s "
                        "GROUP BY host, name, time ORDER BY host", [run.id])
    assert [tuple(r) for r in per_node] == [("node-a", 10.5), ("node-b", 12.5)]


async def test_a_single_process_samples_as_rank_zero_of_its_host(client, run, client_kwargs,
                                                                  monkeypatch):
    for name in ("RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    sampler = system.SystemMetrics(client, run.id, interval=0.05).start()
    deadline = asyncio.get_running_loop().time() + 60
    while sampler.samples < 2:
        assert asyncio.get_running_loop().time() < deadline, "no samples in time"
        await asyncio.sleep(0.02)
    await sampler.stop()
    found = read_raw(client_kwargs, "SELECT DISTINCT rank, host FROM system_metrics "
                     "WHERE run_id = %s", [run.id])
    assert [tuple(r) for r in found] == [(0, socket.gethostname())]


async def test_two_samplers_of_one_run_keep_their_ranks(client, run, client_kwargs):
    """Two ranks sampling at the same moments into one run: no key collides."""
    samplers = [system.SystemMetrics(client, run.id, interval=0.05, rank=r, host="h").start()
                for r in (0, 1)]
    deadline = asyncio.get_running_loop().time() + 60
    while min(s.samples for s in samplers) < 3:
        assert asyncio.get_running_loop().time() < deadline, "no samples in time"
        await asyncio.sleep(0.02)
    for sampler in samplers:
        await sampler.stop()
    per_rank = dict(read_raw(client_kwargs, "SELECT rank, COUNT(DISTINCT time) FROM "
                             "system_metrics WHERE run_id = %s GROUP BY rank", [run.id]))
    assert per_rank == {0: samplers[0].samples, 1: samplers[1].samples}


def test_current_rank(monkeypatch):
    for name in ("RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert system.current_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "5")
    assert system.current_rank() == 5
    monkeypatch.setenv("RANK", "3")
    assert system.current_rank() == 3
    monkeypatch.setenv("RANK", "not a number")
    assert system.current_rank() == 5


def test_each_rank_samples_its_own_gpu():
    assert system.own_gpus(4, {}) == [0, 1, 2, 3]
    assert system.own_gpus(4, {"LOCAL_RANK": "2", "WORLD_SIZE": "8"}) == [2]
    assert system.own_gpus(4, {"LOCAL_RANK": "0", "WORLD_SIZE": "1"}) == [0, 1, 2, 3]
    assert system.own_gpus(4, {"LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "2,3"}) == [3]
    assert system.own_gpus(4, {"CUDA_VISIBLE_DEVICES": "1,3"}) == [1, 3]
    assert system.own_gpus(4, {"LOCAL_RANK": "5", "WORLD_SIZE": "8"}) == []
    assert system.own_gpus(2, {"CUDA_VISIBLE_DEVICES": "GPU-abc"}) == [0, 1]
