"""The web page's features end to end: ``sqltrack ui`` on a SQLite file, headless Chromium.

One server and one browser for the module (the tests are quick that way): chosen
columns sorted and kept in the URL, a SQL filter, a refused write shown as a
one-line error, the SQL page, smoothing / log scale / wall time on the charts,
runs overlaid, a live run gaining the points the test writes, the
hyper-parameter plots, system metrics. Hostile metric and argument names are
shown as text and never run. See tests/ui/test_ui_browser.py for the browser set-up.
With ``SQLTRACK_UPDATE_SCREENSHOT=1`` the pictures of the README are rewritten in docs/.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest
from support.ui_server import serve_seeded
from test_ui_browser import (  # noqa: F401 - browser_binaries is a fixture
    TOKENS,
    WAIT,
    browser_binaries,
    chromium,
    no_console_errors,
)

import sqltrack

DOCS = Path(__file__).resolve().parents[2] / "docs"
HOSTILE_ARG = "<img src=x onerror=alert(1)>"
HOSTILE_METRIC = "<script>alert(2)</script>"
START = datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc)
SWEEP = [(0.1, 18, "sgd", "COMPLETED"), (0.03, 18, "adam", "COMPLETED"),
         (0.01, 34, "sgd", "FAILED"), (0.003, 34, "adam", "COMPLETED"),
         (0.001, 50, "adam", "RUNNING")]
STEPS = 150


async def _seed(dbpath: str) -> dict[str, int]:
    """A sweep of five runs (the last one RUNNING), fixed so pictures stay the same."""
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
    try:
        async with client:
            exp = await sqltrack.AsyncExperiment.create(client, name="resnet-sweep")
            ids: dict[str, int] = {"experiment": exp.id}
            for index, (lr, depth, optimizer, status) in enumerate(SWEEP):
                run = await exp.get_run()
                await run.set_args({"lr": lr, "depth": depth, "optimizer": optimizer,
                                    HOSTILE_ARG: index})
                await run.set_extras({"name": f"{optimizer}-lr{lr}-d{depth}", "metric_names": {
                    "train__loss": "train/loss", "val__accuracy": "val/accuracy",
                    "evil": HOSTILE_METRIC}})
                await run.set_tags("sweep")
                await run.set_started(START + timedelta(hours=index))
                noise = random.Random(index)
                rows = []
                for step in range(STEPS):
                    wobble = noise.gauss(0, 0.04)
                    speed = 30 + 400 * abs(math.log10(lr) + 2.2) / (depth / 18)
                    loss = 2.3 * math.exp(-step / speed) + 0.1 + wobble
                    accuracy = 0.95 - 0.85 * math.exp(-step / (speed * 0.8)) + wobble / 4
                    stamp = (START + timedelta(hours=index, seconds=20 * step)).isoformat()
                    rows.append((run.id, step, step / STEPS, loss, accuracy, step % 7, stamp))
                await run.add_metrics({"train__loss": 2.4, "val__accuracy": 0.1, "evil": 0,
                                       "time": START}, step=0)
                await client.executemany(
                    "INSERT OR REPLACE INTO metrics (run_id, step, progress, train__loss, "
                    "val__accuracy, evil, time) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                await run.set_status(status)
                await run.set_updated(START + timedelta(hours=index, seconds=20 * STEPS))
                ids[f"run{index}"] = run.id
            for second in range(0, 600, 30):  # system metrics of the first run
                stamp = (START + timedelta(seconds=second)).isoformat()
                for name, value in (("cpu_percent", 50 + 30 * math.sin(second / 90)),
                                    ("process_rss_bytes", 1.5e9 + 1e6 * second)):
                    await client.query("INSERT INTO system_metrics (run_id, time, name, value) "
                                       "VALUES (%s, %s, %s, %s)", [ids["run0"], stamp, name, value])
        return ids
    finally:
        await client.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, dict[str, int], str]]:
    yield from serve_seeded(tmp_path_factory, _seed)


@pytest.fixture(scope="module")
def driver(browser_binaries, tmp_path_factory):  # noqa: F811 - the imported fixture
    yield from chromium(tmp_path_factory.mktemp("chromium"), "1280,900",
                        "--enable-unsafe-swiftshader")


# -- helpers ------------------------------------------------------------------
def until(browser, condition, what: str = "the page"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(condition, message=what)


def load(browser, url: str) -> None:
    """Open ``url`` (with the server's token: the page keeps it as a cookie and drops it
    from the address) and wait until its script has drawn everything (or an error)."""
    base = re.match(r"http://[^/]+", url).group(0)
    browser.get(url + ("&" if "?" in url else "?") + "token=" + TOKENS[base])
    until(browser, lambda b: b.execute_script(
        "return ['true', 'error'].includes(document.body.dataset.rendered)"), url)


def js(browser, script: str, *args):
    return browser.execute_script(script, *args)


def column(browser, index: int) -> list[str]:
    cells = browser.find_elements("css selector", f"#table tbody tr td:nth-child({index})")
    return [cell.text for cell in cells]


def headers(browser) -> list[str]:
    return [h.text.strip(" ▲▼") for h in browser.find_elements("css selector", "#table thead th")]


def no_alert(browser) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018 - raises when no alert is open


def screenshot(browser, name: str, tmp_path) -> None:
    browser.save_screenshot(str(tmp_path / name))
    assert (tmp_path / name).stat().st_size > 10_000
    if os.environ.get("SQLTRACK_UPDATE_SCREENSHOT") == "1":
        DOCS.mkdir(exist_ok=True)
        browser.save_screenshot(str(DOCS / name))


def traces(browser, selector: str) -> list[dict]:
    """The plotly traces drawn in each chart under ``selector``: their kind, points, opacity."""
    return js(browser, """
        return [...document.querySelectorAll(arguments[0])].filter(p => p.data).map(p => ({
          n: p.data.length, points: p.data.map(t => (t.x || t.dimensions || []).length),
          opacity: p.data.map(t => t.opacity === undefined ? 1 : t.opacity),
          ylog: p.layout.yaxis && p.layout.yaxis.type, xtype: p.layout.xaxis && p.layout.xaxis.type,
          names: p.data.map(t => t.name), title: p.layout.title && p.layout.title.text,
          svg: p.querySelectorAll('.main-svg').length }));""", selector)


# -- the tests ----------------------------------------------------------------
def test_columns_chosen_sorted_and_filtered(served, driver, tmp_path):
    base, ids, _ = served
    load(driver, f"{base}/experiments/{ids['experiment']}")
    assert headers(driver)[-2:] == ["train/loss", "val/accuracy"]  # names as logged
    assert HOSTILE_METRIC in headers(driver)  # as text
    driver.find_element("css selector", "#columns summary").click()
    for key in ("args.lr", "args.optimizer", "min.train__loss", f"args.{HOSTILE_ARG}"):
        driver.find_element("css selector", f'#columns input[value="{key}"]').click()
    driver.find_element("css selector", "form.filters button[type=submit]").click()
    until(driver, lambda b: "col=args.lr" in b.current_url)
    load(driver, driver.current_url)
    shown = headers(driver)
    for label in ("args.lr", "args.optimizer", "min train/loss", f"args.{HOSTILE_ARG}"):
        assert label in shown
    lr = shown.index("args.lr") + 1
    driver.find_elements("css selector", "#table thead th button")[lr - 1].click()
    assert column(driver, lr) == ["0.001", "0.003", "0.01", "0.03", "0.1"]
    until(driver, lambda b: "sort=args.lr" in b.current_url and "order=ascending" in b.current_url)
    load(driver, driver.current_url)  # the URL keeps columns and order
    assert column(driver, headers(driver).index("args.lr") + 1)[0] == "0.001"
    no_alert(driver)
    screenshot(driver, "runs-table.png", tmp_path)

    box = driver.find_element("css selector", "#filter")
    box.clear()
    box.send_keys("json_extract(args, '$.optimizer') = 'adam' AND status = 'COMPLETED'\n")
    until(driver, lambda b: "filter=" in b.current_url)
    load(driver, driver.current_url)
    assert column(driver, 2) == [str(ids["run3"]), str(ids["run1"])]  # still sorted by lr
    assert "args.lr" in headers(driver)  # the columns stay chosen

    box = driver.find_element("css selector", "#filter")
    box.clear()
    box.send_keys("1 = 1); DELETE FROM runs; --\n")
    until(driver, lambda b: "DELETE" in parse_qs(urlparse(b.current_url).query)["filter"][0])
    load(driver, driver.current_url)
    error = driver.find_element("css selector", "#filter-error").text
    assert error == "the filter has a ')' without its '('"
    no_console_errors_but(driver, "400")


def no_console_errors_but(browser, *expected: str) -> None:
    """No console errors, except failed requests answering ``expected`` statuses."""
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and not any(f"status of {code}" in e["message"] for code in expected)]
    assert not severe, severe


def test_sql_page_table_chart_csv_and_refused_write(served, driver, tmp_path):
    base, ids, dbpath = served
    load(driver, f"{base}/sql")
    area = driver.find_element("css selector", "#sql-form textarea")
    area.send_keys("SELECT step, train__loss, val__accuracy FROM metrics WHERE run_id = "
                   f"{ids['run0']} ORDER BY step")
    driver.find_element("css selector", "#sql-form button").click()
    until(driver, lambda b: "q=SELECT" in b.current_url)
    load(driver, driver.current_url)
    assert headers(driver) == ["step", "train__loss", "val__accuracy"]
    assert len(column(driver, 1)) == STEPS
    until(driver, lambda b: [c["points"] for c in traces(b, "#sql-chart")] == [[STEPS]])
    js(driver, "const s = document.getElementById('sql-y'); s.value = '2';"
               "s.dispatchEvent(new Event('change'));")
    until(driver, lambda b: "val__accuracy" in traces(b, "#sql-chart")[0]["title"])
    href = driver.find_element("css selector", "#sql-csv").get_attribute("href")
    assert "format=csv" in href
    screenshot(driver, "sql-page.png", tmp_path)
    no_console_errors(driver)

    many = quote("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
                 "WHERE n < 500) SELECT n, zeroblob(3) AS b, "
                 "replace(hex(zeroblob(60000)), '0', 'x') AS long FROM c")
    load(driver, f"{base}/sql?q={many}")
    until(driver, lambda b: b.find_element("css selector", "#sql-meta").text)
    assert driver.find_element("css selector", "#sql-meta").text == (
        "104 rows (only the first 104 rows: the page holds 10 MB of values at most); "
        "104 long values cut")
    assert column(driver, 2)[:2] == ["\\x000000", "\\x000000"]

    load(driver, f"{base}/sql?q=DELETE+FROM+runs")
    error = driver.find_element("css selector", "#sql-error").text
    assert error.startswith("only queries can run here") and "\n" not in error
    load(driver, f"{base}/sql?q=SELECT+1%3B+DELETE+FROM+runs")
    assert "one statement" in driver.find_element("css selector", "#sql-error").text
    no_console_errors_but(driver, "400")


def test_charts_smoothing_log_scale_and_wall_time(served, driver, tmp_path):
    base, ids, _ = served
    load(driver, f"{base}/runs/{ids['run0']}")
    charts = traces(driver, "#charts .chart")
    assert sorted(c["title"] for c in charts) == sorted(
        ["train/loss", "val/accuracy", "&lt;script&gt;alert(2)&lt;/script&gt;"])
    assert all(c["n"] == 1 and c["opacity"] == [1] for c in charts)
    js(driver, "const s = document.getElementById('smoothing'); s.value = '0.9';"
               "s.dispatchEvent(new Event('input'));")
    until(driver, lambda b: all(c["n"] == 2 for c in traces(b, "#charts .chart")), "smoothed")
    assert all(c["opacity"] == [0.25, 1] for c in traces(driver, "#charts .chart"))  # raw faint
    driver.find_element("css selector", "#log-scale").click()
    until(driver, lambda b: all(c["ylog"] == "log" for c in traces(b, "#charts .chart")), "log")
    js(driver, "const s = document.getElementById('x-axis'); s.value = 'time';"
               "s.dispatchEvent(new Event('change'));")
    until(driver, lambda b: all(c["xtype"] == "date" for c in traces(b, "#charts .chart")), "time")
    assert "smoothing=0.9" in driver.current_url and "log=1" in driver.current_url
    system = traces(driver, "#system .chart")
    assert sorted(c["title"] for c in system) == ["cpu_percent", "process_rss_bytes"]
    assert all(c["points"] == [20] for c in system)
    js(driver, "const s = document.getElementById('x-axis'); s.value = 'step';"
               "s.dispatchEvent(new Event('change'));")
    driver.find_element("css selector", "#log-scale").click()
    until(driver, lambda b: all(c["ylog"] == "linear" for c in traces(b, "#charts .chart")))
    screenshot(driver, "screenshot.png", tmp_path)
    no_alert(driver)
    no_console_errors(driver)


def test_compare_overlay_and_hyper_parameters(served, driver, tmp_path):
    base, ids, _ = served
    load(driver, f"{base}/experiments/{ids['experiment']}?hp_metric=train__loss")
    until(driver, lambda b: int(js(b, "return document.getElementById('hparams')"
                                      ".dataset.drawn || 0")) == 5, "hyper-parameters")
    assert len(driver.find_elements("css selector", "#parcoords svg polyline")) == 5  # runs
    titles = driver.find_elements("css selector", "#parcoords svg .axis-title")
    assert [t.text for t in titles][1:] == ["depth", "lr", "optimizer", "train/loss"]
    assert titles[0].text.startswith("<img src=x")  # the hostile name, as text
    scatter = traces(driver, "#scatter")
    assert scatter[0]["points"] == [5]
    js(driver, "const s = document.getElementById('hp-arg'); s.value = 'optimizer';"
               "s.dispatchEvent(new Event('change'));")
    until(driver, lambda b: "optimizer" in traces(b, "#scatter")[0]["title"])
    driver.find_element("id", "hparams").location_once_scrolled_into_view  # noqa: B018
    screenshot(driver, "hyper-parameters.png", tmp_path)
    js(driver, "window.scrollTo(0, 0)")

    for box in driver.find_elements("css selector", "#table tbody input[type=checkbox]")[:4]:
        box.click()
    driver.find_element("css selector", "#compare button").click()
    until(driver, lambda b: "/compare?" in b.current_url)
    load(driver, driver.current_url)
    charts = traces(driver, "#chart .chart")
    assert len(charts) == 3 and all(c["n"] == 4 for c in charts)
    assert charts[0]["names"][0] == "sgd-lr0.1-d18"  # the run's name
    screenshot(driver, "compare.png", tmp_path)
    no_alert(driver)
    no_console_errors(driver)


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def test_run_colours_shared_and_compare_grouped_with_bands(served, driver, tmp_path):
    base, ids, _ = served
    runs = [ids[f"run{i}"] for i in range(5)]
    load(driver, f"{base}/experiments/{ids['experiment']}")
    table_colours = js(driver, """return Object.fromEntries([...document.querySelectorAll(
        '[data-run-color]')].map(c => [c.dataset.runColor,
        getComputedStyle(c.querySelector('.swatch')).backgroundColor]))""")
    expected = {str(r): PALETTE[r % len(PALETTE)] for r in runs}
    assert sorted(table_colours) == sorted(expected)

    def rgb(hex_colour: str) -> str:
        return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))

    assert table_colours == {k: rgb(v) for k, v in expected.items()}
    # The compare page: each run in its table colour on every chart, differing args shown.
    load(driver, f"{base}/compare?runs={','.join(map(str, runs))}&metrics=train__loss")
    drawn = js(driver, "return document.querySelector('#chart .chart').data.map("
                       "t => [t.name, t.line.color])")
    assert [c for _, c in drawn] == [PALETTE[r % len(PALETTE)] for r in runs]
    assert headers(driver)[:3] == ["", "run", "name"]
    assert f"args.{HOSTILE_ARG}" in headers(driver) and "args.lr" in headers(driver)
    legend = js(driver, "return document.querySelector('#chart .chart').layout.legend.orientation")
    assert legend == "h"
    # Grouped by optimizer: one mean line per group over its runs, with a min-max band.
    load(driver, f"{base}/compare?runs={','.join(map(str, runs))}&metrics=train__loss"
                 "&group=args.optimizer&band=minmax")
    assert "group=args.optimizer" in driver.current_url
    assert js(driver, "return document.querySelector('#group-form select[name=group]').value") \
        == "args.optimizer"
    lines = js(driver, """return document.querySelector('#chart .chart').data.map(t => ({
        name: t.name, fill: t.fill || null, hover: t.hovertemplate || null, n: t.y.length}))""")
    means = [t for t in lines if t["hover"]]
    assert [t["name"] for t in means] == ["sgd (2)", "adam (3)"]
    assert "sgd-lr0.1-d18" in means[0]["hover"] and "sgd-lr0.01-d34" in means[0]["hover"]
    assert sum(1 for t in lines if t["fill"] == "tonexty") == 2  # one band per group
    fills = js(driver, "return document.querySelector('#chart .chart').data"
                       ".filter(t => t.fill).map(t => t.fillcolor)")
    assert all(f.startswith("rgba(") and f.endswith(", 0.2)") for f in fills)  # see-through
    assert driver.find_element("css selector", "#chart figcaption").text == "2 groups"
    assert all(t["n"] == STEPS for t in lines)
    screenshot(driver, "compare-groups.png", tmp_path)
    no_alert(driver)
    no_console_errors(driver)


def test_live_run_gains_points(served, driver):
    base, ids, dbpath = served
    run_id = ids["run4"]
    load(driver, f"{base}/runs/{run_id}?poll=0.3")
    until(driver, lambda b: js(b, "return document.getElementById('live')?.dataset.state")
          == "polling", "live")
    loss = "#charts .chart[data-metric=train__loss]"
    assert traces(driver, loss)[0]["points"] == [STEPS]
    driver.execute_script("window.open(arguments[0])",
                          f"{base}/compare?runs={ids['run0']},{run_id}&poll=0.3")
    pages = driver.window_handles

    async def write(steps: range, status: str | None = None) -> None:
        client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
        try:
            run = await sqltrack.AsyncRun.create(client, ids["experiment"], run_id=run_id)
            for step in steps:
                await run.add_metrics({"train__loss": 0.5, "val__accuracy": 0.9}, step=step)
            if status:
                await run.set_status(status)
        finally:
            await client.close()

    asyncio.run(write(range(STEPS, STEPS + 5)))
    until(driver, lambda b: traces(b, loss)[0]["points"] == [STEPS + 5], "five new points")
    driver.switch_to.window(pages[-1])
    until(driver, lambda b: b.execute_script("return document.body.dataset.rendered") == "true")
    compared = "#chart .chart[data-metric=train__loss]"
    until(driver, lambda b: [c["points"] for c in traces(b, compared)] == [[STEPS, STEPS + 5]],
          "compare has the new points")
    asyncio.run(write(range(STEPS + 5, STEPS + 8), "COMPLETED"))
    until(driver, lambda b: js(b, "return document.getElementById('live')?.dataset.state")
          == "ended", "compare stops polling")
    assert [c["points"] for c in traces(driver, compared)] == [[STEPS, STEPS + 8]]
    driver.close()
    driver.switch_to.window(pages[0])
    until(driver, lambda b: js(b, "return document.getElementById('live').dataset.state")
          == "ended", "run page stops polling")
    assert traces(driver, loss)[0]["points"] == [STEPS + 8]
    assert driver.find_element("id", "run-status").text == "COMPLETED"
    no_console_errors(driver)


def test_search_without_sql_and_a_refused_filter_keeps_the_page(served, driver):
    base, ids, _ = served
    load(driver, f"{base}/experiments/{ids['experiment']}")
    box = driver.find_element("id", "run-search")
    box.send_keys("sweep depth=18 status=completed\n")
    until(driver, lambda b: "search=sweep" in b.current_url)
    load(driver, driver.current_url)
    assert column(driver, 2) == [str(ids["run0"]), str(ids["run1"])]
    assert "sweep depth=18 status=completed" in driver.find_element("id", "meta").text
    assert driver.find_element("id", "run-search").get_attribute("value") == (
        "sweep depth=18 status=completed")
    load(driver, f"{base}/experiments/{ids['experiment']}?search=lr%3D0.01")
    assert column(driver, 2) == [str(ids["run2"])]
    load(driver, f"{base}/experiments/{ids['experiment']}?search={quote(HOSTILE_METRIC)}")
    assert js(driver, "return document.getElementById('table').textContent") == "No runs match."
    no_alert(driver)

    # a refused filter: the table (searched), the column picker, the plots stay; one line why
    bad = "1 = 1); DELETE FROM runs; --"
    load(driver, f"{base}/experiments/{ids['experiment']}?search=adam&filter={quote(bad)}"
                 "&col=args.lr&hp_metric=train__loss")
    assert driver.find_element("id", "filter-error").text == (
        "the filter has a ')' without its '('")
    hint = driver.find_element("id", "filter-hint").text
    assert "not applied" in hint and "json_extract(args, '$.lr') = 0.1" in hint
    assert "\n" not in driver.find_element("id", "filter-problem").text
    assert column(driver, 2) == [str(ids["run1"]), str(ids["run3"]), str(ids["run4"])]
    assert "args.lr" in headers(driver)
    assert driver.find_element("id", "filter").get_attribute("value") == bad
    assert driver.find_elements("css selector", "#columns input[value='args.lr']")
    until(driver, lambda b: int(js(b, "return document.getElementById('hparams')"
                                      "?.dataset.drawn || 0")) == 3, "hyper-parameters")
    no_alert(driver)
    no_console_errors_but(driver, "400")


def test_runs_table_in_pages_sorted_by_the_server_and_grouped(served, driver):
    base, ids, _ = served
    runs = [ids[f"run{i}"] for i in range(5)]
    load(driver, f"{base}/experiments/{ids['experiment']}?per_page=2")
    assert driver.find_element("id", "pager-text").text == "page 1 of 3 (5 runs)"
    assert column(driver, 2) == [str(r) for r in runs[:2]]
    driver.find_element("link text", "next ›").click()
    until(driver, lambda b: "page=2" in b.current_url)
    load(driver, driver.current_url)
    assert column(driver, 2) == [str(r) for r in runs[2:4]]
    # A click on a header sorts every page on the server: back to page 1, lr descending.
    driver.find_element("css selector", "#table thead th[data-key='status'] button").click()
    until(driver, lambda b: parse_qs(urlparse(b.current_url).query).get("sort") == ["status"]
          and "page" not in parse_qs(urlparse(b.current_url).query))
    load(driver, driver.current_url)
    statuses = {ids[f"run{i}"]: SWEEP[i][3] for i in range(5)}
    ordered = sorted(runs, key=lambda r: statuses[r])
    assert column(driver, 2) == [str(r) for r in ordered[:2]]
    # Grouped by optimizer: a header row per group with its count over every page.
    load(driver, f"{base}/experiments/{ids['experiment']}?group=args.optimizer")
    groups = [b.text for b in driver.find_elements("css selector", ".group-row button")]
    assert groups == ["args.optimizer = adam (3)", "args.optimizer = sgd (2)"]
    toggle = driver.find_elements("css selector", ".group-row button")[0]
    assert "adam-lr0.03-d18" in toggle.get_attribute("title")
    toggle.click()
    hidden = js(driver, "return [...document.querySelectorAll('#table tbody tr[data-group]')]"
                        ".map(r => [r.dataset.group, r.hidden])")
    assert hidden == [["adam", True]] * 3 + [["sgd", False]] * 2
    assert js(driver, "return document.getElementById('group-by').value") == "args.optimizer"
    no_alert(driver)
    no_console_errors(driver)


def test_grouped_compare_polls_a_live_run(served, driver):
    """A grouped compare page follows a live run: its group's mean line gains the steps the
    run logs, the status cell follows, and polling ends with the run."""
    base, ids, dbpath = served

    async def start() -> int:
        client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
        try:
            exp = await sqltrack.AsyncExperiment.create(client, name="grouped-live")
            run = await exp.get_run()
            await run.set_args({"optimizer": "sgd", "lr": 0.5})
            await run.set_extras({"name": "live-sgd"})
            for step in range(10):
                await run.add_metrics({"train__loss": 1.0 - step / 100}, step=step)
            await run.set_status("RUNNING")
            return run.id
        finally:
            await client.close()

    async def write(run_id: int, steps: range, status: str | None = None) -> None:
        client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
        try:
            run = await sqltrack.AsyncRun.create(client, None, run_id=run_id)
            for step in steps:
                await run.add_metrics({"train__loss": 0.5}, step=step)
            if status:
                await run.set_status(status)
        finally:
            await client.close()

    live_id = asyncio.run(start())
    load(driver, f"{base}/compare?runs={ids['run0']},{live_id}&metrics=train__loss"
                 "&group=args.optimizer&poll=0.3")
    until(driver, lambda b: js(b, "return document.getElementById('live')?.dataset.state")
          == "polling", "a grouped page polls")
    chart = "#chart .chart[data-metric=train__loss]"

    def mean_points(browser) -> list[int]:
        return js(browser, "return document.querySelector(arguments[0]).data"
                           ".filter(t => t.hovertemplate).map(t => t.y.length)", chart)

    assert mean_points(driver) == [STEPS]  # run0's steps; the live run's 10 within them
    asyncio.run(write(live_id, range(STEPS, STEPS + 5)))
    until(driver, lambda b: mean_points(b) == [STEPS + 5], "the group's line gains 5 steps")
    names = js(driver, "return document.querySelector(arguments[0]).data"
                       ".filter(t => t.hovertemplate).map(t => t.name)", chart)
    assert names == ["sgd (2)"]  # replaced, not added again
    asyncio.run(write(live_id, range(STEPS + 5, STEPS + 7), "COMPLETED"))
    until(driver, lambda b: js(b, "return document.getElementById('live')?.dataset.state")
          == "ended", "polling ends with the run")
    assert mean_points(driver) == [STEPS + 7]
    status = driver.find_element("css selector", f"[data-run-status='{live_id}']").text
    assert status == "COMPLETED"
    no_console_errors(driver)
