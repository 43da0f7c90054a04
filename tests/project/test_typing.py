"""The typed public API: mypy --strict on sqltrack_sync/, examples/ and a typed user
script is clean, and a file of deliberate misuses gets exactly the expected errors.

Errors inside the core (``sqltrack/`` modules other than the public surface
checked here) are the core's own check; this test looks at the public surface
and at what a user of it sees.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TYPING = Path(__file__).resolve().parent / "typing"
#: Files whose mypy errors this test owns (the public surface and its users).
OWNED = ("sqltrack_sync/", "sqltrack/__init__.py", "sqltrack/_dual.py", "sqltrack/client/hooks.py",
         "sqltrack/_markers.py", "sqltrack/wandb.py",
         "examples/", "tests/project/typing/")
MARK = re.compile(r"  # E: ([a-z-]+)$")
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?:\d+:)? error: .*\[(?P<code>[a-z-]+)\]$")


def _mypy(*targets: str, cache: Path) -> list[tuple[str, int, str, str]]:
    """(path, line, code, text) of each mypy --strict error in the owned files."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--no-pretty", "--cache-dir", str(cache), *targets],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr + proc.stdout
    errors = []
    for text in proc.stdout.splitlines():
        match = ERROR.match(text)
        if match and match["path"].replace("\\", "/").startswith(OWNED):
            errors.append((match["path"], int(match["line"]), match["code"], text))
    return errors


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return ROOT / ".mypy_cache" if (ROOT / ".gitignore").exists() else tmp_path_factory.mktemp("m")


def test_facade_examples_and_documented_usage_are_clean(cache: Path) -> None:
    """Checked with the core too (``mypy sqltrack sqltrack_sync``): the two packages import
    each other, and mypy sees some names differently in that cycle."""
    errors = _mypy("sqltrack", "sqltrack_sync", "examples", "tests/project/typing/usage_ok.py",
                   cache=cache)
    assert [text for *_, text in errors] == []


def test_misuses_are_reported(cache: Path) -> None:
    path = TYPING / "usage_bad.py"
    expected = {
        (number, match[1])
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if (match := MARK.search(line))
    }
    assert len(expected) >= 7
    errors = _mypy("tests/project/typing/usage_bad.py", cache=cache)
    reported = {(line, code) for file, line, code, _ in errors if file.endswith("usage_bad.py")}
    assert reported == expected, "\n".join(text for *_, text in errors)


def test_regular_install_ships_py_typed(tmp_path: Path) -> None:
    """A built wheel (what a non-editable install gets) has both PEP 561 markers."""
    import importlib.util
    import zipfile

    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", *isolation,
         "-w", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("sqltrack-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"sqltrack/py.typed", "sqltrack_sync/py.typed", "sqltrack/_dual.py"} <= names


def test_dual_functions_show_both_clients_at_run_time() -> None:
    """``help()`` / ``inspect.signature`` name both clients (no wrapper hiding the Client)."""
    import inspect

    import sqltrack
    from sqltrack import _dual

    for name in ("run_add_tags", "mark_stale_runs", "setup", "experiment_set_name"):
        function = getattr(sqltrack, name)
        assert function is getattr(_dual, name)
        client = inspect.signature(function).parameters["client"]
        assert client.annotation == "AsyncClient | Client"
        assert not hasattr(function, "__wrapped__")
