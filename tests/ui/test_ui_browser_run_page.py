"""The run page for many metrics, and live (issue 22, Required 4 and 5), in headless Chromium.

A RUNNING run with a Transformers-like set of metrics: ``train/`` and ``val/`` names
logged in their column form (``train__loss``, mapped back by ``extras["metric_names"]``),
a column-form name without a mapping (``eval__f1``), a name without prefix, two values
logged once (``train_runtime``, ``total_flos``) and a large-valued curve. The page shows
collapsible sections by prefix, a search box that filters the charts, the single values in
a table (no empty chart), charts that follow the window's width, the mode bar clear of
the titles, short tick labels; live, the x axis follows new points, the details and the
metrics table refresh, and a run idle for longer than the setting shows "not responding"
without its stored status changing. See tests/ui/test_ui_browser.py for the browser set-up;
``SQLTRACK_UPDATE_SCREENSHOT=1`` rewrites docs/run-page-sections.png.
"""

from __future__ import annotations

import asyncio
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
from test_ui_browser_features import js, load, no_alert, screenshot, traces, until

import sqltrack

HOSTILE_METRIC = "<img src=x onerror=alert(3)>"
START = datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc)
STEPS = 60
NAMES = {"train__loss": "train/loss", "train__learning_rate": "train/learning_rate",
         "val__loss": "val/loss", "val__accuracy": "val/accuracy", "evil": HOSTILE_METRIC}


async def _seed(dbpath: str) -> dict[str, int]:
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
    try:
        async with client:
            exp = await sqltrack.AsyncExperiment.create(client, name="bert-finetune")
            run = await exp.get_run()
            await run.set_extras({"name": "bert-base", "metric_names": NAMES})
            await run.set_started(START)
            for step in range(STEPS):
                await run.add_metrics({
                    "train__loss": 2.0 / (1 + step), "train__learning_rate": 5e-5 * (1 - step / 99),
                    "val__loss": 2.1 / (1 + step), "val__accuracy": step / STEPS,
                    "eval__f1": step / (2 * STEPS), "epoch": step / 10,
                    "flos_per_step": 898_000_000 + 1_000 * step, "evil": step % 3,
                }, step=step, updated=None)
            await run.add_metrics({"train_runtime": 203.6, "total_flos": 898_123_456_789},
                                  step=STEPS - 1, updated=None)
            await run.set_status("RUNNING")
            await run.set_updated(START + timedelta(minutes=5))  # long ago: not responding
            return {"experiment": exp.id, "run": run.id}
    finally:
        await client.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, dict[str, int], str]]:
    yield from serve_seeded(tmp_path_factory, _seed)


@pytest.fixture(scope="module")
def driver(browser_binaries, tmp_path_factory):  # noqa: F811 - the imported fixture
    yield from chromium(tmp_path_factory.mktemp("chromium"), "1280,900",
                        "--enable-unsafe-swiftshader")


def sections(browser) -> list[tuple[str, list[str]]]:
    """Visible sections (summary text) -> the labels of their visible charts."""
    return js(browser, """
        const out = [];
        for (const d of document.querySelectorAll('#charts details.metric-section')) {
          if (d.hidden) continue;
          out.push([d.querySelector('summary .prefix').textContent,
            [...d.querySelectorAll('figure')].filter(f => !f.hidden).map(f => f.dataset.label)]);
        }
        return out;""")  # in page order (a dict from the driver has its keys sorted)


def values_table(browser) -> list[str]:
    return [r.text for r in browser.find_elements("css selector", "#values tbody tr")]


