"""The wandb-style module on the ranks of a job, both engines: a real ``torch.distributed``
job (gloo, 2 CPU processes) where every rank calls ``wandb.init`` (one run; a fork), where only
rank zero does (no hang), and wandb's own shared-mode pattern; and ranks known only from
``RANK`` / ``WORLD_SIZE`` (no process group)."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys

import pytest
from support.helpers import child_env, json_value, read_raw

import sqltrack
import sqltrack.wandb as wandb

pytestmark = pytest.mark.usefixtures("clean_env")
WORLD = 2
CHILD = r'''
import sys, time
import torch
import torch.distributed as dist
import sqltrack
import sqltrack.wandb as wandb

dist.init_process_group("gloo")
rank = dist.get_rank()
client = sqltrack.Client()
mark = "?" if client.engine == "sqlite" else "%s"

# 1. every rank calls init: one run; metrics of rank zero, per-rank opt-in
run = wandb.init(project="wddp", config={"lr": 0.1}, system_metrics=0.05,
                 per_rank=["throughput"], quiet=True)
for step in range(5):
    value = torch.tensor([float(rank + step)])
    dist.all_reduce(value)
    wandb.log({"loss": float(value), "throughput": float(10 * rank + step), "who": rank})
wandb.config.update({"set_by": rank})  # only rank zero's config is the run's
deadline = time.monotonic() + 120  # until this rank's first sample is in
while not client.execute(f"SELECT 1 FROM system_metrics WHERE run_id = {mark} AND rank = {mark}",
                         [run.id, rank]):
    assert time.monotonic() < deadline, "no system metrics of this rank"
    time.sleep(0.05)
dist.barrier()
wandb.finish()
print("ALL", rank, run.id, flush=True)

# 2. only rank zero calls init (wandb's "track a single process"): nothing waits for it
if rank == 0:
    solo = wandb.init(project="wddp", name="solo", quiet=True)
    wandb.log({"loss": 1.0})
    wandb.finish()
    print("SOLO", rank, solo.id, flush=True)
dist.barrier()

# 3. wandb's shared mode: the primary opens the run, the program broadcasts its id
if rank == 0:
    shared = wandb.init(project="wddp", name="shared", quiet=True, settings=wandb.Settings(
        mode="shared", x_primary=True, x_label="rank_0"))
    box = [shared.id]
else:
    box = [None]
dist.broadcast_object_list(box, src=0)
if rank != 0:
    shared = wandb.init(project="wddp", id=box[0], quiet=True, settings=wandb.Settings(
        mode="shared", x_primary=False, x_label=f"rank_{rank}", x_update_finish_state=False))
wandb.log({"loss": 2.0 + rank})
dist.barrier()
wandb.finish()
print("SHARED", rank, shared.id, flush=True)

# 4. rank zero cannot open the run: the other ranks raise instead of waiting
try:
    wandb.init(project="wddp", id=987654, resume="must", quiet=True)
except (ValueError, RuntimeError) as error:
    print("REFUSED", rank, 0 if isinstance(error, ValueError) else 1, flush=True)

# 5. W&B's fork on every rank: rank zero forks once, the others join the fork at its step
fork = wandb.init(project="wddp", fork_from=f"{run.id}?_step=2", per_rank=True, quiet=True)
wandb.log({"loss": 100.0 + rank})
dist.barrier()
wandb.finish()
print("FORK", rank, fork.id, flush=True)
client.close()
dist.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(client_kwargs, tmp_path) -> dict[str, dict[int, int]]:
    """Run the job; ``{"ALL": {rank: run id}, "SOLO": ..., "SHARED": ..., "REFUSED": ...}``."""
    env = child_env(client_kwargs, "wddp")
    env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                "WORLD_SIZE": str(WORLD), "OMP_NUM_THREADS": "1"})
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    procs = [subprocess.Popen([sys.executable, str(script)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(WORLD)]
    seen: dict[str, dict[int, int]] = {"ALL": {}, "SOLO": {}, "SHARED": {}, "REFUSED": {},
                                        "FORK": {}}
    ended = [proc.communicate(timeout=280) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * WORLD, "\n".join(
        err[-2000:] for _, err in ended)
    for out, _ in ended:
        for line in out.splitlines():
            kind, rank, run_id = line.split()
            seen[kind][int(rank)] = int(run_id)
    return seen


@pytest.mark.timeout(600)
def test_wandb_on_two_gloo_ranks(client_kwargs, tmp_path):
    kw = client_kwargs
    seen = _job(kw, tmp_path)
    assert len(seen["ALL"]) == WORLD and len(set(seen["ALL"].values())) == 1
    assert list(seen["SOLO"]) == [0]
    assert len(seen["SHARED"]) == WORLD and len(set(seen["SHARED"].values())) == 1
    # rank zero's resume="must" error; the other rank's "rank zero could not open the run"
    assert seen["REFUSED"] == {0: 0, 1: 1}
    assert len(seen["FORK"]) == WORLD and len(set(seen["FORK"].values())) == 1
    run_id, solo, shared, fork = (seen[k][0] for k in ("ALL", "SOLO", "SHARED", "FORK"))
    assert sorted(read_raw(kw, "SELECT id, status FROM runs")) == sorted(
        (i, "COMPLETED") for i in (run_id, solo, shared, fork))
    # rank zero's metrics, once per step (the other rank's "who" is not stored)
    rows = read_raw(kw, "SELECT step, loss, who FROM metrics WHERE run_id = %s ORDER BY step",
                    [run_id])
    assert [tuple(r) for r in rows] == [(s, float(1 + 2 * s), 0.0) for s in range(5)]
    # per-rank opt-in: each rank's value in the row of its step
    rows = read_raw(kw, "SELECT step, throughput__rank0, throughput__rank1 FROM metrics "
                    "WHERE run_id = %s ORDER BY step", [run_id])
    assert [tuple(r) for r in rows] == [(s, float(s), float(10 + s)) for s in range(5)]
    across = read_raw(kw, "SELECT step, MIN(value), MAX(value) FROM metric_values_all "
                      "WHERE run_id = %s AND name LIKE %s GROUP BY step ORDER BY step",
                      [run_id, "throughput__rank%"])  # the README's query
    assert [tuple(r) for r in across] == [(s, s, 10.0 + s) for s in range(5)]
    args, extras = read_raw(kw, "SELECT args, extras FROM runs WHERE id = %s", [run_id])[0]
    assert json_value(args) == {"lr": 0.1, "set_by": 0}
    names = json_value(extras)["metric_names"]
    assert names["throughput__rank1"] == "throughput/rank1" and "who" in names
    ranks = read_raw(kw, "SELECT DISTINCT rank, host FROM system_metrics WHERE run_id = %s "
                     "ORDER BY rank", [run_id])
    assert [tuple(r) for r in ranks] == [(r, socket.gethostname()) for r in range(WORLD)]
    assert read_raw(kw, "SELECT step, loss FROM metrics WHERE run_id = %s", [solo]) == [
        (0, 1.0)]
    assert read_raw(kw, "SELECT step, loss FROM metrics WHERE run_id = %s", [shared]) == [
        (0, 2.0)]
    rows = read_raw(kw, "SELECT step, loss__rank0, loss__rank1, loss FROM metrics "
                    "WHERE run_id = %s ORDER BY step", [fork])  # steps 0-2 copied
    assert [tuple(r) for r in rows] == [(s, None, None, float(1 + 2 * s)) for s in range(3)] + [
        (3, 100.0, 101.0, None)]


@pytest.fixture
def client(client_kwargs):
    handler = signal.getsignal(signal.SIGTERM)
    c = sqltrack.Client(**client_kwargs)
    yield c
    if wandb.run is not None:
        wandb.finish()
    c.close()
    signal.signal(signal.SIGTERM, handler)


def test_rank_without_process_group_joins_the_run_named_by_id(client, client_kwargs,
                                                                monkeypatch):
    """RANK / WORLD_SIZE and no process group: ``id=`` names the run, the rank joins it
    (rank zero's status stays), and stores only its per-rank metrics."""
    kw = client_kwargs
    started = sqltrack.Run(client, sqltrack.Experiment(client, name="env").id).start()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    run = wandb.init(project="env", id=str(started.id), client=client, per_rank="tp",
                     config={"lr": 1}, quiet=True)
    assert run.id == started.id
    wandb.log({"tp": 3.0, "loss": 1.0})
    wandb.finish()
    ((status, args),) = read_raw(kw, "SELECT status, args FROM runs")
    assert status == "RUNNING" and not json_value(args)  # rank zero's to set
    assert read_raw(kw, "SELECT step, name, value FROM metric_values_all WHERE run_id = %s",
                    [started.id]) == [(0, "tp__rank1", 3.0)]


def test_rank_without_process_group_nor_id_tracks_nothing(client, client_kwargs,
                                                         monkeypatch, caplog):
    """RANK / WORLD_SIZE and no process group, no ``id=``: this rank cannot know rank
    zero's run; it makes none (no duplicate run) and says so."""
    sqltrack.Experiment(client, name="env")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level(logging.WARNING, logger="sqltrack"):
        run = wandb.init(project="env", client=client, quiet=True)
    wandb.log({"loss": 1.0})
    wandb.finish()
    assert run.id is None
    assert "rank 1 of 2" in caplog.text
    assert read_raw(client_kwargs, "SELECT COUNT(*) FROM runs") == [(0,)]
