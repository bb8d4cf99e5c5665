-- berth serve: builds, their jobs and steps, the event log, API tokens.
CREATE TABLE builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    -- the pipeline file's text, as submitted
    pipeline TEXT NOT NULL,
    -- JSON: what starts the build, parameters, source (tar or git), secret names (never values)
    request TEXT NOT NULL,
    -- JSON: the pipeline's jobs and their requirements, for the UI's graph
    graph TEXT NOT NULL,
    -- io.berth.owner of everything this build created (set before anything is created)
    owner TEXT,
    submitted_by TEXT NOT NULL,
    rerun_of INTEGER,
    message TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
);
CREATE INDEX builds_status ON builds(status, id);

CREATE TABLE jobs (
    build_id INTEGER NOT NULL REFERENCES builds(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    image TEXT,
    result TEXT,
    started_at INTEGER,
    finished_at INTEGER,
    duration_ms INTEGER,
    PRIMARY KEY (build_id, name)
);

CREATE TABLE steps (
    build_id INTEGER NOT NULL,
    job TEXT NOT NULL,
    name TEXT NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    started_at INTEGER,
    duration_ms INTEGER,
    PRIMARY KEY (build_id, job, name)
);

-- The event log: ids only grow; SSE clients resume from any id with Last-Event-ID.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_build ON events(build_id, id);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    -- sha256 of the secret, hex; the secret itself is shown once and never stored
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
