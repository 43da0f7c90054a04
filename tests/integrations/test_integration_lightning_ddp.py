"""SqltrackLogger under Lightning DDP on 2 CPU processes (gloo), strategies ``ddp_spawn`` and
``ddp``: one run, metrics from rank zero, per-rank metrics (opt-in) and system metrics of
every rank in it; both engines."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from support.helpers import json_value, read_raw
from support.integration_helpers import EXAMPLES, child_env

pytestmark = pytest.mark.usefixtures("clean_env")
WORLD = 2
CHILD = r'''
import os, sys, time
sys.path.insert(0, sys.argv[2])
import lightning.pytorch as pl
import sqltrack
from sqltrack.integrations.lightning import SqltrackLogger
import lightning_train

class PerRank(lightning_train.Regression):
    def training_step(self, batch, batch_idx):
        self.log("rank_value", float(100 * self.global_rank + self.global_step))
        return super().training_step(batch, batch_idx)

class Report(pl.Callback):
    def on_train_end(self, trainer, module):
        logger = trainer.logger
        run_id = logger.version
        client = sqltrack.Client()  # until this rank's first system-metrics sample is in
        mark = "?" if client.engine == "sqlite" else "%s"
        deadline = time.monotonic() + 120
        while not client.execute(f"SELECT 1 FROM system_metrics WHERE run_id = {mark} "
                                 f"AND rank = {mark}", [run_id, trainer.global_rank]):
            assert time.monotonic() < deadline, "no system metrics of this rank"
            time.sleep(0.05)
        client.close()
        # one write per line: the ranks share this pipe, and print() may write the
        # text and its newline apart, so two ranks' lines could run together
        os.write(1, f"RANK {trainer.global_rank} RUN {run_id}\n".encode())

if __name__ == "__main__":
    logger = SqltrackLogger(experiment="ddp", system_metrics=0.05, per_rank=["rank_*"],
                            quiet=True)
    trainer = pl.Trainer(strategy=sys.argv[1], accelerator="cpu", devices=2, max_epochs=2,
                         logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[Report()])
    trainer.fit(PerRank(lr=0.05), lightning_train.data(32, 0))
'''


@pytest.mark.timeout(600)
@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp"])
def test_ddp_two_processes_one_run(client_kwargs, tmp_path, strategy):
    kw = client_kwargs
    script = tmp_path / "ddp_child.py"
    script.write_text(CHILD)
    env = child_env(kw)
    env.update({"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"})
    out = subprocess.run([sys.executable, str(script), strategy, str(EXAMPLES)], env=env,
                         capture_output=True, text=True, timeout=500, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    reports = sorted(line.split() for line in out.stdout.splitlines()
                     if line.startswith("RANK "))
    assert [r[1] for r in reports] == ["0", "1"], out.stdout + out.stderr[-3000:]
    (run_id,) = {int(r[3]) for r in reports}  # every rank knew the one run
    assert read_raw(kw, "SELECT id, status FROM runs") == [(run_id, "COMPLETED")]
    # 32 samples over 2 ranks, batches of 8: 2 steps an epoch, 2 epochs: steps 0..3
    rows = read_raw(kw, "SELECT step, train__loss_step, rank_value__rank0, rank_value__rank1 "
                    "FROM metrics WHERE run_id = %s ORDER BY step", [run_id])
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    assert all(r[1] is not None for r in rows)  # rank zero's metrics
    assert [(r[2], r[3]) for r in rows] == [(float(s), 100.0 + s) for s in range(4)]
    names = json_value(read_raw(kw, "SELECT extras FROM runs")[0][0])["metric_names"]
    assert names["rank_value__rank0"] == "rank_value/rank0"
    assert names["rank_value__rank1"] == "rank_value/rank1"
    assert "rank_value" not in names  # per-rank names only
    ranks = read_raw(kw, "SELECT DISTINCT rank, host FROM system_metrics WHERE run_id = %s "
                     "ORDER BY rank", [run_id])
    assert [tuple(r) for r in ranks] == [(0, socket.gethostname()), (1, socket.gethostname())]
