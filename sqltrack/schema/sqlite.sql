-- sqltrack base schema for SQLite (created on first use when missing).
-- Timestamps are ISO 8601 text in UTC; JSON columns are text checked with json_valid.
CREATE TABLE IF NOT EXISTS sqltrack_migrations (
    name TEXT PRIMARY KEY,
    time_applied TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);

-- AUTOINCREMENT: a generated id is above every id ever used, explicit ones included.
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    name TEXT NOT NULL UNIQUE,
    comment TEXT,
    tags TEXT CHECK (tags IS NULL OR json_valid(tags))
);

CREATE TABLE IF NOT EXISTS experiment_links (
    from_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    to_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    PRIMARY KEY (from_id, kind, to_id)
);

CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'PENDING' CHECK (status IN (
        'PENDING', 'RUNNING', 'COMPLETED', 'CANCELLED', 'FAILED', 'TIMEOUT',
        'PREEMPTED', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE',
        'REQUEUED', 'RESIZING', 'REVOKED', 'SUSPENDED')),
    time_created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    time_started TEXT,
    time_updated TEXT,
    comment TEXT,
    tags TEXT CHECK (tags IS NULL OR json_valid(tags)),
    args TEXT CHECK (args IS NULL OR json_valid(args)),
    env TEXT CHECK (env IS NULL OR json_valid(env)),
    extras TEXT CHECK (extras IS NULL OR json_valid(extras))
);
CREATE INDEX IF NOT EXISTS runs_experiment_id_idx ON runs (experiment_id);
CREATE INDEX IF NOT EXISTS runs_status_idx ON runs (status);

CREATE TABLE IF NOT EXISTS run_links (
    from_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    to_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    PRIMARY KEY (from_id, kind, to_id)
);

CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step INTEGER NOT NULL DEFAULT 0,
    progress REAL NOT NULL DEFAULT 0.0,
    PRIMARY KEY (run_id, step, progress)
) WITHOUT ROWID;
