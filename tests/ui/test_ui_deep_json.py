"""The page shows the deepest JSON sqltrack stores (issue 24: args nested ~978 levels deep
were accepted, then the run page and the experiment's runs table answered 500)."""

from __future__ import annotations

from typing import Any

import httpx

from sqltrack.checks import MAX_JSON_DEPTH
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER


def nested(depth: int) -> dict[str, Any]:
    """A dict whose containers nest ``depth`` deep (the dict itself is level 1)."""
    value: Any = "leaf"
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return {"deep": value}


async def test_deepest_json_is_shown_by_the_page(client, run, policy):
    deepest = nested(MAX_JSON_DEPTH)
    await run.set_args(deepest)
    await run.set_extras(deepest)
    await run.set_env({"HOME": "/root"})
    await run.add_metrics({"loss": 1.0}, step=1)
    app = create_app(client, reader=policy.reader, allow_superuser=policy.allow_superuser)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        for path in (f"/api/runs/{run.id}", f"/api/experiments/{run.experiment_id}/runs",
                     f"/api/experiments/{run.experiment_id}/table",
                     f"/runs/{run.id}", f"/experiments/{run.experiment_id}"):
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text[:300])
        detail = (await http.get(f"/api/runs/{run.id}")).json()
        assert detail["args"] == deepest
