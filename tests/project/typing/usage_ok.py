"""The documented blocking and async API, as a user script: mypy --strict must be clean.

Checked by tests/project/test_typing.py (never run: it only has to type-check).
"""

from __future__ import annotations

import asyncio

import sqltrack
import sqltrack_sync


def blocking() -> None:
    client = sqltrack.Client(engine="sqlite", dbpath="runs.db")
    exp = sqltrack.Experiment(client, name="Very science, much data").set_comment("nice")
    exp = exp.add_tags("tag")
    run: sqltrack.Run = exp.get_run()
    with run.track():
        run.add_args()
        for epoch in range(90):
            run.add_metrics({"train_loss": 0.1}, step=epoch, progress=epoch / 90)
    with client as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM metrics")
            print(cursor.fetchone())
    run_id: int = run.id
    experiment_id: int = run.experiment_id
    sqltrack.run_add_tags(client, run_id, "best")
    sqltrack.run_set_comment(client, run_id, None)
    ids: list[int] = sqltrack.mark_stale_runs(client, 3600)
    ids.append(experiment_id)
    applied: list[str] = sqltrack.setup(client, [])
    print(applied)
    same: sqltrack_sync.Run = sqltrack_sync.Run(client, run_id=run_id)
    same.stop("COMPLETED")
    client.close()


async def asynchronous() -> None:
    client = sqltrack.AsyncClient(engine="sqlite", dbpath="runs.db")
    exp = await sqltrack.AsyncExperiment.create(client, name="resnet")
    run = await exp.get_run()
    await run.add_args({"lr": 0.1, "depth": 50})
    async with run.track():
        for step in range(90):
            await run.add_metrics({"train_loss": 0.5}, step=step, progress=step / 90)
    await sqltrack.run_add_tags(client, run.id, "best")
    ids: list[int] = await sqltrack.mark_stale_runs(client, 3600)
    ids.append(run.id)
    await client.close()


if __name__ == "__main__":
    blocking()
    asyncio.run(asynchronous())
