-- API keys in the database (issue #17, "Keys"): created, listed, rotated and revoked through the
-- API (`/keys`) and `dispatch-api admin keys`, without a restart. A key is shown once, when it
-- is created; only its SHA-256 is stored (keys are 256-bit random values, not passwords, so a
-- fast hash is the right one). Its id (`dk_` + 12 characters) is the visible part of the key,
-- so a leaked key can be recognised, grepped for and revoked. Every API replica reloads the
-- active keys every second: a revocation is effective everywhere within about a second.
--
-- Every change of a key is written to `audit_log` in the same transaction: who (the calling
-- key's id, `env` for a key from DISPATCH_API_KEYS, `cli` for `dispatch-api admin`), what,
-- when.
CREATE TABLE api_keys (
    id           text        PRIMARY KEY CHECK (id ~ '^dk_[a-z0-9]{12}$'),
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
    scope        text        NOT NULL CHECK (scope IN ('admin', 'read', 'ingest')),
    hash         bytea       NOT NULL CHECK (octet_length(hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    -- The key this one replaced (`POST /keys/{id}/rotate`).
    rotated_from text        REFERENCES api_keys (id)
);

CREATE TABLE audit_log (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text        NOT NULL,
    action text        NOT NULL,
    target text        NOT NULL,
    detail jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(detail) = 'object')
);
