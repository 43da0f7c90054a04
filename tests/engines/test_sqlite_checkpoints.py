"""SQLite's WAL stays bounded while the blocking API writes through on its own thread.

The writing threads' connections never checkpoint inline (a checkpoint's copy and
fsync would stall the training loop); a ``_Checkpointer`` does it in a thread of its
own after as many commits as the event loop's connection makes before handing over,
and the writer then checkpoints the few frames written meanwhile, so that SQLite
starts the WAL over. Without either, the WAL would grow with every commit for as
long as the run logs. SQLite only: the WAL is SQLite's.
"""

from __future__ import annotations

import os

import sqltrack_sync
from sqltrack.engines.sqlite import LOOP_CHECKPOINT_COMMITS

#: Metrics a row (every commit appends a few pages to the WAL).
WIDTH = 200


def test_wal_stays_bounded_while_the_blocking_api_writes(tmp_path):
    path = str(tmp_path / "wal.db")
    client = sqltrack_sync.Client(dbpath=path)
    names = [f"m{i}" for i in range(WIDTH)]
    sizes = {}
    last = 8 * LOOP_CHECKPOINT_COMMITS
    try:
        run = sqltrack_sync.Experiment(client, name="wal").get_run()
        for step in range(1, last + 1):
            run.add_metrics({n: step + i / WIDTH for i, n in enumerate(names)}, step=step)
            if step in (3 * LOOP_CHECKPOINT_COMMITS, last):
                sizes[step] = os.path.getsize(path + "-wal")
        # Unchecked, the WAL would grow by the same pages every commit: 8/3 of its
        # size at the first reading. Reused from its start, it stops growing.
        early, late = sizes[3 * LOOP_CHECKPOINT_COMMITS], sizes[last]
        assert late < 1.5 * early, sizes
        rows = client.execute("SELECT count(*), max(m199) FROM metrics WHERE run_id = ?",
                            [run.id])
        assert rows == [(last, last + (WIDTH - 1) / WIDTH)]
    finally:
        client.close()
