"""The typed close-hook API of AsyncClient (sqltrack.client.hooks): buffers and open runs."""

from __future__ import annotations

from support.helpers import read_raw

import sqltrack


class _Counter:
    """A close hook that counts its closes and has one pending item until closed."""

    def __init__(self) -> None:
        self.closed = 0

    def __len__(self) -> int:
        return 0 if self.closed else 1

    def rebind(self) -> None:
        pass

    async def close(self) -> None:
        self.closed += 1


async def test_close_awaits_every_close_hook_once(client_kwargs) -> None:
    client = sqltrack.AsyncClient(**client_kwargs)
    hook = _Counter()
    client.on_close(hook)
    client.on_close(hook)  # registered once
    assert client.hooks.pending() == 1
    await client.close()
    assert hook.closed == 1


async def test_open_runs_follow_start_and_stop(client, experiment) -> None:
    run = await experiment.get_run()
    assert client.hooks.open_runs() == []
    await run.start()
    assert client.hooks.open_runs() == [run]
    await run.stop()
    assert client.hooks.open_runs() == []


async def test_buffer_is_a_close_hook_written_by_close(client_kwargs) -> None:
    client = sqltrack.AsyncClient(buffered=True, flush_rows=1000, **client_kwargs)
    experiment = await sqltrack.AsyncExperiment.create(client, name="hooks")
    run = await experiment.get_run()
    await run.add_metrics({"loss": 0.5}, step=1)
    assert len(client.hooks.close_hooks()) == 1
    assert client.hooks.pending() == 1
    await client.close()
    assert client.hooks.close_hooks() == []
    rows = read_raw(client_kwargs, "SELECT loss FROM metrics WHERE run_id = %s", [run.id])
    assert rows == [(0.5,)]