def test_run_page_for_many_metrics(served, driver, tmp_path):
    base, ids, _ = served
    load(driver, f"{base}/experiments/{ids['experiment']}")  # the runs table says it too
    assert [c.text for c in driver.find_elements("css selector", "#table tbody td")][3] == (
        "RUNNING not responding")
    load(driver, f"{base}/runs/{ids['run']}?stale=1e12")
    until(driver, lambda b: len(traces(b, "#charts .chart")) == 8, "eight charts")
    shown = dict(sections(driver))
    assert [name for name, _ in sections(driver)] == ["eval", "train", "val", "other"]
    assert sorted(shown["train"]) == ["train/learning_rate", "train/loss"]
    assert sorted(shown["val"]) == ["val/accuracy", "val/loss"]
    assert shown["eval"] == ["eval__f1"]
    assert sorted(shown["other"]) == sorted(["epoch", "flos_per_step", HOSTILE_METRIC])
    # no chart of a single point: those are values in a table
    assert all(c["points"] == [STEPS] for c in traces(driver, "#charts .chart"))
    assert values_table(driver) == [f"total_flos 898123456789 {STEPS - 1}",
                                    f"train_runtime 203.6 {STEPS - 1}"]
    assert not driver.find_elements("id", "not-responding")  # ?stale=1e12: not yet
    no_alert(driver)  # the hostile label is text
    screenshot(driver, "run-page-sections.png", tmp_path)

    # the search box filters charts and values, and the address keeps it
    box = driver.find_element("id", "metric-search")
    box.send_keys("loss")
    until(driver, lambda b: sections(b) == [["train", ["train/loss"]], ["val", ["val/loss"]]],
          "searched")
    assert values_table(driver) == []
    assert "search=loss" in driver.current_url
    box.clear()
    box.send_keys("FLOS")
    until(driver, lambda b: sections(b) == [["other", ["flos_per_step"]]], "searched again")
    assert values_table(driver) == [f"total_flos 898123456789 {STEPS - 1}"]
    js(driver, "const s = document.getElementById('metric-search'); s.value = '';"
               "s.dispatchEvent(new Event('input'));")
    until(driver, lambda b: len(sections(b)) == 4, "all again")

    # a section collapses and opens again, its charts at their full width
    summary = driver.find_element("css selector", "details[data-prefix=train] > summary")
    summary.click()
    assert js(driver, "return document.querySelector('details[data-prefix=train]').open") is False
    summary.click()
    width = "return document.querySelector('#charts .chart[data-metric=train__loss]')"
    until(driver, lambda b: abs(js(b, width + "._fullLayout.width") - js(
        b, width + ".getBoundingClientRect().width")) < 2, "full width after opening")

    # charts follow the window's width (two columns at 1280 px, one at 900 px)
    before = js(driver, width + "._fullLayout.width")
    fits = ("const p = document.querySelector('#charts .chart[data-metric=train__loss]');"
            "return Math.abs(p._fullLayout.width - p.getBoundingClientRect().width) < 2")
    driver.set_window_size(900, 900)
    until(driver, lambda b: js(b, fits) and js(b, width + "._fullLayout.width") > before + 100,
          "one column, wider")
    driver.set_window_size(1280, 900)
    until(driver, lambda b: js(b, fits) and abs(js(b, width + "._fullLayout.width") - before) < 2,
          "two columns again")

    # the mode bar never covers a title; tick labels are short and inside their chart
    overlaps = js(driver, """
        return [...document.querySelectorAll('#charts .chart')].filter(p => {
          const bar = p.querySelector('.modebar'); const title = p.querySelector('.gtitle');
          if (!bar || !title) return true;
          const a = bar.getBoundingClientRect(); const t = title.getBoundingClientRect();
          return !(a.right <= t.left || t.right <= a.left ||
                   a.bottom <= t.top || t.bottom <= a.top);
        }).length""")
    assert overlaps == 0
    ticks = js(driver, """
        const p = document.querySelector('#charts .chart[data-metric=flos_per_step]');
        const box = p.getBoundingClientRect();
        return [...p.querySelectorAll('.ytick text')].map(t => {
          const r = t.getBoundingClientRect();
          return [t.textContent, r.left >= box.left - 1 && r.right <= box.right + 1]; });""")
    assert ticks and all(inside for _, inside in ticks), ticks
    assert all(len(text) <= 8 for text, _ in ticks), ticks
    no_console_errors(driver)


