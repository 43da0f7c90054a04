"""Helpers of the integration tests (tests/integrations/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .helpers import read_raw

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def child_env(client_kwargs: dict[str, Any]) -> dict[str, str]:
    """A child's environment: SQLTRACK_DSN_* for the test database, nothing else of ours."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SQLTRACK_DSN_", "SQLTRACK_EXPERIMENT_", "SQLTRACK_RUN_"))}
    env.pop("SQLTRACK_CONFIG_PATH", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    env.update({f"SQLTRACK_DSN_{k.upper()}": str(v) for k, v in client_kwargs.items()})
    return env


def run_example(
    name: str, client_kwargs: dict[str, Any], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with the test database's settings."""
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args],
                          env=child_env(client_kwargs), capture_output=True, text=True,
                          timeout=240)


def sigterm_after_rows(name: str, client_kwargs: dict[str, Any], rows: int,
                       *args: str) -> tuple[int, str]:
    """Start ``examples/<name>``, SIGTERM it once ``rows`` metric rows are written;
    return its exit status and stderr."""
    child = subprocess.Popen([sys.executable, str(EXAMPLES / name), *args],
                             env=child_env(client_kwargs), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, f"the child never logged {rows} rows"
            try:
                count = read_raw(client_kwargs, "SELECT COUNT(*) FROM metrics")[0][0]
            except Exception:  # noqa: BLE001 - the child has not made the tables yet
                count = 0
            if count >= rows:
                break
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    return child.returncode, err
