"""Runs' media files on the page (issue 23, Required 3: an Image "as a file written next to
the run with a reference row that the web page shows").

The route ``/media/<run id>/<file>`` serves only image, audio and video files of the run's
own media folder (``<root>/sqltrack-media/<run id>/``), whatever the run's extras say:
``extras`` is anyone's data. The browser test is in test_ui_browser_run_page.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import sqltrack
from sqltrack.integrations.wandb_media import png
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER

PIXELS = [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]]


def media_dir(root: Path, run_id: int) -> Path:
    folder = root / "sqltrack-media" / str(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def page(client: sqltrack.AsyncClient, root: Path | None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(client, media_root=root)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        yield http


@pytest.fixture
async def served(client, tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    root = tmp_path / "media-root"
    async for http in page(client, root):
        yield http, root


async def test_a_runs_image_is_served_and_nothing_else(client, served, tmp_path):
    http, root = served
    experiment = await sqltrack.AsyncExperiment.create(client, name="media")
    run, other = await experiment.get_run(), await experiment.get_run()
    folder = media_dir(root, run.id)
    image = png(PIXELS)
    (folder / "examples_3_0.png").write_bytes(image)
    (folder / "clip_3_0.wav").write_bytes(b"RIFF....WAVE")
    (folder / "page_3_0.html").write_text("<script>alert(1)</script>")
    (folder / "drawing.svg").write_text("<svg onload='alert(1)'/>")
    (folder / ".hidden.png").write_bytes(image)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the page")
    os.symlink(secret, folder / "link.png")
    (media_dir(root, other.id) / "theirs.png").write_bytes(image)
    # A reference may say anything; the route never reads it.
    await run.set_extras({"media": {"examples": [
        {"step": 3, "type": "image", "path": str(secret), "caption": "x"}]}})

    got = await http.get(f"/media/{run.id}/examples_3_0.png")
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.content == image
    assert (await http.get(f"/media/{run.id}/clip_3_0.wav")).headers["content-type"] == (
        "audio/wav")
    refused = ["page_3_0.html", "drawing.svg", ".hidden.png", "link.png", "missing.png",
               "..%2Fsecret.png", "%2E%2E", "theirs.png", "examples_3_0.PNG.exe"]
    for name in refused:
        got = await http.get(f"/media/{run.id}/{name}")
        assert got.status_code == 404, (name, got.status_code)
        assert b"not for the page" not in got.content and b"alert" not in got.content
    assert (await http.get(f"/media/{other.id}/theirs.png")).content == image


async def test_the_default_root_is_where_the_wandb_module_writes(client, tmp_path, monkeypatch):
    """Beside a SQLite file; for a server database the current folder."""
    monkeypatch.chdir(tmp_path)
    experiment = await sqltrack.AsyncExperiment.create(client, name="media")
    run = await experiment.get_run()
    path = client.dialect.database_path(client.settings)
    root = Path(path).parent if path is not None else tmp_path
    image = png(PIXELS)
    (media_dir(root, run.id) / "examples_0_0.png").write_bytes(image)
    async for http in page(client, None):
        got = await http.get(f"/media/{run.id}/examples_0_0.png")
        assert got.status_code == 200 and got.content == image
        # a media file may be kept a while; the API's answers never (a live page polls)
        assert (await http.get(f"/api/runs/{run.id}")).headers["cache-control"] == "no-store"
        token_less = await httpx.AsyncClient(
            transport=http._transport, base_url="http://127.0.0.1").get(
                f"/media/{run.id}/examples_0_0.png")
        assert token_less.status_code == 403  # the page's token, as every route