def test_live_run_follows_new_points_and_says_not_responding(served, driver):
    base, ids, dbpath = served
    run_id = ids["run"]
    load(driver, f"{base}/runs/{run_id}?poll=0.3")
    until(driver, lambda b: js(b, "return document.getElementById('live')?.dataset.state")
          == "polling", "live")
    # idle since 2024, far over the default 10 minutes: shown, the status stays RUNNING
    # read in one script (each poll, every 0.3 s, replaces these elements: a found element
    # could be gone by the time its text is asked for)
    shown = "return [document.getElementById('not-responding')?.textContent, " \
        "document.querySelector('#run-status .status')?.textContent]"
    until(driver, lambda b: js(b, shown) == ["not responding", "RUNNING"], "not responding")
    loss = "#charts .chart[data-metric=train__loss]"
    x_end = "return document.querySelector(arguments[0])._fullLayout.xaxis.range[1]"
    assert js(driver, x_end, loss) < STEPS + 1

    async def write(steps: range, extra: dict | None = None, status: str | None = None) -> str:
        client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
        try:
            run = await sqltrack.AsyncRun.create(client, ids["experiment"], run_id=run_id)
            for step in steps:
                await run.add_metrics({"train__loss": 0.01, **(extra or {})}, step=step)
            if status:
                await run.set_status(status)
            (stored,) = await client.query("SELECT status FROM runs WHERE id = %s", [run_id])
            return stored[0]
        finally:
            await client.close()

    def metric_count(browser, name: str) -> str:  # the table is replaced at every poll
        return js(browser, """return [...document.querySelectorAll('#summary tbody tr')]
            .map(r => [...r.cells].map(c => c.textContent))
            .find(cells => cells[0] === arguments[0])[1]""", name)

    assert metric_count(driver, "train/loss") == str(STEPS)
    # a metric logged once is a value; once it has more points, it is a chart
    assert asyncio.run(write(range(STEPS, STEPS + 40), {"grad_norm": 1.5})) == "RUNNING"
    until(driver, lambda b: js(b, x_end, loss) >= STEPS + 39, "x axis follows the new points")
    until(driver, lambda b: metric_count(b, "train/loss") == str(STEPS + 40), "metrics table")
    until(driver, lambda b: not b.find_elements("id", "not-responding"), "updated: responding")
    updated = js(driver, "return document.getElementById('details').textContent")
    assert "2024-05-01 09:35:00" not in updated
    until(driver, lambda b: traces(b, "#charts .chart[data-metric=grad_norm]"), "grad_norm chart")
    assert not js(driver, "return document.getElementById('values').textContent"
                          ".includes('grad_norm')")

    asyncio.run(write(range(STEPS + 40, STEPS + 41), status="COMPLETED"))
    until(driver, lambda b: js(b, "return document.getElementById('live').dataset.state")
          == "ended", "stops polling")
    until(driver, lambda b: js(b, "return document.querySelector('#run-status .status')"
                                  ".textContent") == "COMPLETED", "the status refreshed")
    no_alert(driver)
    no_console_errors(driver)


def test_args_extras_and_summary_as_searchable_tables(served, driver):
    """Args, extras and the wandb summary as key/value tables (nested keys as ``a.b.c``)
    with a filter box each; hostile keys and values stay text."""
    base, ids, dbpath = served

    async def make() -> int:
        client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
        try:
            exp = await sqltrack.AsyncExperiment.create(client, name="kv-tables")
            run = await exp.get_run()
            await run.set_args({"optim": {"lr": 0.001, "betas": [0.9, 0.99],
                                          "sched": {"kind": "cosine"}},
                                "seed": 7, HOSTILE_METRIC: "<b>bold</b>"})
            await run.set_extras({"name": "kv", "host": {"gpu": "A100", "count": 8},
                                  "summary": {"best/accuracy": 0.91, "epochs": 3}})
            return run.id
        finally:
            await client.close()

    run_id = asyncio.run(make())
    load(driver, f"{base}/runs/{run_id}")

    def rows(table: str) -> list[list[str]]:
        return js(driver, """return [...document.querySelectorAll(arguments[0] + ' tbody tr')]
            .filter(r => !r.hidden).map(r => [...r.cells].map(c => c.textContent))""", table)

    assert rows("#args-table") == [[HOSTILE_METRIC, "<b>bold</b>"], ["optim.betas", "[0.9,0.99]"],
                                   ["optim.lr", "0.001"], ["optim.sched.kind", "cosine"],
                                   ["seed", "7"]]
    assert ["host.gpu", "A100"] in rows("#extras-table")
    assert ["host.count", "8"] in rows("#extras-table")
    assert not [r for r in rows("#extras-table") if r[0].startswith("summary")]  # its own table
    assert rows("#run-summary") == [["best/accuracy", "0.91"], ["epochs", "3"]]
    assert not driver.find_elements("css selector", "#details pre")  # no raw JSON
    box = driver.find_element("css selector", "#args-table-filter")
    box.send_keys("optim")
    until(driver, lambda b: len(rows("#args-table")) == 3, "filtered by key")
    box.clear()
    box.send_keys("COSINE")  # values too, any case
    until(driver, lambda b: rows("#args-table") == [["optim.sched.kind", "cosine"]], "by value")
    summary_box = driver.find_element("css selector", "#run-summary-filter")
    summary_box.send_keys("best")
    until(driver, lambda b: rows("#run-summary") == [["best/accuracy", "0.91"]], "summary")
    assert driver.find_elements("css selector", "#args-table img, #args-table b") == []
    no_alert(driver)
    no_console_errors(driver)


