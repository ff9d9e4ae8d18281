-- The console's sign-ins (issue #18): one row per session, shared by every API replica. The
-- cookie holds a random token; only its SHA-256 is stored, so a copy of this table signs no one
-- in. A session ends at `expires_at` (absolute) or after `idle` without a request (checked
-- against `last_seen_at` by the query that reads it), or when its operator signs out.
CREATE TABLE console_sessions (
    token_sha256 bytea       PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
-- Expired rows are removed by each sign-in, found through this.
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
