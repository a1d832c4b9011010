-- The DSD Official Account (central/oa): webhook inbox, followers, consent, training, attendance,
-- skill tests, jobs, outgoing messages. Times are integer Unix milliseconds.

-- Every webhook event, stored before LINE gets its 200; the worker processes them from here, so
-- nothing is lost if the process dies. webhookEventId UNIQUE: a redelivery is dropped.
CREATE TABLE IF NOT EXISTS oa_inbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,                -- the event's JSON, as LINE sent it
    received_ms INTEGER NOT NULL,
    redelivered INTEGER NOT NULL DEFAULT 0,  -- copies that arrived again (dropped)
    done_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL DEFAULT 0,  -- a failed event waits (1 s, 2 s, 4 s ...) before its next try
    error TEXT
);
CREATE INDEX IF NOT EXISTS oa_inbox_todo ON oa_inbox (done_ms, next_ms, id);

CREATE TABLE IF NOT EXISTS oa_friends (
    user_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL DEFAULT '',  -- from LINE's profile on follow (may change at will)
    is_friend INTEGER NOT NULL,
    followed_ms INTEGER,
    unfollowed_ms INTEGER,
    office TEXT,                        -- the office whose WiFi they use most (from synced logins)
    logins INTEGER NOT NULL DEFAULT 0,  -- WiFi logins seen when linked
    via_wifi INTEGER NOT NULL DEFAULT 0 -- became a friend on a WiFi login (friendship_changed)
);

-- Consent log: one row per grant or withdrawal; the latest row per (user, kind) is in force.
CREATE TABLE IF NOT EXISTS oa_consent (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('messages', 'jobs', 'auto_checkin')),
    granted INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    source TEXT NOT NULL                -- 'chat', 'portal', 'staff'
);
CREATE INDEX IF NOT EXISTS oa_consent_user ON oa_consent (user_id, kind, id);

CREATE TABLE IF NOT EXISTS oa_offices (
    office TEXT PRIMARY KEY,
    province TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS oa_courses (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    office TEXT NOT NULL,
    title_th TEXT NOT NULL,
    title_en TEXT NOT NULL,
    skills TEXT NOT NULL DEFAULT '',    -- comma-separated skill tags
    pass_percent INTEGER NOT NULL DEFAULT 60
);

CREATE TABLE IF NOT EXISTS oa_sessions (
    id INTEGER PRIMARY KEY,
    course_id INTEGER NOT NULL REFERENCES oa_courses(id),
    starts_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    capacity INTEGER NOT NULL CHECK (capacity > 0),
    place TEXT NOT NULL DEFAULT '',
    CHECK (ends_ms > starts_ms)
);

CREATE TABLE IF NOT EXISTS oa_registrations (
    id INTEGER PRIMARY KEY,             -- order of arrival: the waitlist is served by id
    session_id INTEGER NOT NULL REFERENCES oa_sessions(id),
    user_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('confirmed', 'waitlist', 'cancelled')),
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    reminded_ms INTEGER,
    UNIQUE (session_id, user_id)
);

CREATE TABLE IF NOT EXISTS oa_attendance (
    session_id INTEGER NOT NULL REFERENCES oa_sessions(id),
    user_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    method TEXT NOT NULL CHECK (method IN ('code', 'wifi', 'staff')),
    PRIMARY KEY (session_id, user_id)   -- counted once per session
);

CREATE TABLE IF NOT EXISTS oa_questions (
    id INTEGER PRIMARY KEY,
    course_id INTEGER NOT NULL REFERENCES oa_courses(id),
    position INTEGER NOT NULL,
    text_th TEXT NOT NULL,
    text_en TEXT NOT NULL,
    choices TEXT NOT NULL,              -- JSON list of labels
    answer INTEGER NOT NULL,            -- index into choices
    UNIQUE (course_id, position)
);

CREATE TABLE IF NOT EXISTS oa_attempts (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    course_id INTEGER NOT NULL REFERENCES oa_courses(id),
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    score INTEGER,
    total INTEGER,
    passed INTEGER
);

CREATE TABLE IF NOT EXISTS oa_answers (
    attempt_id INTEGER NOT NULL REFERENCES oa_attempts(id),
    question_id INTEGER NOT NULL REFERENCES oa_questions(id),
    choice INTEGER NOT NULL,
    correct INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (attempt_id, question_id)  -- a second tap cannot answer twice
);

CREATE TABLE IF NOT EXISTS oa_vacancies (
    id INTEGER PRIMARY KEY,
    employer TEXT NOT NULL,
    position TEXT NOT NULL,
    skills TEXT NOT NULL DEFAULT '',
    province TEXT NOT NULL,
    wage TEXT NOT NULL DEFAULT '',
    closes_on TEXT NOT NULL,            -- YYYY-MM-DD, Bangkok
    status TEXT NOT NULL CHECK (status IN ('open', 'pending', 'rejected')),
    source TEXT NOT NULL,               -- 'staff', 'csv', 'employer'
    contact TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS oa_user_skills (
    user_id TEXT NOT NULL,
    skill TEXT NOT NULL,
    source TEXT NOT NULL,               -- 'course' or 'stated'
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, skill)
);

CREATE TABLE IF NOT EXISTS oa_job_pushes (
    user_id TEXT NOT NULL,
    vacancy_id INTEGER NOT NULL REFERENCES oa_vacancies(id),
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, vacancy_id)
);

-- Outgoing pushes/multicasts: the retry key is made once, when the message is queued, and every
-- attempt reuses it (LINE answers 409 for a key it already accepted).
CREATE TABLE IF NOT EXISTS oa_outbox (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('push', 'multicast')),
    target TEXT NOT NULL,               -- JSON: a user id or a list of them
    messages TEXT NOT NULL,             -- JSON list of message objects
    retry_key TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL DEFAULT '',   -- 'reminder', 'jobs', 'broadcast:<id>', ...
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS oa_outbox_todo ON oa_outbox (status, next_ms);

CREATE TABLE IF NOT EXISTS oa_broadcasts (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    office TEXT NOT NULL DEFAULT '',
    province TEXT NOT NULL DEFAULT '',
    send_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'sending', 'sent', 'refused')),
    recipients INTEGER,
    detail TEXT,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS oa_kv (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
