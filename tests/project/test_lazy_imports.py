"""Start-up: what ``import sqltrack``, ``import sqltrack_sync`` and a one-step run load.

``import sqltrack`` loads only the error classes and ``import sqltrack_sync`` nothing
of the core (neither imports asyncio); every other public name is imported on first
access (PEP 562 ``__getattr__``). A one-step write-through run (a new database, a
run, one ``add_metrics``) imports none of the modules that only buffered mode, the
spool, ``sqltrack sync``, the schema upgrade of older databases, the CLI or the
analysis need; the PostgreSQL driver is imported only by a PostgreSQL client. Each
case runs in a fresh interpreter, since this test process has everything loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sqltrack
import sqltrack_sync

DRIVERS = ("psycopg", "psycopg_pool")
#: Never loaded by a write-through run (nor by either import).
HEAVY = (
    "sqltrack.metrics.buffer",
    "sqltrack.outage.spool",
    "sqltrack.copy.transfer",
    "sqltrack.read.queries",
    "sqltrack.analysis",
    "sqltrack.export",
    "sqltrack.model.maintenance",
    "sqltrack.cli",
    "sqltrack.ui",
    "sqltrack.integrations",
    "sqltrack.args",
    "sqltrack.schema.upgrade",
    "sqltrack_sync.transfer",
    "sqltrack_sync.analysis",
    "sqltrack_sync.export",
    "importlib.resources",
    "pandas",
    "polars",
)
PROGRAMS = {
    "async": """
import asyncio, json, sys
import sqltrack
loaded = [m for m in {watched!r} if m in sys.modules]
async def main():
    client = sqltrack.AsyncClient(**json.loads(sys.argv[1]))
    run = await (await sqltrack.AsyncExperiment.create(client, name="lazy")).get_run()
    await run.add_metrics({{"loss": 0.5}}, step=0)
    await client.close()
asyncio.run(main())
print(json.dumps([loaded, [m for m in {watched!r} if m in sys.modules]]))
""",
    "sync": """
import json, sys
import sqltrack_sync
loaded = [m for m in {watched!r} if m in sys.modules]
client = sqltrack_sync.Client(**json.loads(sys.argv[1]))
run = sqltrack_sync.Experiment(client, name="lazy").get_run()
run.add_metrics({{"loss": 0.5}}, step=0)
client.close()
print(json.dumps([loaded, [m for m in {watched!r} if m in sys.modules]]))
""",
}


def _python(code: str, *args: str) -> str:
    """The last stdout line of ``python -c code`` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code, *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("api", sorted(PROGRAMS))
def test_one_step_run_loads_no_heavy_module(engine, client_kwargs, clean_env, api) -> None:
    watched = (*DRIVERS, *HEAVY)
    code = PROGRAMS[api].format(watched=watched)
    after_import, after_run = json.loads(_python(code, json.dumps(client_kwargs)))
    assert after_import == []
    if engine == "sqlite":
        assert after_run == []
    else:  # the driver, and what it imports itself (importlib.metadata: .resources)
        assert [m for m in after_run if m.startswith("sqltrack")] == []
        assert set(DRIVERS) <= set(after_run)


@pytest.mark.parametrize(("package", "allowed"), [
    ("sqltrack", {"sqltrack", "sqltrack.errors"}),
    ("sqltrack_sync", {"sqltrack_sync"}),
])
def test_import_loads_next_to_nothing(package: str, allowed: set[str]) -> None:
    code = f"""
import json, sys
import {package}
print(json.dumps([sorted(m for m in sys.modules if m.split(".")[0] in ("sqltrack",
                  "sqltrack_sync", "asyncio", "psycopg", "aiosqlite", "sqlite3"))]))
"""
    (loaded,) = json.loads(_python(code))
    assert set(loaded) == allowed


def test_every_public_name_resolves_in_a_fresh_process() -> None:
    code = """
import json, sys
import sqltrack, sqltrack_sync
problems = []
for package in (sqltrack, sqltrack_sync):
    listed = set(dir(package))
    for name in package.__all__:
        if getattr(package, name, None) is None:
            problems.append(f"{package.__name__}.{name} does not resolve")
        if name not in listed:
            problems.append(f"{package.__name__}.{name} missing from dir()")
for package in (sqltrack, sqltrack_sync):  # as in 0.1.x, after a bare import
    if package.sigterm.register is None or "sigterm" not in dir(package):
        problems.append(f"{package.__name__}.sigterm")
if sqltrack.Client is not sqltrack_sync.Client or sqltrack.Run is not sqltrack_sync.Run:
    problems.append("sqltrack.Client/Run are not the blocking classes")
for name in ("no_such_name", "__wrapped__"):
    for package in (sqltrack, sqltrack_sync):
        if hasattr(package, name):
            problems.append(f"{package.__name__}.{name} should not exist")
print(json.dumps(problems))
"""
    assert json.loads(_python(code)) == []


def test_submodules_are_attributes_after_a_bare_import() -> None:
    code = """
import json
import sqltrack, sqltrack_sync
print(json.dumps([sqltrack.sigterm.__name__, sqltrack.analysis.__name__,
                  sqltrack_sync.runs.__name__]))
"""
    # the public names are the modules themselves (sqltrack.sigterm is 0.1.x's name)
    assert json.loads(_python(code)) == ["sqltrack.process.sigterm", "sqltrack.read.analysis",
                                         "sqltrack_sync.runs"]


def _type_checking_names(path: Path) -> set[str]:
    """Names imported under ``if TYPE_CHECKING:`` in a module."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for item in node.body:
                if isinstance(item, (ast.Import, ast.ImportFrom)):
                    names |= {a.asname or a.name for a in item.names}
    return names


@pytest.mark.parametrize("package", [sqltrack, sqltrack_sync])
def test_type_checkers_see_every_lazy_name(package) -> None:
    """The typed surface (imports under TYPE_CHECKING) matches what ``__getattr__`` serves."""
    typed = _type_checking_names(Path(package.__file__))
    served = set(package._LAZY) | set(getattr(package, "_SUBMODULES", ()))
    assert typed == served
    eager = {n for n in package.__all__ if n in vars(package) and n not in package._LAZY}
    assert set(package.__all__) <= served | eager
