"""Files holding args and env are private: a new SQLite database, its ``-wal``/``-shm``
and the spool (with its ``.lock``) are created 0600 whatever the umask; an existing
file keeps its mode. Real files, on the pool's connection and on the spool."""

from __future__ import annotations

import os
import stat

import pytest

import sqltrack
from sqltrack.engines.sqlite_worker import create_private
from sqltrack.metrics import layout
from sqltrack.outage.spool import Spool


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_new_database_and_wal_files_are_0600(tmp_path, open_umask):
    path = tmp_path / "new.db"
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=str(path))
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="e")).get_run()
        await run.add_args({"token": "x"})
        await run.add_metrics({"loss": 0.5}, step=1)
        for suffix in ("", "-wal", "-shm"):
            assert os.path.exists(f"{path}{suffix}"), suffix
            assert mode(f"{path}{suffix}") == 0o600, suffix
    finally:
        await client.close()


async def test_existing_database_keeps_its_mode(tmp_path, open_umask):
    path = tmp_path / "shared.db"
    path.touch()
    os.chmod(path, 0o640)
    client = sqltrack.AsyncClient(engine="sqlite", dbpath=str(path))
    try:
        await sqltrack.AsyncExperiment.create(client, name="e")
    finally:
        await client.close()
    assert mode(path) == 0o640


def test_create_private_skips_memory_and_uris(tmp_path):
    for name in (":memory:", "", f"file:{tmp_path}/u.db?mode=ro"):
        create_private(name)
    create_private(tmp_path / "u.db", uri=True)
    assert list(tmp_path.iterdir()) == []


async def test_spool_and_its_lock_are_0600(client, tmp_path, open_umask):
    spool = Spool.for_settings(client.settings, tmp_path / "spool" / "spool.db")
    row = layout.make(("loss",), ("float",), None, 0, 1, 0.0, (0.5,))
    spool.append_rows(1, [row])
    async with spool.replaying() as got:
        assert got is not None
    spool.close()
    assert mode(spool.path) == 0o600
    assert mode(f"{spool.path}.lock") == 0o600
    for suffix in ("-wal", "-shm", "-journal"):
        if os.path.exists(f"{spool.path}{suffix}"):
            assert mode(f"{spool.path}{suffix}") == 0o600


def test_making_a_file_private_never_drops_a_lock_sqlite_holds(tmp_path):
    """POSIX drops every lock a process holds on a file when any descriptor of it is
    closed: ``create_private`` must not open a database SQLite already has open, or a
    second process could write beside this one's transaction (a corrupt file)."""
    import sqlite3
    import subprocess
    import sys

    path = str(tmp_path / "held.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held
    holder.execute("INSERT INTO t VALUES (1)")
    create_private(path)  # what opening another connection of this process does first
    probe = ("import sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
             "try:\n    c.execute('BEGIN IMMEDIATE')\n    print('took the lock')\n"
             "except sqlite3.OperationalError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", probe, path], capture_output=True, text=True,
                         timeout=60)
    holder.execute("COMMIT")
    holder.close()
    assert out.stdout.strip() == "database is locked", out.stdout + out.stderr
