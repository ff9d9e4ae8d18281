-- Per-destination resilience: each subscription's rate limit, and its circuit state as last
-- published by a worker (every replica's claim skips a destination whose circuit is open).

ALTER TABLE subscriptions
    ADD COLUMN rate_limit_per_sec double precision NOT NULL DEFAULT 100
        CHECK (rate_limit_per_sec > 0 AND rate_limit_per_sec <= 100000),
    ADD COLUMN rate_limit_burst integer NOT NULL DEFAULT 10
        CHECK (rate_limit_burst >= 1 AND rate_limit_burst <= 100000),
    ADD COLUMN circuit_state text NOT NULL DEFAULT 'closed'
        CHECK (circuit_state IN ('closed', 'half_open', 'open')),
    ADD COLUMN circuit_open_until timestamptz,
    ADD COLUMN circuit_changed_at timestamptz;

-- Live workers, so a destination's rate limit can be shared out across the fleet.
CREATE TABLE workers (
    id      text        PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);
