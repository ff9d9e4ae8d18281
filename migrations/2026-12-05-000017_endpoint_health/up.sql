-- Endpoint health and operational events (issue #16).
--
-- Auto-disable: a subscription whose every attempt has failed for `auto_disable_after_secs`
-- (NULL: the worker's `auto_disable_after_secs`; 0: never) is paused (`enabled = false`, its
-- deliveries held, nothing lost) with the reason and time on the row. `failing_since` is when
-- its current run of failed attempts began (set by the outcome statement at the first failed
-- attempt after a success, cleared by a success); `failing_warned` the share of the threshold
-- (50, 90) already reported by a `dispatch.subscription.failing` event in this run.
--
-- Expand only: the previous release neither reads nor writes these columns; its rows have the
-- defaults (healthy, global threshold).
ALTER TABLE subscriptions
    ADD COLUMN auto_disable_after_secs integer CHECK (auto_disable_after_secs >= 0),
    ADD COLUMN disabled_reason text,
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN failing_warned smallint NOT NULL DEFAULT 0 CHECK (failing_warned IN (0, 50, 90));

-- What the workers' health sweep reads: the few subscriptions failing right now.
CREATE INDEX subscriptions_failing
    ON subscriptions (failing_since)
    WHERE failing_since IS NOT NULL AND deleted_at IS NULL AND enabled;

-- Rate bounds of operational events, per subscription and type: the current window, how many
-- were sent and suppressed in it, and what the last emission was allowed (`allowed` events,
-- the first one reporting `carried` suppressed ones from the window before), read back by the
-- emitting statement. A row per (subscription, type) ever reported: a handful per subscription.
CREATE TABLE operational_event_windows (
    subscription_id text        NOT NULL,
    event_type      text        NOT NULL,
    window_start    timestamptz NOT NULL,
    window_secs     integer     NOT NULL CHECK (window_secs > 0),
    window_max      integer     NOT NULL CHECK (window_max > 0),
    emitted         integer     NOT NULL,
    suppressed      integer     NOT NULL,
    allowed         integer     NOT NULL,
    carried         integer     NOT NULL,
    PRIMARY KEY (subscription_id, event_type)
);
