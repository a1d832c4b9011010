-- Core traffic-data tables. Times are integer Unix milliseconds, UTC.
-- Rows are never updated; a session's end is a row of its own (logouts).
CREATE TABLE leases (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    box_id TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('add', 'old', 'del')),
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    hostname TEXT,
    expires_ms INTEGER
);
CREATE INDEX leases_ip_at ON leases (ip, at_ms);
CREATE INDEX leases_mac_at ON leases (mac, at_ms);

CREATE TABLE logins (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    box_id TEXT NOT NULL,
    method TEXT NOT NULL CHECK (method IN ('line', 'returning')),
    line_user_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    friend INTEGER CHECK (friend IN (0, 1)),
    friendship_changed INTEGER CHECK (friendship_changed IN (0, 1)),
    consent_version TEXT,
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX logins_mac_at ON logins (mac, at_ms);
CREATE INDEX logins_user_at ON logins (line_user_id, at_ms);
CREATE INDEX logins_ip_at ON logins (ip, at_ms);

CREATE TABLE logouts (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    login_id INTEGER REFERENCES logins (id),
    mac TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX logouts_login ON logouts (login_id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_kind_at ON events (kind, at_ms);

CREATE TRIGGER leases_append_only BEFORE UPDATE ON leases BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER logins_append_only BEFORE UPDATE ON logins BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER logouts_append_only BEFORE UPDATE ON logouts BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER events_append_only BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END;
CREATE TRIGGER leases_no_delete BEFORE DELETE ON leases BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER logins_no_delete BEFORE DELETE ON logins BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER logouts_no_delete BEFORE DELETE ON logouts BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'ledger rows are deleted only by retention'); END;
