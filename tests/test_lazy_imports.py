"""The PostgreSQL driver is imported only when a PostgreSQL client is made.

``import sqltrack`` / ``import sqltrack_sync`` and a whole SQLite run never import
psycopg or psycopg_pool (start-up time: psycopg costs more than asyncio itself);
a PostgreSQL client imports them. Each case runs in a fresh interpreter, since
this test process has psycopg loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

DRIVERS = ("psycopg", "psycopg_pool")
PROGRAMS = {
    "async": """
import asyncio, json, sys
import sqltrack
loaded = [m for m in {drivers!r} if m in sys.modules]
async def main():
    client = sqltrack.AsyncClient(**json.loads(sys.argv[1]))
    run = await (await sqltrack.AsyncExperiment.create(client, name="lazy")).get_run()
    await run.add_metrics({{"loss": 0.5}}, step=0)
    await client.close()
asyncio.run(main())
print(json.dumps([loaded, [m for m in {drivers!r} if m in sys.modules]]))
""",
    "sync": """
import json, sys
import sqltrack_sync
loaded = [m for m in {drivers!r} if m in sys.modules]
client = sqltrack_sync.Client(**json.loads(sys.argv[1]))
run = sqltrack_sync.Experiment(client, name="lazy").get_run()
run.add_metrics({{"loss": 0.5}}, step=0)
client.close()
print(json.dumps([loaded, [m for m in {drivers!r} if m in sys.modules]]))
""",
}


@pytest.mark.parametrize("api", sorted(PROGRAMS))
def test_driver_imported_only_for_postgres(engine, client_kwargs, clean_env, api) -> None:
    code = PROGRAMS[api].format(drivers=DRIVERS)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(client_kwargs)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    after_import, after_run = json.loads(out.stdout.strip().splitlines()[-1])
    assert after_import == []
    assert after_run == ([] if engine == "sqlite" else list(DRIVERS))
