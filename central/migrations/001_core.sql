-- Centre core: enrolled boxes, one-time enrolment codes, batches received, alerts, nonces,
-- push-down config. Times are integer Unix milliseconds (the centre's clock).
CREATE TABLE IF NOT EXISTS boxes (
    box_id TEXT PRIMARY KEY,
    office TEXT NOT NULL DEFAULT '',
    public_key TEXT NOT NULL,           -- base64 raw Ed25519
    key_id TEXT NOT NULL,
    enrolled_ms INTEGER NOT NULL,
    enrol_code_id INTEGER,
    revoked_ms INTEGER,
    last_seen_ms INTEGER,
    seen_address TEXT,                  -- where the last request came from (as the centre saw it)
    public_address TEXT,                -- what the box reported
    version TEXT,
    health TEXT,                        -- JSON from the last heartbeat
    lag TEXT,                           -- JSON from the last heartbeat
    box_time_ms INTEGER,                -- the box's clock at its last heartbeat
    clock_offset_ms INTEGER,            -- box clock minus centre clock at that heartbeat
    last_seq INTEGER NOT NULL DEFAULT 0,
    last_hash TEXT NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000',
    last_batch_ms INTEGER,
    rows_received INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS enrol_codes (
    id INTEGER PRIMARY KEY,
    code_hash TEXT NOT NULL UNIQUE,     -- SHA-256 of the code: a copied DB enrols nobody
    box_id TEXT,                        -- if set, only this box may use it
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER,
    used_by_box TEXT,
    used_key TEXT
);

-- One row per accepted batch: the chain the centre checks (seq gap-free, prev_hash links).
CREATE TABLE IF NOT EXISTS batches (
    box_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    box_created_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    ranges TEXT NOT NULL,               -- JSON {table: [from, to, rows]}
    min_ms INTEGER,                     -- earliest / latest record time in the batch (box clock)
    max_ms INTEGER,
    PRIMARY KEY (box_id, seq)
);

CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    box_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    resolved_ms INTEGER
);
CREATE INDEX IF NOT EXISTS alerts_at ON alerts (at_ms);

-- Nonces seen within the replay window (pruned as they age out).
CREATE TABLE IF NOT EXISTS request_nonces (
    box_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (box_id, nonce)
);
CREATE INDEX IF NOT EXISTS request_nonces_at ON request_nonces (at_ms);

CREATE TABLE IF NOT EXISTS push_config (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    terms_version TEXT,
    blocklist TEXT NOT NULL DEFAULT '[]',
    updated_ms INTEGER NOT NULL
);

-- Every run of `central retention`: what was dropped and what holds kept.
CREATE TABLE IF NOT EXISTS retention_runs (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    cutoff_ms INTEGER NOT NULL,
    dropped TEXT NOT NULL,
    kept_for_holds TEXT NOT NULL
);
