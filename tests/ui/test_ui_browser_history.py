"""The run page's history (rewinds, forks) and system metrics per rank, in headless Chromium
(issue 21, Required 2 and 7), on a SQLite file served by ``sqltrack ui``.

A run rewound once (its rows past step 12 now in another run) and forked at step 5, with
system metrics of three ranks on two hosts (one host name hostile); a run whose extras
hold a hostile rewind entry; a single-process run. See tests/ui/test_ui_browser.py for
the browser set-up.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from support.ui_server import serve_seeded
from test_ui_browser import (  # noqa: F401 - browser_binaries is a fixture
    TOKENS,
    WAIT,
    browser_binaries,
    chromium,
    no_console_errors,
)
from test_ui_browser_features import js, load, no_alert, traces, until

import sqltrack
from sqltrack.model.system_metrics import write_sample

HOSTILE = "<img src=x onerror=alert(9)>"
START = datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc)
HOSTS = ["node0", "node0", HOSTILE]


async def _seed(dbpath: str) -> dict[str, int]:
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="preempted")
        run = await exp.get_run()
        for step in range(20):
            await run.add_metrics({"loss": 1.0 / (step + 1)}, step=step)
        held = await sqltrack.run_rewind(client, run.id, 12)
        fork = await run.fork(5)
        for rank, host in enumerate(HOSTS):
            for i in range(8):
                await write_sample(client, run.id, {"cpu_percent": 10.0 * rank + i},
                                   time=START + timedelta(seconds=5 * i), rank=rank, host=host)
        odd = await exp.get_run()
        await odd.set_extras({"rewinds": [{"step": HOSTILE, "time": HOSTILE, "rows": HOSTILE}]})
        single = await exp.get_run()
        for i in range(4):
            await write_sample(client, single.id, {"cpu_percent": 1.0 * i},
                               time=START + timedelta(seconds=5 * i))
        live = await exp.get_run()
        await live.set_status("RUNNING")
        for rank in range(2):
            for i in range(4):
                await write_sample(client, live.id, {"cpu_percent": 10.0 * rank + i},
                                   time=START + timedelta(seconds=5 * i), rank=rank, host="n")
        assert held is not None
        return {"run": run.id, "held": held, "fork": fork.id, "odd": odd.id,
                "single": single.id, "live": live.id}
    finally:
        await client.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, dict[str, int], str]]:
    yield from serve_seeded(tmp_path_factory, _seed)


@pytest.fixture(scope="module")
def driver(browser_binaries, tmp_path_factory):  # noqa: F811 - the imported fixture
    yield from chromium(tmp_path_factory.mktemp("chromium"), "1280,900",
                        "--enable-unsafe-swiftshader")


def text(browser, css: str) -> str:
    return browser.find_element("css selector", css).text


def hrefs(browser, css: str) -> list[str]:
    return [a.get_attribute("pathname") for a in browser.find_elements("css selector", css)]


def test_history_of_rewinds_and_forks(served, driver):
    base, ids, _ = served
    load(driver, f"{base}/runs/{ids['run']}")
    assert driver.find_element("id", "history-section").is_displayed()
    rows = driver.find_elements("css selector", "#rewinds tbody tr")
    assert len(rows) == 1
    cells = [c.text for c in rows[0].find_elements("css selector", "td")]
    assert (cells[0], cells[2], cells[3]) == ("12", "7", f"run {ids['held']}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cells[1]), cells
    assert hrefs(driver, "#rewinds a") == [f"/runs/{ids['held']}"]
    assert text(driver, "#forks") == f"run {ids['fork']} from step 5"
    assert hrefs(driver, "#forks a") == [f"/runs/{ids['fork']}"]

    load(driver, f"{base}/runs/{ids['held']}")
    assert text(driver, "#rewound-from").startswith(
        f"holds the rows past the rewind of run {ids['run']} at step 12 (")
    assert hrefs(driver, "#rewound-from a") == [f"/runs/{ids['run']}"]
    load(driver, f"{base}/runs/{ids['fork']}")
    assert text(driver, "#forked-from").startswith(f"forked from run {ids['run']} at step 5 (")

    load(driver, f"{base}/runs/{ids['odd']}")  # hostile extras: shown as text, nothing runs
    cells = [c.text for c in driver.find_elements("css selector", "#rewinds tbody td")]
    assert cells == [HOSTILE, HOSTILE, HOSTILE, ""]
    assert not driver.find_elements("css selector", "#history img")
    no_alert(driver)
    load(driver, f"{base}/runs/{ids['single']}")  # no history: no block
    assert not driver.find_element("id", "history-section").is_displayed()
    no_console_errors(driver)


def test_system_metrics_per_rank_and_across_ranks(served, driver):
    base, ids, _ = served
    load(driver, f"{base}/runs/{ids['run']}")
    until(driver, lambda b: traces(b, "#system .chart"), "system charts")
    (cpu,) = traces(driver, "#system .chart")
    assert cpu["names"] == ["rank 0 (node0)", "rank 1 (node0)",
                            "rank 2 (&lt;img src=x onerror=alert(9)&gt;)"]
    assert cpu["points"] == [8, 8, 8]
    view = driver.find_element("id", "system-view")
    assert view.is_displayed()
    js(driver, "const s = document.getElementById('system-view'); s.value = 'stats';"
               "s.dispatchEvent(new Event('change'));")
    until(driver, lambda b: js(b, "return document.getElementById('system').dataset.view")
          == "stats", "min/mean/max drawn")
    (cpu,) = traces(driver, "#system .chart")
    assert cpu["names"] == ["min", "max", "mean"] and cpu["points"] == [8, 8, 8]
    ys = js(driver, "return document.querySelector('#system .chart').data.map(t => t.y)")
    assert ys == [[float(i) for i in range(8)], [20.0 + i for i in range(8)],
                  [10.0 + i for i in range(8)]]
    assert "system=stats" in driver.current_url
    assert text(driver, "#system-note") == "per bucket of 5 s, across 3 ranks"
    load(driver, driver.current_url)  # the address keeps the choice
    until(driver, lambda b: js(b, "return document.getElementById('system')?.dataset.view")
          == "stats", "stats again")
    no_alert(driver)

    load(driver, f"{base}/runs/{ids['single']}")  # one process: as before, one line, no choice
    until(driver, lambda b: traces(b, "#system .chart"), "system chart")
    (cpu,) = traces(driver, "#system .chart")
    assert cpu["n"] == 1 and cpu["points"] == [4]
    assert not driver.find_element("id", "system-view").is_displayed()
    no_console_errors(driver)


def test_live_run_gains_readings_in_both_views(served, driver):
    base, ids, dbpath = served

    async def sample(i: int) -> None:
        client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
        try:
            for rank in range(2):
                await write_sample(client, ids["live"], {"cpu_percent": 10.0 * rank + i},
                                   time=START + timedelta(seconds=5 * i), rank=rank, host="n")
        finally:
            await client.close()

    points = "return document.querySelector('#system .chart').data.map(t => t.x.length)"
    load(driver, f"{base}/runs/{ids['live']}?poll=0.3")
    until(driver, lambda b: traces(b, "#system .chart"), "system chart")
    assert js(driver, points) == [4, 4]
    asyncio.run(sample(4))
    until(driver, lambda b: js(b, points) == [5, 5], "a new reading per rank")
    js(driver, "const s = document.getElementById('system-view'); s.value = 'stats';"
               "s.dispatchEvent(new Event('change'));")
    until(driver, lambda b: js(b, "return document.getElementById('system').dataset.view")
          == "stats", "min/mean/max drawn")
    assert js(driver, points) == [5, 5, 5]
    asyncio.run(sample(5))
    until(driver, lambda b: js(b, points) == [6, 6, 6], "a new bucket")
    means = js(driver, "return document.querySelector('#system .chart').data[2].y")
    assert means == [5.0 + i for i in range(6)]
    no_alert(driver)
    no_console_errors(driver)
