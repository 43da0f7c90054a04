"""``shared_run``: every rank of a real ``torch.distributed`` job (gloo, 4 CPU processes)
in one run, with per-rank system metrics, on both engines."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from support.helpers import child_env, read_raw

pytestmark = pytest.mark.usefixtures("clean_env")
WORLD = 4
CHILD = r'''
import os, sys, time
import torch
import torch.distributed as dist
import sqltrack
from sqltrack.integrations.distributed import per_rank, shared_run

dist.init_process_group("gloo")
rank = dist.get_rank()
client = sqltrack.Client()
exp = sqltrack.Experiment(client, name="ddp")
run = shared_run(client, exp.id, run_id=sys.argv[1] if len(sys.argv) > 1 else None)
mark = "?" if client.engine == "sqlite" else "%s"
with run.track(system_metrics=0.05):
    for step in range(5):
        value = torch.tensor([float(rank + step)])
        dist.all_reduce(value)
        if rank == 0:
            run.add_metrics({"loss": float(value)}, step=step)
        run.add_metrics(per_rank({"throughput": float(10 * rank + step)}), step=step)
    deadline = time.monotonic() + 120  # until this rank's first sample is in
    while not client.execute(
            f"SELECT 1 FROM system_metrics WHERE run_id = {mark} AND rank = {mark}",
            [run.id, rank]):
        assert time.monotonic() < deadline, "no system metrics of this rank"
        time.sleep(0.05)
    dist.barrier()
client.close()
dist.destroy_process_group()
print("RUN", run.id)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(client_kwargs, tmp_path, extra_env=None, args=()) -> list[int]:
    env = child_env(client_kwargs, "ddp")
    env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                "WORLD_SIZE": str(WORLD), "OMP_NUM_THREADS": "1", **(extra_env or {})})
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    procs = [subprocess.Popen([sys.executable, str(script), *args],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(WORLD)]
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=280)
        assert proc.returncode == 0, err[-3000:]
        ids += [int(line.split()[1]) for line in out.splitlines() if line.startswith("RUN ")]
    return ids


@pytest.mark.timeout(600)
def test_four_gloo_ranks_one_run_with_per_rank_system_metrics(client_kwargs, tmp_path):
    kw = client_kwargs
    ids = _job(kw, tmp_path)
    assert len(ids) == WORLD and len(set(ids)) == 1
    (run_id,) = set(ids)
    assert read_raw(kw, "SELECT COUNT(*) FROM runs") == [(1,)]
    assert read_raw(kw, "SELECT status FROM runs WHERE id = %s", [run_id]) == [("COMPLETED",)]
    rows = read_raw(kw, "SELECT step, loss FROM metrics WHERE run_id = %s ORDER BY step",
                    [run_id])
    assert [tuple(r) for r in rows] == [(s, float(6 + 4 * s)) for s in range(5)]
    # opt-in per-rank metrics: every rank's column in the one row of each step
    rows = read_raw(kw, "SELECT step, throughput__rank0, throughput__rank1, throughput__rank2, "
                    "throughput__rank3 FROM metrics WHERE run_id = %s ORDER BY step", [run_id])
    assert [tuple(r) for r in rows] == [
        (s, *(float(10 * r + s) for r in range(WORLD))) for s in range(5)]
    across = read_raw(kw, "SELECT step, MIN(value), AVG(value), MAX(value) FROM "
                      "metric_values_all WHERE run_id = %s AND name LIKE %s GROUP BY step "
                      "ORDER BY step", [run_id, "throughput__rank%"])  # the README's query
    assert [tuple(r) for r in across] == [(s, s, 15.0 + s, 30.0 + s) for s in range(5)]
    ranks = read_raw(kw, "SELECT DISTINCT rank, host FROM system_metrics WHERE run_id = %s "
                     "ORDER BY rank", [run_id])
    assert [tuple(r) for r in ranks] == [(r, socket.gethostname()) for r in range(WORLD)]


@pytest.mark.timeout(600)
def test_ranks_derive_the_run_from_the_job_id(client_kwargs, tmp_path):
    ids = _job(client_kwargs, tmp_path, {"SLURM_JOB_ID": "424242"}, ["SLURM_JOB_ID"])
    assert set(ids) == {424242}
    assert read_raw(client_kwargs, "SELECT id FROM runs") == [(424242,)]
