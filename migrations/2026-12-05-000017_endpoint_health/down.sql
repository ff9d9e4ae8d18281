DROP TABLE IF EXISTS operational_event_windows;
DROP INDEX IF EXISTS subscriptions_failing;
ALTER TABLE subscriptions
    DROP COLUMN IF EXISTS failing_warned,
    DROP COLUMN IF EXISTS failing_since,
    DROP COLUMN IF EXISTS disabled_at,
    DROP COLUMN IF EXISTS disabled_reason,
    DROP COLUMN IF EXISTS auto_disable_after_secs;
