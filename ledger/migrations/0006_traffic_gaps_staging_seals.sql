-- Staged flows under the seal chain, compaction records, and flow-logger outages (gaps).
-- Times are integer Unix milliseconds, UTC.

-- flow_staging is rebuilt with AUTOINCREMENT: its rows are now sealed as they are written
-- and deleted by compaction, so an id must never be handed out twice (a plain rowid table
-- reuses the ids of deleted top rows, which would collide with a sealed id).
CREATE TABLE flow_staging_v6 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
INSERT INTO flow_staging_v6 SELECT * FROM flow_staging;
DROP TABLE flow_staging;
ALTER TABLE flow_staging_v6 RENAME TO flow_staging;
CREATE INDEX flow_staging_pub ON flow_staging (pub_port, start_ms);
CREATE INDEX flow_staging_ct ON flow_staging (ct_id);
CREATE TRIGGER flow_staging_append_only BEFORE UPDATE ON flow_staging BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;

-- One row per compaction: which staging ids it consumed (packed little-endian int64 pairs,
-- inclusive ranges) and moved into flow_segments / flows_long (or dropped as the NEW half of
-- a finished flow). Sealed: `verify` accepts a sealed staging row's absence only when a
-- sealed compaction consumed it. Never pruned: verify needs it as long as the seals exist.
CREATE TABLE flow_compactions (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    consumed BLOB NOT NULL,
    n_consumed INTEGER NOT NULL,
    n_flows INTEGER NOT NULL,
    segments INTEGER NOT NULL,
    long_rows INTEGER NOT NULL,
    refused TEXT NOT NULL DEFAULT '[]'
);

-- Derived index of the seals that cover flow_staging rows (seal id, id range, where their
-- hashes start in the seal's row_hashes and in which format), so compaction and `verify`
-- find a staged row's sealed hash without reading every seal. Not trusted: every hash is
-- read from the signed seal itself.
CREATE TABLE staging_seals (
    seal_id INTEGER PRIMARY KEY,
    from_id INTEGER NOT NULL,
    to_id INTEGER NOT NULL,
    hash_offset INTEGER NOT NULL,
    n_rows INTEGER NOT NULL,
    hash_bytes INTEGER NOT NULL
);
CREATE INDEX staging_seals_to ON staging_seals (to_id);

-- Per table, the highest row id any seal covers, kept by seal() in the sealing transaction
-- so a seal does not re-read the whole chain. Checked against the chain by `verify`.
CREATE TABLE seal_through (
    tbl TEXT PRIMARY KEY,
    to_id INTEGER NOT NULL,
    seal_id INTEGER NOT NULL
);

-- A time the flow logger was not listening: from the last moment it had stored every event
-- (its heartbeat) to the moment its new subscription was in place. Flows that started and
-- ended inside a gap are not in the ledger; `who` answers inside one say they may be incomplete.
-- AUTOINCREMENT: retention may empty this table, and a reused id would collide with a sealed one.
CREATE TABLE flowlog_gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    box_id TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX flowlog_gaps_to ON flowlog_gaps (to_ms);

-- The flow logger's liveness mark: one row, rewritten in the same transaction as each flush
-- and by a periodic tick, so after a kill -9 the next start knows when listening stopped.
-- Not sealed (it is rewritten by design); its value becomes the sealed gap record.
CREATE TABLE flowlog_heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    complete_ms INTEGER NOT NULL,
    last_event_ms INTEGER,
    stopped_ms INTEGER,
    tick_ms INTEGER NOT NULL
);

INSERT INTO ledger_retention VALUES ('flow_compactions', NULL, 100);
INSERT INTO ledger_retention VALUES ('flowlog_gaps', 'to_ms', 100);

CREATE TRIGGER flow_compactions_append_only BEFORE UPDATE ON flow_compactions BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER flow_compactions_no_delete BEFORE DELETE ON flow_compactions BEGIN SELECT RAISE(ABORT, 'compaction records are never deleted'); END;
CREATE TRIGGER flowlog_gaps_append_only BEFORE UPDATE ON flowlog_gaps BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER flowlog_gaps_no_delete BEFORE DELETE ON flowlog_gaps WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'flowlog_gaps'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;

-- IPv6 flows (network.ipv6 = "on"): not translated, so the device's own address and port are
-- what a server saw; one row per conntrack NEW and one per DESTROY, like flow_staging, but kept
-- as rows (IPv6 is a small share of traffic; the IPv4 segments' columns are 32-bit). Addresses
-- are 16-byte blobs. mac: the neighbour table's entry for src_ip when the logger stored the row.
CREATE TABLE flows6 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ct_id INTEGER,
    open INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    proto INTEGER NOT NULL,
    src_ip BLOB NOT NULL,
    src_port INTEGER NOT NULL,
    pub_ip BLOB NOT NULL,
    pub_port INTEGER NOT NULL,
    dst_ip BLOB NOT NULL,
    dst_port INTEGER NOT NULL,
    bytes_orig INTEGER NOT NULL DEFAULT 0,
    bytes_reply INTEGER NOT NULL DEFAULT 0,
    flags INTEGER NOT NULL DEFAULT 0,
    mac TEXT
);
CREATE INDEX flows6_pub ON flows6 (pub_ip, pub_port, start_ms);
CREATE INDEX flows6_ct ON flows6 (ct_id);
INSERT INTO ledger_retention VALUES ('flows6', 'COALESCE(end_ms, start_ms)', 100);
CREATE TRIGGER flows6_append_only BEFORE UPDATE ON flows6 BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER flows6_no_delete BEFORE DELETE ON flows6 WHEN OLD.id > COALESCE((SELECT through_id FROM retention_guard WHERE tbl = 'flows6'), 0) BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
