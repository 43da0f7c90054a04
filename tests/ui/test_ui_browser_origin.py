"""Only the page drives the page: another origin open in the same Chromium gets nothing.

The page is served in-process (its responses recorded), the user has it open (its
token cookie set), then a page of a second origin (another port of 127.0.0.1: same
site, other origin, the hardest case for cookies) tries every way a web page has to
reach the API: fetch with and without CORS, an image, a script, a form into a frame.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from test_ui_browser import (  # noqa: F401 - browser_binaries is a fixture
    WAIT,
    browser_binaries,
    chromium,
)

import sqltrack
from sqltrack.ui import create_app, open_socket

ATTACK = """<!doctype html><html><body><script>
const victim = "%(victim)s";
const q = victim + "/api/sql?q=" + encodeURIComponent("SELECT id, args FROM runs");
const results = {};
async function attempt(name, run) {
  try { results[name] = await run(); } catch (error) { results[name] = "error: " + error; }
}
(async () => {
  await attempt("cors", async () => (await fetch(q, {credentials: "include"})).text());
  await attempt("no-cors", async () => {
    const r = await fetch(q, {mode: "no-cors", credentials: "include"});
    return "opaque:" + r.type + ":" + (await r.text());
  });
  await attempt("img", () => new Promise(done => {
    const img = new Image(); img.onload = () => done("loaded"); img.onerror = () => done("error");
    img.src = q + "&img=1";
  }));
  await attempt("script", () => new Promise(done => {
    const s = document.createElement("script"); s.onload = () => done("loaded");
    s.onerror = () => done("error"); s.src = q + "&script=1"; document.body.append(s);
  }));
  await attempt("form", () => new Promise(done => {
    const frame = document.createElement("iframe"); frame.name = "target";
    frame.onload = () => done("frame loaded"); document.body.append(frame);
    const form = document.createElement("form"); form.method = "GET"; form.target = "target";
    form.action = victim + "/api/sql";
    const input = document.createElement("input"); input.name = "q";
    input.value = "SELECT 'form'"; form.append(input); document.body.append(form);
    form.submit();
  }));
  window.results = results;
  document.body.dataset.done = "true";
})();
</script></body></html>"""


@pytest.fixture
def page(tmp_path) -> Iterator[tuple[str, list[tuple[str, str, int]]]]:
    """The app served on 127.0.0.1 in a thread: (base URL, [(path, query, status)])."""
    dbpath = str(tmp_path / "origin.db")
    seen: list[tuple[str, str, int]] = []
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        import uvicorn

        client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
        async with client:
            experiment = await sqltrack.AsyncExperiment.create(client, name="e")
            run = await experiment.get_run()
            await run.set_args({"secret": "0xdeadbeef"})
        app = create_app(client)

        async def recorder(scope: Any, receive: Any, send: Any) -> None:
            async def record(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    seen.append((scope["path"], scope["query_string"].decode(),
                                 message["status"]))
                await send(message)

            await app(scope, receive, record if scope["type"] == "http" else send)

        sock = open_socket("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(recorder, log_level="warning", lifespan="off"))
        state.update(server=server, port=sock.getsockname()[1], token=app.state.token)
        ready.set()
        try:
            with sock:
                await server.serve(sockets=[sock])
        finally:
            await client.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(WAIT)
    base = f"http://127.0.0.1:{state['port']}"
    state["base"] = base
    try:
        yield base + "?token=" + state["token"], seen
    finally:
        state["server"].should_exit = True
        thread.join(WAIT)


@pytest.fixture
def attacker(page) -> Iterator[str]:
    """A second origin (another port of 127.0.0.1) serving the attack page."""
    victim = page[0].split("?")[0]
    body = (ATTACK % {"victim": victim}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/attack.html"
    finally:
        server.shutdown()
        thread.join(WAIT)


def test_a_second_origin_gets_nothing(page, attacker, browser_binaries, tmp_path):  # noqa: F811
    from selenium.webdriver.support.ui import WebDriverWait

    entry, seen = page
    base = entry.split("?")[0]
    for browser in chromium(tmp_path / "chromium", "1024,768"):
        browser.set_script_timeout(WAIT)
        browser.get(base + "/?token=" + entry.split("token=")[1])  # the user opens the page
        assert browser.current_url == base + "/"
        own = browser.execute_async_script(
            "const done = arguments[0];"
            "fetch('/api/sql?q=' + encodeURIComponent('SELECT args FROM runs'))"
            ".then(r => r.text()).then(done, e => done('error: ' + e));")
        assert "0xdeadbeef" in own  # the page itself reads
        before = len(seen)

        browser.get(attacker)
        WebDriverWait(browser, WAIT).until(
            lambda b: b.execute_script("return document.body.dataset.done === 'true'"))
        results = browser.execute_script("return window.results")
        reached = seen[before:]
    assert all("0xdeadbeef" not in str(value) for value in results.values()), results
    assert results["cors"].startswith("error"), results
    assert results["no-cors"] == "opaque:opaque:", results
    api = [(path, query, status) for path, query, status in reached if path.startswith("/api/")]
    assert len(api) >= 4, reached  # the attempts did reach the server ...
    assert all(status == 403 for _, _, status in api), api  # ... and were all refused
