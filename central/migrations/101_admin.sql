-- Central admin accounts, their sessions, failed logins, cases and the append-only audit log.
-- Owned by central/accounts.py, central/cases.py and central/audit.py.

CREATE TABLE IF NOT EXISTS admin_accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'investigator', 'admin')),
    password_hash TEXT NOT NULL,
    totp_secret   TEXT NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,   -- a TOTP code is accepted once (no replay)
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_ms    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS admin_sessions (
    token_hash TEXT PRIMARY KEY,                -- SHA-256 of the cookie's token: a copied DB logs nobody in
    account_id INTEGER NOT NULL REFERENCES admin_accounts(id),
    created_ms INTEGER NOT NULL,
    seen_ms    INTEGER NOT NULL,
    ip         TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS admin_login_failures (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    name  TEXT NOT NULL COLLATE NOCASE,
    ip    TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_login_failures_name ON admin_login_failures (name, at_ms);
CREATE INDEX IF NOT EXISTS admin_login_failures_ip ON admin_login_failures (ip, at_ms);

CREATE TABLE IF NOT EXISTS cases (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    reference    TEXT NOT NULL UNIQUE,
    authority    TEXT NOT NULL,                 -- who asked (police station, court)
    note         TEXT NOT NULL DEFAULT '',
    created_ms   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    closed_ms    INTEGER
);

-- The slice of data a case keeps: one box (or every box when box_id is NULL) and a window of
-- session/flow end times. keep_until_ms is the retention extension (at most 2 years after end_ms);
-- hold = 1 is a legal hold, kept until the hold is released whatever keep_until_ms says.
CREATE TABLE IF NOT EXISTS case_ranges (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id       INTEGER NOT NULL REFERENCES cases(id),
    box_id        TEXT,
    start_ms      INTEGER NOT NULL,
    end_ms        INTEGER NOT NULL CHECK (end_ms >= start_ms),
    keep_until_ms INTEGER NOT NULL,
    hold          INTEGER NOT NULL DEFAULT 0,
    created_ms    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    released_ms   INTEGER,
    released_by   TEXT
);

-- Append-only: every search, view and export, with the admin, the case and the result count.
-- Each row also carries the SHA-256 chain over the previous row, so a row removed or altered
-- outside SQLite (the triggers stop it inside) shows in `central admin audit-verify`.
CREATE TABLE IF NOT EXISTS audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms        INTEGER NOT NULL,
    admin        TEXT NOT NULL,
    role         TEXT NOT NULL,
    action       TEXT NOT NULL,
    case_ref     TEXT,
    query        TEXT NOT NULL,                 -- JSON
    result_count INTEGER,
    ip           TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at_ms);

CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be changed');
END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be deleted');
END;
