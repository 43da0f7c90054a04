"""A small training loop logged to SQLite, then read back with plain SQL.

Run: python examples/train.py  (writes ./sqltrack-example.db, or the file given
as the first argument), then look at it with the two commands it prints.
"""

import asyncio
import math
import random
import shlex
import sys
from pathlib import Path

import sqltrack


def next_steps(dbpath: str) -> str:
    """Where the example wrote, and the commands that show it."""
    path = str(Path(dbpath).absolute())
    base = f"sqltrack --engine sqlite --dbpath {shlex.quote(path)}"
    return (
        f"wrote {path}\n"
        "next:\n"
        f"  {base} runs\n"
        f"  {base} ui      # needs: pip install -e '.[ui]'"
    )


async def main(dbpath: str = "sqltrack-example.db") -> None:
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
    exp = await sqltrack.AsyncExperiment.create(client, name="example-resnet")
    await exp.add_tags("example")
    run = await exp.get_run()
    await run.add_args({"lr": 0.1, "epochs": 20})
    async with run.track():
        for epoch in range(20):
            loss = 2.0 * math.exp(-epoch / 6) + random.uniform(0, 0.05)
            await run.add_metrics(
                {"train_loss": loss, "train_top1": 1 - loss / 2.5}, step=epoch, progress=epoch / 20
            )
    async with client.cursor() as cursor:
        await cursor.execute("SELECT id, status, args FROM runs WHERE id = ?", (run.id,))
        print("run:", await cursor.fetchone())
        await cursor.execute(
            "SELECT step, train_loss, train_top1 FROM metrics WHERE run_id = ? ORDER BY step",
            (run.id,),
        )
        for step, loss, top1 in await cursor.fetchall():
            print(f"step {step:2d}  train_loss {loss:.3f}  train_top1 {top1:.3f}")
    await client.close()
    print(next_steps(dbpath))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
