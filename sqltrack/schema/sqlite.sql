-- sqltrack base schema for SQLite (created on first use when missing).
-- Timestamps are ISO 8601 text in UTC; JSON columns are text checked with json_valid.
-- Named as in sqltrack 0.1.x (PostgreSQL), the record of applied scripts.
CREATE TABLE IF NOT EXISTS applied_migrations (
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
        'BOOT_FAIL', 'CANCELLED', 'CONFIGURING', 'COMPLETED', 'COMPLETING', 'DEADLINE',
        'FAILED', 'NODE_FAIL', 'OUT_OF_MEMORY', 'PENDING', 'PREEMPTED', 'RESV_DEL_HOLD',
        'REQUEUE_FED', 'REQUEUE_HOLD', 'REQUEUED', 'RESIZING', 'REVOKED', 'RUNNING',
        'SIGNALING', 'SPECIAL_EXIT', 'STAGE_OUT', 'STOPPED', 'SUSPENDED', 'TIMEOUT')),
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
-- The runs table of an experiment filtered or sorted by status, read in order (schema 6).
CREATE INDEX IF NOT EXISTS runs_experiment_status_idx ON runs (experiment_id, status, id);

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

-- Metrics past the column budget (or whose column could not be created at once): one
-- row per value (see docs/metric-storage.md). The view metric_values_all, made by the
-- library and made again whenever metrics gets columns, reads both places.
CREATE TABLE IF NOT EXISTS metric_values (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step INTEGER NOT NULL DEFAULT 0,
    progress REAL NOT NULL DEFAULT 0.0,
    name TEXT NOT NULL,
    value REAL,
    value_int INTEGER,
    value_bool BOOLEAN,
    value_text TEXT,
    value_time TIMESTAMP,
    PRIMARY KEY (run_id, name, step, progress)
) WITHOUT ROWID;
-- The names stored in metric_values and their kind (the first value decides it).
CREATE TABLE IF NOT EXISTS metric_names (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('bool', 'int', 'float', 'str', 'datetime'))
) WITHOUT ROWID;

-- System metrics per rank and node (issue 21): ``rank`` (0 for a single process) and
-- ``host`` (the node's name) are part of the key. Databases made before get them in place
-- (the dialect's upgrade step ``system_metrics_ranks``), appended after ``value``.
CREATE TABLE IF NOT EXISTS system_metrics (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    time TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    rank INTEGER NOT NULL DEFAULT 0,
    host TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, rank, host, name, time)
) WITHOUT ROWID;