def test_x_axis_epoch_or_a_metric_and_one_x_range(served, driver):
    """The x axis: step, epoch (logged as a metric) or any metric, every chart drawn
    again; a zoom in one chart is applied to every chart, and "reset zoom" undoes it."""
    base, ids, _ = served
    load(driver, f"{base}/runs/{ids['run']}")
    options = js(driver, "return [...document.querySelectorAll('#x-axis option')]"
                         ".map(o => [o.value, o.textContent])")
    assert options[0][0] == "step" and ["metric:epoch", "epoch"] in options
    assert options.index(["metric:epoch", "epoch"]) < options.index(
        ["metric:val__accuracy", "val/accuracy"])  # epoch first among the metrics
    assert ["metric:evil", HOSTILE_METRIC] in options  # a name as text

    def choose(value: str) -> None:
        redraws = js(driver, "return Number(document.body.dataset.redraws || 0)")
        js(driver, "const s = document.getElementById('x-axis'); s.value = arguments[0];"
                   "s.dispatchEvent(new Event('change'))", value)
        until(driver, lambda b: js(b, "return Number(document.body.dataset.redraws)") > redraws,
              "charts drawn again")

    loss = "#charts .chart[data-metric=train__loss]"

    def first_x(selector: str) -> tuple[list, str]:
        return js(driver, "const p = document.querySelector(arguments[0]);"
                          "return [p.data[0].x.slice(0, 3), p.layout.xaxis.title.text]", selector)

    choose("metric:epoch")
    xs, title = first_x(loss)
    assert title == "epoch" and xs == [0, 0.1, 0.2]  # epoch = step / 10
    assert "x=metric%3Aepoch" in driver.current_url or "x=metric:epoch" in driver.current_url
    choose("metric:val__accuracy")
    xs, title = first_x("#charts .chart[data-metric=eval__f1]")
    assert title == "val/accuracy" and [round(x, 6) for x in xs] == [0, round(1 / STEPS, 6),
                                                                     round(2 / STEPS, 6)]
    choose("step")
    assert first_x(loss) == [[0, 1, 2], "step"]
    # One x range: zooming one chart zooms every chart.
    js(driver, "Plotly.relayout(document.querySelector(arguments[0]), "
               "{'xaxis.range[0]': 10, 'xaxis.range[1]': 20})", loss)
    until(driver, lambda b: js(b, "return document.body.dataset.xRange") == "10,20", "shared")
    ranges = js(driver, "return [...document.querySelectorAll('#charts .chart')]"
                        ".filter(p => p.layout).map(p => p.layout.xaxis.range)")
    assert len(ranges) >= 5 and all(r == [10, 20] for r in ranges)
    driver.find_element("id", "x-reset").click()
    until(driver, lambda b: js(b, "return document.body.dataset.xRange") == "auto", "reset")
    autos = js(driver, "return [...document.querySelectorAll('#charts .chart')]"
                       ".filter(p => p.layout).map(p => p.layout.xaxis.autorange)")
    assert autos and all(autos)
    no_alert(driver)
    no_console_errors(driver)


def test_a_runs_images_are_shown(served, driver):
    """Issue 23: images logged by the wandb-style module are files beside the SQLite
    database, referenced in the run's extras; the run page shows them with captions."""
    import numpy as np

    import sqltrack.wandb as wandb

    base, _, dbpath = served
    run = wandb.init(project="media", connection={"engine": "sqlite", "dbpath": dbpath},
                     quiet=True)
    pixels = np.zeros((16, 24, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255
    for step in range(2):
        wandb.log({"examples": [wandb.Image(pixels, caption=f"red {step}"),
                                wandb.Image(pixels[:8], caption=HOSTILE_METRIC)]}, step=step)
    wandb.finish()
    load(driver, f"{base}/runs/{run.id}")
    until(driver, lambda b: js(b, "return [...document.querySelectorAll('#media img')]"
                                  ".filter(i => i.complete && i.naturalWidth > 0).length") == 4,
          "the four images loaded")
    sizes = js(driver, "return [...document.querySelectorAll('#media img')]"
                       ".map(i => [i.naturalWidth, i.naturalHeight])")
    assert sorted(sizes) == [[24, 8], [24, 8], [24, 16], [24, 16]]
    captions = js(driver, "return [...document.querySelectorAll('#media figcaption')]"
                          ".map(c => c.textContent)")
    assert "step 1 · red 1" in captions and f"step 0 · {HOSTILE_METRIC}" in captions
    assert js(driver, "return document.querySelector('#media h3').textContent") == "examples"
    extras = js(driver, "return [...document.querySelectorAll('#extras-table tbody tr')]"
                        ".map(r => r.cells[0].textContent)")
    assert not [key for key in extras if key.startswith("media")]  # its own section
    no_alert(driver)
    no_console_errors(driver)
