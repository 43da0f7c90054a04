"""How fast ``sqltrack ui`` pages render: 1,000-run tables, a 100,000-step run, a live page.

    python benchmarks/ui_render.py [--runs 1000] [--steps 100000] [--rounds 5]

Also: the runs table searched without SQL (``?search=even arg0=0.3``), and the page of a
run of 40 metrics (four prefixes: four sections of ten charts, 1,000 steps each).

Seeds a temporary SQLite database (one experiment of ``--runs`` runs with eight
args and four metrics of a few steps each, one RUNNING run of ``--steps`` steps
of two metrics), starts ``sqltrack ui``
on a free port, and loads each page in headless Chromium (``/usr/bin/chromium``
through ``/usr/bin/chromedriver``, the ``selenium`` package of the test extra).
A page is rendered when its script has drawn everything (the runs table filled,
every plotly chart drawn) and set ``<body data-rendered>``; the runs table is
timed with its default columns and with 20 chosen ones (eight args, last/min/max
of four metrics), and the long run's page is live (it polls for new points, and
the poll's own request, new points only, is timed too); the time reported is
the page's own ``performance.now()`` at that moment, i.e. milliseconds from the
start of navigation, server queries and downsampling included. The first load
is cold (plotly.min.js not cached yet); the median is over the other rounds.
The JSON API's own times (server only) are measured too, with httpx.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import sqltrack

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


async def seed(path: str, runs: int, steps: int) -> dict[str, int]:
    """One experiment of ``runs`` short runs, one run of ``steps`` steps; their ids."""
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=path)
    try:
        async with client:
            wide = await sqltrack.AsyncExperiment.create(client, name="many-runs")
            await (await wide.get_run()).add_metrics(
                {"loss": 1.0, "acc": 0.0, "lr_now": 0.1, "grad_norm": 1.0}, step=0)
            rows = []
            for index in range(runs):
                run = await wide.get_run()
                await run.add_tags("even" if index % 2 == 0 else "odd")
                await run.set_args({f"arg{k}": (index * (k + 3)) % 17 / 10 for k in range(8)})
                rows += [(run.id, step, 0.0, 1 / (step + 1 + index % 7), step / 5,
                          0.1 / (step + 1), (index % 11) / (step + 1)) for step in range(5)]
            await client.executemany(
                "INSERT INTO metrics (run_id, step, progress, loss, acc, lr_now, grad_norm) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            long = await sqltrack.AsyncExperiment.create(client, name="long-run")
            run = await long.get_run()
            await run.set_status("RUNNING")  # its page polls for new points
            await run.add_metrics({"loss": 2.0, "acc": 0.0}, step=0)
            rows = [
                (run.id, step, step / steps, 2 * math.exp(-step / 20_000) + 0.05 * math.sin(step),
                 1 - math.exp(-step / 30_000))
                for step in range(1, steps)
            ]
            await client.executemany(
                "INSERT INTO metrics (run_id, step, progress, loss, acc) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            many = await long.get_run()
            names = [f"{prefix}__m{k}" for prefix in ("train", "val", "eval", "gpu")
                     for k in range(10)]
            await many.add_metrics(dict.fromkeys(names, 0.0), step=0)
            await client.executemany(
                f"INSERT INTO metrics (run_id, step, progress, {', '.join(names)}) VALUES "
                f"(?, ?, ?, {', '.join('?' * len(names))})",
                [(many.id, step, step / 1000, *(math.sin(step / (k + 5)) for k in range(40)))
                 for step in range(1, 1000)])
        return {"experiment": wide.id, "run": run.id, "many": many.id}
    finally:
        await client.close()


def start_server(dbpath: str) -> tuple[subprocess.Popen, str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sqltrack", "--engine", "sqlite", "--dbpath", dbpath,
         "ui", "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"(http://\S+)/\?token=(\S+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"sqltrack ui did not start: {line!r}")
    return process, match.group(1), match.group(2)


def browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def render_ms(driver, url: str) -> float:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.rendered === 'true'")
    )
    return driver.execute_script("return window.sqltrackRenderMs")


def api_ms(url: str, rounds: int, token: str) -> float:
    times = []
    with httpx.Client(timeout=60, headers={"X-Sqltrack-Token": token}) as http:
        for _ in range(rounds):
            start = time.perf_counter()
            http.get(url).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqltrack-ui-bench-") as tmp:
        dbpath = str(Path(tmp) / "bench.db")
        start = time.perf_counter()
        ids = asyncio.run(seed(dbpath, args.runs, args.steps))
        print(f"seeded {args.runs} runs and a {args.steps}-step run "
              f"in {time.perf_counter() - start:.1f} s")
        process, base, token = start_server(dbpath)
        driver = browser(str(Path(tmp) / "profile"))
        try:
            driver.get(f"{base}/?token={token}")  # the page keeps it as a cookie
            chosen = "&".join(
                [f"col=args.arg{k}" for k in range(8)]
                + [f"col={agg}.{m}" for m in ("loss", "acc", "lr_now", "grad_norm")
                   for agg in ("last", "min", "max")])
            table = f"/experiments/{ids['experiment']}"
            run = f"/runs/{ids['run']}"
            search = "even+arg0%3D0.3"
            last = args.steps - 1
            cases = [
                (f"runs table, {args.runs} runs", table,
                 f"/api{table}/table"),
                (f"runs table, {args.runs} x 20 columns", f"{table}?{chosen}",
                 f"/api{table}/table?{chosen}"),
                (f"runs table, {args.runs} runs, searched", f"{table}?search={search}",
                 f"/api{table}/table?search={search}"),
                ("run page, 40 metrics in 4 sections", f"/runs/{ids['many']}",
                 f"/api/runs/{ids['many']}/curves?max_points=2000"),
                (f"live run page, {args.steps} steps", f"{run}?poll=60",
                 f"/api{run}/curves?max_points=2000"),
                ("  its poll (new points only)", None,
                 f"/api{run}/curves?max_points=2000&after_step={last}&after_progress=1"),
            ]
            print(f"\n{'page':<36} {'cold ms':>8} {'warm ms':>8} {'API ms':>8}")
            for name, page, api in cases:
                if page is None:
                    took = api_ms(base + api, args.rounds, token)
                    print(f"{name:<36} {'':>8} {'':>8} {took:>8.1f}")
                    continue
                loads = [render_ms(driver, base + page) for _ in range(args.rounds + 1)]
                warm = statistics.median(loads[1:])
                print(f"{name:<36} {loads[0]:>8.0f} {warm:>8.0f} "
                      f"{api_ms(base + api, args.rounds, token):>8.0f}")
        finally:
            driver.quit()
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
