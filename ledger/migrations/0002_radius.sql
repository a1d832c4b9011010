-- RADIUS records (radius/): MAC authorisation decisions, accounting from hostapd and
-- Disconnect results. Times are integer Unix milliseconds, UTC. Append-only like 0001.
CREATE TABLE radius_auth (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    box_id TEXT NOT NULL,
    nas_address TEXT NOT NULL,
    nas_identifier TEXT,
    mac TEXT,
    user_name TEXT NOT NULL,
    called_station_id TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('accept', 'reject')),
    reason TEXT NOT NULL,
    session_timeout INTEGER,
    idle_timeout INTEGER
);
CREATE INDEX radius_auth_mac_at ON radius_auth (mac, at_ms);

-- One row per accounting request; a retransmission is not a row (dedupe_key is unique:
-- NAS + Acct-Session-Id + Acct-Status-Type + Event-Timestamp, see radius/server.py).
-- Octet counts already include the Gigawords (64-bit totals).
CREATE TABLE radius_acct (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    box_id TEXT NOT NULL,
    nas_address TEXT NOT NULL,
    nas_identifier TEXT,
    status_type INTEGER NOT NULL,
    acct_session_id TEXT,
    mac TEXT,
    user_name TEXT,
    called_station_id TEXT,
    framed_ip TEXT,
    input_octets INTEGER,
    output_octets INTEGER,
    input_packets INTEGER,
    output_packets INTEGER,
    session_time INTEGER,
    terminate_cause INTEGER,
    event_ms INTEGER,
    delay_time INTEGER,
    dedupe_key TEXT NOT NULL UNIQUE
);
CREATE INDEX radius_acct_session ON radius_acct (acct_session_id, at_ms);
CREATE INDEX radius_acct_mac_at ON radius_acct (mac, at_ms);
CREATE INDEX radius_acct_nas_at ON radius_acct (nas_identifier, at_ms);

CREATE TABLE radius_disconnects (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    box_id TEXT NOT NULL,
    mac TEXT NOT NULL,
    acked INTEGER NOT NULL CHECK (acked IN (0, 1)),
    error_cause INTEGER,
    detail TEXT NOT NULL
);
CREATE INDEX radius_disconnects_mac_at ON radius_disconnects (mac, at_ms);

CREATE TRIGGER radius_auth_append_only BEFORE UPDATE ON radius_auth BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER radius_acct_append_only BEFORE UPDATE ON radius_acct BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER radius_disconnects_append_only BEFORE UPDATE ON radius_disconnects BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER radius_auth_no_delete BEFORE DELETE ON radius_auth BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER radius_acct_no_delete BEFORE DELETE ON radius_acct BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER radius_disconnects_no_delete BEFORE DELETE ON radius_disconnects BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
