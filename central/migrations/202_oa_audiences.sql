-- News sent as LINE narrowcasts to an uploaded audience (issue 19, item 6). One row per send:
-- the audience is built from the consenting recipients, uploaded (<= 10,000 ids per call), used
-- once it is READY, and the narrowcast's progress and delivery are read back from LINE.
CREATE TABLE IF NOT EXISTS oa_narrowcasts (
    id INTEGER PRIMARY KEY,
    broadcast_id INTEGER NOT NULL REFERENCES oa_broadcasts (id),
    users TEXT NOT NULL,                -- JSON list of user ids (filtered again by consent at upload)
    messages TEXT NOT NULL,             -- JSON list of message objects
    retry_key TEXT NOT NULL UNIQUE,     -- X-Line-Retry-Key of the narrowcast, made when queued
    step TEXT NOT NULL CHECK (step IN ('audience', 'upload', 'send', 'track', 'done', 'failed', 'multicast')),
    audience_id INTEGER,
    uploaded INTEGER NOT NULL DEFAULT 0,  -- how many of `users` are in the audience so far
    request_id TEXT,                    -- LINE's x-line-request-id of the narrowcast
    phase TEXT,                         -- LINE's progress: waiting, sending, succeeded, failed
    target_count INTEGER,
    success_count INTEGER,
    failure_count INTEGER,
    error_code INTEGER,
    delivered INTEGER,                  -- LINE's statistics (insight), when available
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS oa_narrowcasts_todo ON oa_narrowcasts (step, next_ms);
