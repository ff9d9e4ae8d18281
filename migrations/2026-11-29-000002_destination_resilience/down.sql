DROP TABLE workers;
ALTER TABLE subscriptions
    DROP COLUMN rate_limit_per_sec,
    DROP COLUMN rate_limit_burst,
    DROP COLUMN circuit_state,
    DROP COLUMN circuit_open_until,
    DROP COLUMN circuit_changed_at;
