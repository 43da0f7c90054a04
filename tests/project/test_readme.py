"""The README's Python snippets run as written, one after the other, on both engines.

The snippets build on each other (the blocking API, then the async API, then
DataFrames read what the async snippet logged), so they run in that order in
one folder, each as its own script, exactly as a newcomer would paste them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.helpers import json_value, read_raw

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The database every snippet uses; on PostgreSQL the test puts its own there.
SQLITE_SETTINGS = 'engine="sqlite", dbpath="runs.db"'

pytestmark = pytest.mark.usefixtures("clean_env")


def python_blocks() -> list[str]:
    """Every ```python block of the README, in order."""
    return re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def snippets() -> dict[str, str]:
    """The three snippets that build on each other, by name."""
    found: dict[str, str] = {}
    for block in python_blocks():
        if "sqltrack.Client(" in block:
            found.setdefault("blocking", block)
        elif "analysis." in block:
            found.setdefault("dataframes", block)
        elif "sqltrack.AsyncClient(" in block:
            found.setdefault("async", block)
    assert list(found) == ["blocking", "async", "dataframes"], list(found)
    return found


def for_engine(block: str, client_kwargs: dict[str, Any]) -> str:
    """The snippet pointed at the test's database (SQLite: ./runs.db as written)."""
    assert SQLITE_SETTINGS in block, block
    if client_kwargs["engine"] == "sqlite":
        return block
    return block.replace(SQLITE_SETTINGS, f"**{client_kwargs!r}")


def test_snippets_run_in_sequence(client_kwargs, tmp_path):
    for name, block in snippets().items():
        script = tmp_path / f"readme_{name}.py"
        script.write_text(for_engine(block, client_kwargs), encoding="utf-8")
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"README snippet {name!r} failed:\n{done.stderr}"
        assert "Traceback" not in done.stderr and "Task was destroyed" not in done.stderr
        if name == "dataframes":
            # the frames hold what the async snippet logged
            assert "COMPLETED" in done.stdout and "0.1" in done.stdout, done.stdout

    kw = dict(client_kwargs)
    if kw["engine"] == "sqlite":
        kw["dbpath"] = str(tmp_path / "runs.db")
    rows = read_raw(kw, "SELECT r.id, r.status, r.args, r.tags FROM runs r "
                        "JOIN experiments e ON e.id = r.experiment_id WHERE e.name = %s",
                    ["resnet"])
    assert len(rows) == 1
    run_id, status, args, tags = rows[0]
    assert (status, json_value(args), json_value(tags)) == (
        "COMPLETED", {"lr": 0.1, "depth": 50}, {"best": True})
    assert read_raw(kw, "SELECT COUNT(*), MIN(train_top1) FROM metrics WHERE run_id = %s",
                    [run_id]) == [(90, 0.8)]


def test_negated_tag_filters_of_the_readme(client_kwargs):
    """``tags`` is NULL for a run without tags: the README's coalesce filters keep it."""
    import asyncio

    import sqltrack

    async def seed() -> tuple[int, int]:
        client = sqltrack.AsyncClient(**client_kwargs)
        exp = await sqltrack.AsyncExperiment.create(client, name="tags")
        plain, best = await exp.get_run(), await exp.get_run()
        await best.add_tags("best")
        await client.close()
        return plain.id, best.id

    plain, best = asyncio.run(seed())
    assert read_raw(client_kwargs, "SELECT tags FROM runs WHERE id = %s", [plain]) == [(None,)]
    dialect = "PostgreSQL" if client_kwargs["engine"] == "postgres" else "SQLite"
    match = re.search(r"`(WHERE NOT coalesce\([^`]*)` on " + dialect, README)
    assert match, f"README has no negated tag filter for {dialect}"
    where = match.group(1)
    assert read_raw(client_kwargs, f"SELECT id FROM runs {where}") == [(plain,)]
    naive = {"postgres": "WHERE NOT tags ? 'best'",
             "sqlite": "WHERE NOT json_extract(tags, '$.best')"}[client_kwargs["engine"]]
    assert read_raw(client_kwargs, f"SELECT id FROM runs {naive}") == []  # why coalesce
    assert read_raw(client_kwargs, "SELECT id FROM runs WHERE id = %s", [best]) == [(best,)]


def test_ci_runs_the_readmes_test_commands_exactly_each_on_its_own_line():
    """``.ci/run`` calls the README's test commands as written, one per line, so
    ``set -e`` stops it at the first that fails (``a && b`` would not)."""
    match = re.search(r"Run the tests.*?```sh\n(.*?)```", README, flags=re.S)
    assert match, "README has no test command block"
    commands = [line for line in match.group(1).splitlines() if line.strip()]
    assert commands and not any("&&" in line for line in commands)
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "set -euo pipefail" in script
    start = script.index(commands[0])
    assert script[start:start + len(commands)] == commands
