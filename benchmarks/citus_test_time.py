"""How much longer the library's PostgreSQL tests take through a Citus coordinator than
against a plain server (for ``.ci/run``'s choice): the same pytest selection, run one
after the other against each DSN, wall time printed.

    python benchmarks/citus_test_time.py PLAIN_DSN CITUS_DSN [PYTEST ARGS...]

Default selection: ``-k postgres tests/metrics tests/model tests/copy tests/ui``. The
Citus run sets ``SQLTRACK_TEST_PG_IS_CITUS=1`` (tests/conftest.py ``CITUS_DESELECTED``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["-k", "postgres", "tests/metrics", "tests/model", "tests/copy", "tests/ui"]


def timed(dsn: str, citus: bool, args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "SQLTRACK_TEST_PG_DSN": dsn}
    env.pop("SQLTRACK_TEST_CITUS_DSN", None)
    if citus:
        env["SQLTRACK_TEST_PG_IS_CITUS"] = "1"
    else:
        env.pop("SQLTRACK_TEST_PG_IS_CITUS", None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return time.monotonic() - start, last


def main() -> None:
    plain, citus, *args = sys.argv[1:]
    args = args or DEFAULT
    first, plain_result = timed(plain, False, args)
    print(f"plain server:      {first:7.1f} s  {plain_result}", flush=True)
    second, citus_result = timed(citus, True, args)
    print(f"Citus coordinator: {second:7.1f} s  {citus_result}")
    print(f"ratio {second / first:.2f} (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
