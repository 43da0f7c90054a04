"""A training script written for wandb, run on sqltrack by changing its import line.

Run (settings from SQLTRACK_DSN_* or ./sqltrack.conf):

    SQLTRACK_DSN_ENGINE=sqlite SQLTRACK_DSN_DBPATH=runs.db python examples/wandb_style.py
    sqltrack --engine sqlite --dbpath runs.db runs

Options: --steps, --lr, --fail-at-step N (an exception there: the run ends
FAILED), --step-sleep S (slow steps, to send SIGTERM meanwhile: the run gets
--terminated, exit status 143), --no-finish (end without wandb.finish()).
"""

import argparse
import math
import time

import sqltrack.wandb as wandb  # the only change: was `import wandb`

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--fail-at-step", type=int, default=-1)
parser.add_argument("--step-sleep", type=float, default=0.0)
parser.add_argument("--terminated", default="CANCELLED")
parser.add_argument("--no-finish", action="store_true")
args = parser.parse_args()

run = wandb.init(project="wandb-example", name="baseline", config=args, tags=["example"],
                 notes="a wandb script", terminated=args.terminated)
wandb.config.update({"optimizer": "sgd"})
best = math.inf
for step in range(args.steps):
    if step == args.fail_at_step:
        raise RuntimeError(f"failing on purpose at step {step}")
    loss = 2.0 * math.exp(-args.lr * step)
    wandb.log({"train/loss": loss}, commit=False)  # merged with the next call
    wandb.log({"train/acc@1": 1.0 - loss / 2.5, "epoch": step // 5})
    best = min(best, loss)
    time.sleep(args.step_sleep)
wandb.summary["best_loss"] = best
print(f"run {run.id}: done")
if not args.no_finish:
    wandb.finish()
