"""A small training loop logged to SQLite, then read back with plain SQL.

Run: python examples/train.py  (writes ./sqltrack-example.db)
"""

import asyncio
import math
import random

import sqltrack


async def main() -> None:
    client = sqltrack.AsyncClient(engine="sqlite", dbpath="sqltrack-example.db")
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


if __name__ == "__main__":
    asyncio.run(main())
