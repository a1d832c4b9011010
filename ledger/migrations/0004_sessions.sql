-- The session lifecycle (sessions/) reads live sessions by expiry on every sweep and finds a
-- device's intent and confirmation events by subject; without these the reads scan history.
CREATE INDEX logins_expires ON logins (expires_ms);
CREATE INDEX logouts_mac_at ON logouts (mac, at_ms);
CREATE INDEX events_subject_kind ON events (subject, kind, at_ms);
