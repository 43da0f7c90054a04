"""The issue's first example, on both engines, read back with plain SQL."""

import sqltrack


async def test_training_loop_readback(client):
    exp = await sqltrack.AsyncExperiment.create(client, name="resnet")
    run = await exp.get_run()
    async with run.track():
        for step in range(90):
            await run.add_metrics(
                {"train_loss": 0.5, "train_top1": 0.8}, step=step, progress=step / 90
            )
    rows = await client.query(
        "SELECT step, progress, train_loss, train_top1 FROM metrics WHERE run_id = %s "
        "ORDER BY step",
        [run.id],
    )
    assert [r[0] for r in rows] == list(range(90))
    assert all(r[2] == 0.5 and r[3] == 0.8 for r in rows)
    assert rows[45][1] == 45 / 90
    status = await client.query("SELECT status FROM runs WHERE id = %s", [run.id])
    assert status == [("COMPLETED",)]
