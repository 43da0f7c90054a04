#!/usr/bin/env python3
"""W1 (one run, 10 float metrics per step) through sqltrack and the trackers people use instead.

    python benchmarks/peers.py [--steps N] [--rounds R] [--peer-python PATH] [--pg-dsn DSN]

Peers: MLflow (tracking store on SQLite, and on PostgreSQL when its driver is
there), Aim (its own repository), trackio (its local store, background writer),
each when importable by ``--peer-python`` (default: this interpreter; install
them with ``pip install -e '.[bench-peers]'``, or into a separate venv when they
conflict with this one, and pass its python). Never part of the tests or CI.

Every case runs in a fresh process (``peers.py --worker CASE DIR STEPS``) that sets
itself up untimed (imports, store, run, one warm-up step), then times the loop of
``STEPS`` logging calls plus the tracker's own finish (flush, end of run), and
prints µs per step. Cases are interleaved in rounds; medians are reported. Each
peer is compared with the sqltrack case of the same kind (a peer that writes
before returning with sqltrack write-through, a background writer with sqltrack
buffered): ratio = peer / sqltrack, so 10x means the peer takes ten times longer.
Results go to ``benchmarks/PEERS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_MD = HERE / "PEERS.md"
NAMES = tuple(f"m{i}" for i in range(10))
DEFAULT_PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


# -- workers (run in their own process) ----------------------------------------------
def _steps(count: int) -> list[dict]:
    import random

    rand = random.Random(0)
    return [{name: rand.random() for name in NAMES} for _ in range(count + 1)]


def _loop(log, finish, steps: list[dict]) -> float:
    log(steps[0], 0)
    start = time.perf_counter()
    for step in range(1, len(steps)):
        log(steps[step], step)
    finish()
    return time.perf_counter() - start


def work_sqltrack(directory: str, count: int, buffered: bool, pg: dict | None) -> float:
    import sqltrack_sync

    if pg is None:
        kwargs = {"engine": "sqlite", "dbpath": os.path.join(directory, "sqltrack.db")}
    else:
        kwargs = {"engine": "postgres", **pg}
    client = sqltrack_sync.Client(**kwargs, buffered=buffered)
    run = sqltrack_sync.Experiment(client, name="peers").get_run()
    run.start()

    def finish() -> None:
        # The whole end of the run, as for the peers (end_run, close, finish): the
        # buffered rows written, the run stopped (status, time), the client closed.
        run.flush()
        run.stop()
        client.close()

    return _loop(lambda m, s: run.add_metrics(m, step=s), finish, _steps(count))


def work_mlflow(directory: str, count: int, uri: str) -> float:
    import logging

    logging.disable(logging.WARNING)
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("peers-" + uuid.uuid4().hex[:8])
    mlflow.start_run()
    return _loop(lambda m, s: mlflow.log_metrics(m, step=s), mlflow.end_run, _steps(count))


def work_aim(directory: str, count: int) -> float:
    from aim import Run

    run = Run(repo=os.path.join(directory, "aim"), experiment="peers",
              system_tracking_interval=None, capture_terminal_logs=False)
    return _loop(lambda m, s: run.track(m, step=s), run.close, _steps(count))


def work_trackio(directory: str, count: int) -> float:
    import trackio

    trackio.init(project="peers-" + uuid.uuid4().hex[:8], embed=False,
                 auto_log_cpu=False, auto_log_gpu=False)
    return _loop(lambda m, s: trackio.log(m, step=s), trackio.finish, _steps(count))


def worker_main(case: str, directory: str, count: int, pg: dict | None) -> float:
    os.environ.setdefault("TRACKIO_DIR", os.path.join(directory, "trackio"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if case == "sqltrack":
        return work_sqltrack(directory, count, False, None)
    if case == "sqltrack-buffered":
        return work_sqltrack(directory, count, True, None)
    if case == "sqltrack-pg":
        return work_sqltrack(directory, count, False, pg)
    if case == "mlflow":
        return work_mlflow(directory, count, f"sqlite:///{directory}/mlflow.db")
    if case == "mlflow-pg":
        return work_mlflow(directory, count, mlflow_pg_uri(pg or {}))
    if case == "aim":
        return work_aim(directory, count)
    if case == "trackio":
        return work_trackio(directory, count)
    raise SystemExit(f"unknown case {case}")


def mlflow_pg_uri(pg: dict) -> str:
    """An SQLAlchemy URL (psycopg 3 driver) of MLflow's own schema beside sqltrack's."""
    from urllib.parse import quote

    user, host = pg.get("user", "postgres"), pg.get("host", "127.0.0.1")
    port, dbname = pg.get("port", "5432"), pg.get("dbname", "postgres")
    options = quote(f"-csearch_path={pg['schema']}_mlflow")
    return f"postgresql+psycopg://{user}@{host}:{port}/{dbname}?options={options}"


# -- the cases, and the parent ---------------------------------------------------------
#: case -> (label, the module it needs, the sqltrack case it is compared with, engine)
CASES = {
    "sqltrack": ("sqltrack write-through (blocking API), SQLite", None, None, "sqlite"),
    "sqltrack-buffered": ("sqltrack buffered (blocking API), SQLite", None, None, "sqlite"),
    "sqltrack-pg": ("sqltrack write-through (blocking API), PostgreSQL", None, None, "postgres"),
    "mlflow": ("MLflow {version}, SQLite store", "mlflow", "sqltrack", "sqlite"),
    "mlflow-pg": ("MLflow {version}, PostgreSQL store", "mlflow", "sqltrack-pg", "postgres"),
    "aim": ("Aim {version}", "aim", "sqltrack", "sqlite"),
    "trackio": ("trackio {version} (background writer)", "trackio", "sqltrack-buffered",
                "sqlite"),
}


def peer_version(python: str, module: str) -> str | None:
    """The version of ``module`` under ``python``, None when it is not importable."""
    code = (f"import importlib.metadata as m, {module}; "
            f"print(m.version({module!r}))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    return out.stdout.strip() if out.returncode == 0 else None


def run_case(case: str, python: str, steps: int, pg: dict | None) -> float:
    """µs per step of one case in a fresh process and a fresh directory."""
    directory = tempfile.mkdtemp(prefix=f"sqltrack-peers-{case}-")
    try:
        command = [python, str(Path(__file__).resolve()), "--worker", case, directory,
                   str(steps), json.dumps(pg)]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SQLTRACK_")}
        out = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environ,
                             cwd=directory)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
        return float(out.stdout.strip().splitlines()[-1]) / steps * 1e6
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def pg_params(dsn: str) -> tuple[dict | None, str | None]:
    """Connection keywords of a fresh schema for the sqltrack PostgreSQL case, or why not."""
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - reported as n/a
        return None, str(error).strip().splitlines()[0]
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    schema = "sqltrack_peers_" + uuid.uuid4().hex[:8]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}_mlflow"')
    return {**params, "schema": schema}, None


def drop_schema(dsn: str, pg: dict | None) -> None:
    if pg:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            for schema in (pg["schema"], pg["schema"] + "_mlflow"):
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-python", default=sys.executable,
                        help="the interpreter that has the peers installed")
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN)
    parser.add_argument("--output", type=Path, default=PEERS_MD)
    args = parser.parse_args(argv)
    load_start, started = os.getloadavg()[0], time.time()
    pg, pg_error = pg_params(args.pg_dsn)
    labels, skipped, pythons = {}, {}, {}
    for case, (label, module, _, engine) in CASES.items():
        python = sys.executable if module is None else args.peer_python
        version = "" if module is None else peer_version(python, module)
        if version is None:
            skipped[case] = f"{module} not installed"
        elif engine == "postgres" and pg is None:
            skipped[case] = f"no PostgreSQL: {pg_error}"
        elif case == "mlflow-pg" and peer_version(python, "psycopg") is None:
            skipped[case] = "psycopg not installed beside mlflow"
        labels[case] = label.format(version=version or "")
        pythons[case] = python
    samples: dict[str, list[float]] = {c: [] for c in CASES if c not in skipped}
    try:
        for number in range(args.rounds):
            order = list(samples)
            order = order[number % len(order):] + order[: number % len(order)]
            for case in order:
                if case in skipped:
                    continue
                print(f"round {number + 1}: {case} ...", file=sys.stderr, flush=True)
                try:
                    samples[case].append(run_case(case, pythons[case], args.steps, pg))
                except Exception as error:  # noqa: BLE001 - reported in the table
                    skipped[case] = f"failed: {error}"
    finally:
        drop_schema(args.pg_dsn, pg)
    text = report(args, labels, samples, skipped, load_start, started)
    print(text)
    args.output.write_text(text, encoding="utf-8")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


def git_state() -> str:
    """The measured tree's commit (``-dirty`` with uncommitted changes), or "unknown"."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                             capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def report(args, labels, samples, skipped, load_start, started) -> str:
    medians = {c: statistics.median(v) for c, v in samples.items() if v and c not in skipped}
    command = "python benchmarks/peers.py" + "".join(" " + a for a in sys.argv[1:])
    lines = [
        "# sqltrack and its peers, side by side (W1)", "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, "
        f"{time.time() - started:.0f} s, tree {git_state()}). Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared machine, "
        f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end: read "
        "ratios, not absolute times).", "",
        f"One run, 10 float metrics per step, {args.steps} steps, {args.rounds} interleaved "
        "rounds, each case in a fresh process; the timed part is the logging loop plus the "
        "tracker's finish (flush / end of run). Median µs per step; ratio = peer / the "
        "sqltrack case of the same kind (higher: the peer is slower).", "",
        "| case | µs/step | compared with | ratio |", "|---|---:|---|---:|",
    ]
    for case, (_, _, against, _) in CASES.items():
        if case in skipped or case not in medians:
            lines.append(f"| {labels[case]} | n/a ({skipped.get(case, 'no sample')}) | | |")
            continue
        if against is None:
            lines.append(f"| {labels[case]} | {medians[case]:,.1f} | | |")
        elif against in medians:
            ratio = medians[case] / medians[against]
            lines.append(f"| {labels[case]} | {medians[case]:,.1f} | {labels[against]} | "
                         f"{ratio:,.1f}x |")
        else:
            lines.append(f"| {labels[case]} | {medians[case]:,.1f} | {labels[against]} | n/a |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _, _, case, directory, count, pg_json = sys.argv[:6]
        print(worker_main(case, directory, int(count), json.loads(pg_json)))
        sys.exit(0)
    sys.exit(main())
