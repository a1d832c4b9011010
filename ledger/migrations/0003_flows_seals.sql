-- NAT flows, clock state, sealing (hash chain), centre acknowledgements and retention.
-- Times are integer Unix milliseconds, UTC; IPv4 addresses are unsigned 32-bit integers.

-- Flows land here first (many rows per transaction, durable at once), then are compacted
-- into flow_segments. Not append-only and not sealed: it is a transient buffer.
-- open = 1: a NEW event whose DESTROY has not arrived yet (end_ms NULL).
CREATE TABLE flow_staging (
    id INTEGER PRIMARY KEY,
    ct_id INTEGER,
    open INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    proto INTEGER NOT NULL,
    src_ip INTEGER NOT NULL,
    src_port INTEGER NOT NULL,
    pub_ip INTEGER NOT NULL,
    pub_port INTEGER NOT NULL,
    dst_ip INTEGER NOT NULL,
    dst_port INTEGER NOT NULL,
    bytes_orig INTEGER NOT NULL DEFAULT 0,
    bytes_reply INTEGER NOT NULL DEFAULT 0,
    flags INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX flow_staging_pub ON flow_staging (pub_port, start_ms);
CREATE INDEX flow_staging_ct ON flow_staging (ct_id);

-- Compressed columnar segments of finished short flows (see ledger/segments.py).
-- Every flow in a segment has end - start <= LONG_FLOW_MS and the segment's end times
-- span at most SEGMENT_SPAN_MS, so a lookup at time T reads only segments whose
-- min_end_ms lies in [T - span, T + long].
CREATE TABLE flow_segments (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    codec INTEGER NOT NULL,
    n_flows INTEGER NOT NULL,
    min_start_ms INTEGER NOT NULL,
    min_end_ms INTEGER NOT NULL,
    max_end_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX flow_segments_min_end ON flow_segments (min_end_ms);

-- Finished flows longer than LONG_FLOW_MS, one row each (a small fraction).
CREATE TABLE flows_long (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    src_ip INTEGER NOT NULL,
    src_port INTEGER NOT NULL,
    pub_ip INTEGER NOT NULL,
    pub_port INTEGER NOT NULL,
    dst_ip INTEGER NOT NULL,
    dst_port INTEGER NOT NULL,
    bytes_orig INTEGER NOT NULL,
    bytes_reply INTEGER NOT NULL,
    flags INTEGER NOT NULL
);
CREATE INDEX flows_long_pub ON flows_long (pub_port, start_ms);
CREATE INDEX flows_long_src ON flows_long (src_ip, start_ms);

-- chrony's view of the clock, sampled by the flow logger (or `skillspot ledger clock`).
CREATE TABLE clock_samples (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    synced INTEGER NOT NULL CHECK (synced IN (0, 1)),
    offset_us INTEGER,
    stratum INTEGER,
    source TEXT,
    leap TEXT,
    error TEXT
);
CREATE INDEX clock_samples_at ON clock_samples (at_ms);

-- The hash chain: each seal covers the rows appended since the previous one, in every
-- sealed table; head_hash = SHA-256 over prev_hash and the batch, signed with Ed25519.
CREATE TABLE seals (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    ranges TEXT NOT NULL,
    row_hashes BLOB NOT NULL,
    head_hash TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);

-- What the centre has acknowledged: everything sealed up to seal_id is stored there.
CREATE TABLE centre_acks (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    seal_id INTEGER NOT NULL,
    receipt TEXT NOT NULL DEFAULT ''
);

-- Every retention deletion: table, the id prefix removed, the cutoff used.
CREATE TABLE retention_runs (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    tbl TEXT NOT NULL,
    through_id INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    cutoff_ms INTEGER NOT NULL
);

-- Set only inside retention's own transaction; delete triggers allow ids <= through_id.
CREATE TABLE retention_guard (
    tbl TEXT PRIMARY KEY,
    through_id INTEGER NOT NULL
);

-- How retention dates a row, per table (default: at_ms). NULL end_expr: never pruned.
CREATE TABLE ledger_retention (
    tbl TEXT PRIMARY KEY,
    end_expr TEXT,
    prune_order INTEGER NOT NULL DEFAULT 100
);
INSERT INTO ledger_retention VALUES ('logins', 'MAX(at_ms, expires_ms, COALESCE((SELECT MAX(o.at_ms) FROM logouts o WHERE o.login_id = logins.id), 0))', 110);
INSERT INTO ledger_retention VALUES ('logouts', 'at_ms', 50);
INSERT INTO ledger_retention VALUES ('leases', 'MAX(at_ms, COALESCE(expires_ms, 0))', 100);
INSERT INTO ledger_retention VALUES ('flow_segments', 'max_end_ms', 100);
INSERT INTO ledger_retention VALUES ('flows_long', 'end_ms', 100);
INSERT INTO ledger_retention VALUES ('seals', NULL, 100);
INSERT INTO ledger_retention VALUES ('centre_acks', NULL, 100);
INSERT INTO ledger_retention VALUES ('retention_runs', NULL, 100);

DROP TRIGGER leases_no_delete;
DROP TRIGGER logins_no_delete;
DROP TRIGGER logouts_no_delete;
DROP TRIGGER events_no_delete;
CREATE TRIGGER leases_no_delete BEFORE DELETE ON leases WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'leases'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER logins_no_delete BEFORE DELETE ON logins WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'logins'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER logouts_no_delete BEFORE DELETE ON logouts WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'logouts'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'events'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;

CREATE TRIGGER flow_segments_append_only BEFORE UPDATE ON flow_segments BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER flows_long_append_only BEFORE UPDATE ON flows_long BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER clock_samples_append_only BEFORE UPDATE ON clock_samples BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER seals_append_only BEFORE UPDATE ON seals BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER centre_acks_append_only BEFORE UPDATE ON centre_acks BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER retention_runs_append_only BEFORE UPDATE ON retention_runs BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER flow_segments_no_delete BEFORE DELETE ON flow_segments WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'flow_segments'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER flows_long_no_delete BEFORE DELETE ON flows_long WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'flows_long'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER clock_samples_no_delete BEFORE DELETE ON clock_samples WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'clock_samples'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER seals_no_delete BEFORE DELETE ON seals BEGIN SELECT RAISE(ABORT, 'seals are never deleted'); END;
CREATE TRIGGER centre_acks_no_delete BEFORE DELETE ON centre_acks BEGIN SELECT RAISE(ABORT, 'acknowledgements are never deleted'); END;
CREATE TRIGGER retention_runs_no_delete BEFORE DELETE ON retention_runs BEGIN SELECT RAISE(ABORT, 'retention runs are never deleted'); END;

-- The RADIUS tables of 0002 get the same sanctioned retention path.
DROP TRIGGER radius_auth_no_delete;
DROP TRIGGER radius_acct_no_delete;
DROP TRIGGER radius_disconnects_no_delete;
CREATE TRIGGER radius_auth_no_delete BEFORE DELETE ON radius_auth WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'radius_auth'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER radius_acct_no_delete BEFORE DELETE ON radius_acct WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'radius_acct'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER radius_disconnects_no_delete BEFORE DELETE ON radius_disconnects WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'radius_disconnects'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
