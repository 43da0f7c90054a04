"""SqltrackCallback with a Transformers Trainer on 2 CPU processes (``torch.distributed.run``,
gloo): one run, metrics from process zero, system metrics of both processes; both engines."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from support.helpers import read_raw
from support.integration_helpers import EXAMPLES, child_env

pytestmark = pytest.mark.usefixtures("clean_env")
CHILD = r'''
import os, sys, time
sys.path.insert(0, sys.argv[1])
os.environ["HF_HUB_OFFLINE"] = "1"
import sqltrack
from transformers import Trainer, TrainerCallback, TrainingArguments
from sqltrack.integrations.transformers import SqltrackCallback
import transformers_train as example

class Report(TrainerCallback):
    """Before the run stops: wait for this process's first system-metrics sample."""
    def __init__(self, tracked):
        self.tracked = tracked
    def on_train_end(self, args, state, control, **kwargs):
        run_id = self.tracked.run_id
        client = sqltrack.Client()
        mark = "?" if client.engine == "sqlite" else "%s"
        deadline = time.monotonic() + 120
        while not client.execute(f"SELECT 1 FROM system_metrics WHERE run_id = {mark} "
                                 f"AND rank = {mark}", [run_id, args.process_index]):
            assert time.monotonic() < deadline, "no system metrics of this process"
            time.sleep(0.05)
        client.close()
        # one write per line: the ranks share this pipe, and print() may write the
        # text and its newline apart, so two ranks' lines could run together
        os.write(1, f"RANK {args.process_index} RUN {run_id}\n".encode())

callback = SqltrackCallback(experiment="hf-ddp", system_metrics=0.05, quiet=True)
args = TrainingArguments(
    output_dir=sys.argv[2], num_train_epochs=2, per_device_train_batch_size=4,
    learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
    disable_tqdm=True, use_cpu=True, ddp_backend="gloo", dataloader_num_workers=0, seed=0)
trainer = Trainer(model=example.tiny_model(), args=args,
                  train_dataset=example.Synthetic(32, 0), callbacks=[Report(callback), callback])
trainer.train()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_trainer_on_two_processes_one_run(client_kwargs, tmp_path):
    kw = client_kwargs
    script = tmp_path / "hf_child.py"
    script.write_text(CHILD)
    env = child_env(kw)
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script),
         str(EXAMPLES), str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    reports = sorted(line.split() for line in out.stdout.splitlines()
                     if line.startswith("RANK "))
    assert [r[1] for r in reports] == ["0", "1"], out.stdout + out.stderr[-3000:]
    (run_id,) = {int(r[3]) for r in reports}
    assert read_raw(kw, "SELECT id, status FROM runs") == [(run_id, "COMPLETED")]
    # 32 examples over 2 processes, 4 a batch: 4 steps an epoch, 2 epochs: steps 1..8
    rows = read_raw(kw, "SELECT step, loss FROM metrics WHERE run_id = %s AND loss IS NOT NULL "
                    "ORDER BY step", [run_id])
    assert [r[0] for r in rows] == list(range(1, 9))
    ranks = read_raw(kw, "SELECT DISTINCT rank FROM system_metrics WHERE run_id = %s "
                     "ORDER BY rank", [run_id])
    assert [r[0] for r in ranks] == [0, 1]
