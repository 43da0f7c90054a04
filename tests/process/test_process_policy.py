"""The blocking API's process policy (sqltrack_sync._process, sqltrack.process.exits) is
installed when the first client opens, not at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def _probe(code: str, client_kwargs) -> dict[str, bool]:
    prelude = textwrap.dedent("""
        import json, os, signal, sys
        def state():
            return {"excepthook": sys.excepthook is sys.__excepthook__,
                    "sigterm": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL}
        KW = json.loads(os.environ["KW"])
    """)
    env = {**os.environ, "KW": json.dumps(client_kwargs)}
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_changes_no_process_state(client_kwargs) -> None:
    state = _probe("""
        import sqltrack, sqltrack_sync, sqltrack_sync._process, sqltrack.process.exits
        print(json.dumps(state()))
    """, client_kwargs)
    assert state == {"excepthook": True, "sigterm": True}


def test_first_blocking_client_installs_exit_and_sigterm_handling(client_kwargs) -> None:
    state = _probe("""
        import sqltrack
        client = sqltrack.Client(**KW)
        sqltrack.Experiment(client, name="policy")
        print(json.dumps(state()))
        client.close()
    """, client_kwargs)
    assert state == {"excepthook": False, "sigterm": False}


def test_first_async_client_open_installs_exit_handling_only(client_kwargs) -> None:
    state = _probe("""
        import asyncio, sqltrack
        async def main():
            client = sqltrack.AsyncClient(**KW)
            await sqltrack.AsyncExperiment.create(client, name="policy")
            await client.close()
        asyncio.run(main())
        print(json.dumps(state()))
    """, client_kwargs)
    assert state == {"excepthook": False, "sigterm": True}
