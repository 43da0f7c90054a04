"""``sqltrack ui`` end to end: the real command serving a SQLite file, headless Chromium.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian's ``chromium``
and ``chromium-driver``). When they are missing the test installs them with
apt-get (as root), and otherwise fails saying how to install them: it never skips.
The run page's screenshot is saved in the test's tmp_path (the README's pictures
come from tests/ui/test_ui_browser_features.py).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support.ui_server import TOKENS, ui_server

import sqltrack

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOSTILE = "<script>alert(1)</script>"
WAIT = 30


def _missing() -> list[str]:
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]


def _apt_install() -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:  # package lists may be missing or stale
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    return (result.stdout + result.stderr)[-800:]


@pytest.fixture(scope="session")
def browser_binaries() -> None:
    """Chromium and chromedriver, installed with apt-get when missing (root only)."""
    if not _missing():
        return
    output = ""
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        output = _apt_install()
    if _missing():
        pytest.fail(
            f"the browser test needs {' and '.join(_missing())}: install Debian's packages "
            "with 'apt-get install -y chromium chromium-driver' (as root)"
            + (f"; apt-get said: {output}" if output else ""),
            pytrace=False,
        )


# -- the database and the server ----------------------------------------------
async def _seed(dbpath: str) -> dict[str, int]:
    """Fixed data (so the screenshot is the same every time): two runs, one hostile name."""
    start = datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc)
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=dbpath)
    try:
        async with client:
            exp = await sqltrack.AsyncExperiment.create(client, name="resnet-cifar10")
            await sqltrack.AsyncExperiment.create(client, name=HOSTILE)
            runs = []
            for index, (lr, status) in enumerate([(0.1, "COMPLETED"), (0.03, "FAILED")]):
                run = await exp.get_run()
                await run.set_args({"lr": lr, "depth": 18, "optimizer": "sgd"})
                await run.set_tags("baseline" if index else "best")
                await run.set_comment("lr sweep <b>not bold</b>")
                await run.set_created(start)
                await run.set_started(start)
                noise = random.Random(index)
                for step in range(400):
                    wobble = noise.gauss(0, 0.03)
                    loss = 2.3 * math.exp(-step / (90 + 60 * index)) + 0.15 + wobble
                    accuracy = 0.93 - 0.8 * math.exp(-step / (70 + 50 * index)) + wobble / 4
                    await run.add_metrics({"train_loss": loss, "val_accuracy": accuracy},
                                          step=step, progress=step / 400, updated=None)
                if not index:  # wandb's run.summary, as the wandb-style module keeps it
                    await run.set_extras({"summary": {"best_epoch": 390,
                                                      "val_accuracy": {"max": 0.95}}})
                await run.set_status(status)
                await run.set_updated(start + timedelta(minutes=47 + 13 * index))
                runs.append(run.id)
        return {"experiment": exp.id, "best": runs[0], "other": runs[1]}
    finally:
        await client.close()


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, dict[str, int]]]:
    """``sqltrack ui --port 0`` over a seeded SQLite file: (base URL, ids)."""
    dbpath = str(tmp_path / "ui.db")
    ids = asyncio.run(_seed(dbpath))
    with ui_server(dbpath) as base:
        yield base, ids


def chromium(user_data_dir: Path, window: str, *flags: str) -> Iterator[Any]:
    """A headless Chromium driven by chromedriver (browser log kept), quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", *flags,
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", f"--user-data-dir={user_data_dir}",
                 f"--window-size={window}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(WAIT)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def driver(browser_binaries, tmp_path):
    yield from chromium(tmp_path / "chromium", "1280,800")


# -- helpers ------------------------------------------------------------------
def wait_rendered(browser) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT).until(
        lambda b: b.execute_script(
            "return document.body.dataset.rendered === 'true' || "
            "!!document.querySelector('main .error')"
        )
    )
    errors = browser.find_elements("css selector", "main .error")
    assert not errors, errors[0].text


def drawn_traces(browser, selector: str) -> int:
    """Line paths drawn by plotly inside ``selector`` (an SVG path with data)."""
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' .main-svg .scatterlayer "
        "path.js-line')].filter(p => (p.getAttribute('d') || '').length > 20).length",
        selector,
    )


def column(browser, index: int) -> list[str]:
    cells = browser.find_elements("css selector", f"#table tbody tr td:nth-child({index})")
    return [cell.text for cell in cells]


def no_console_errors(browser) -> None:
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


# -- the test -----------------------------------------------------------------
def test_pages_in_headless_chromium(served, driver, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.support.ui import WebDriverWait

    base, ids = served

    # experiments list: the hostile name is shown as text, nothing runs
    driver.get(base + "/?token=" + TOKENS[base])  # the page keeps it as a cookie
    assert driver.current_url == base + "/"
    wait_rendered(driver)
    assert HOSTILE in column(driver, 2)
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - raises when no alert is open

    # runs table: two rows, sortable by clicking a header
    driver.get(f"{base}/experiments/{ids['experiment']}")
    wait_rendered(driver)
    assert driver.find_element("css selector", "h1").text == "resnet-cifar10"
    assert column(driver, 2) == [str(ids["best"]), str(ids["other"])]
    assert column(driver, 3) == ["COMPLETED", "FAILED"]
    assert column(driver, 5) == ["2024-05-01 10:17:00", "2024-05-01 10:30:00"]
    headers = driver.find_elements("css selector", "#table thead th button")
    assert [h.text for h in headers][-4:] == [
        "summary.best_epoch", "summary.val_accuracy.max", "train_loss", "val_accuracy"]
    headers[1].click()  # run: ascending, then descending
    headers[1].click()
    assert column(driver, 2) == [str(ids["other"]), str(ids["best"])]

    # filtered by status through the query string
    driver.get(f"{base}/experiments/{ids['experiment']}?status=FAILED")
    wait_rendered(driver)
    assert column(driver, 2) == [str(ids["other"])]

    # run page: details as text, both curves drawn by plotly
    driver.get(f"{base}/runs/{ids['best']}")
    wait_rendered(driver)
    assert "<b>not bold</b>" in driver.find_element("css selector", "#details").text
    summary = driver.find_element("css selector", "#run-summary-section")
    assert summary.is_displayed()
    assert [r.text for r in summary.find_elements("css selector", "tbody tr")] == [
        "best_epoch 390", "val_accuracy.max 0.95"]
    WebDriverWait(driver, WAIT).until(lambda b: drawn_traces(b, "#charts") == 2)
    driver.save_screenshot(str(tmp_path / "run.png"))
    assert (tmp_path / "run.png").stat().st_size > 10_000
    no_console_errors(driver)  # CSP, scripts and resources all fine

    # compare: select both runs on the experiment page, submit, two traces overlaid
    driver.get(f"{base}/experiments/{ids['experiment']}")
    wait_rendered(driver)
    for box in driver.find_elements("css selector", "#table tbody input[type=checkbox]"):
        box.click()
    driver.find_element("css selector", "#compare button").click()
    WebDriverWait(driver, WAIT).until(lambda b: "/compare?" in b.current_url)
    wait_rendered(driver)
    assert f"runs={ids['best']}%2C{ids['other']}" in driver.current_url
    # one chart per metric (two), each with both runs overlaid
    WebDriverWait(driver, WAIT).until(lambda b: drawn_traces(b, "#chart") == 4)
    driver.save_screenshot(str(tmp_path / "compare.png"))
    no_console_errors(driver)
