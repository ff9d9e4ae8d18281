-- Per-subscription settings (issue #15, "Changing things") and pause/resume.
--
-- Settings: NULL (or an empty object) means "the global setting", so rows written by the
-- previous release need no backfill and the previous release keeps working (expand only).
ALTER TABLE subscriptions
    ADD COLUMN description    text,
    ADD COLUMN metadata       jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(metadata) = 'object'),
    ADD COLUMN headers        jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(headers) = 'object'),
    ADD COLUMN max_attempts   integer CHECK (max_attempts > 0),
    ADD COLUMN max_delay_secs integer CHECK (max_delay_secs > 0),
    ADD COLUMN timeout_ms     integer CHECK (timeout_ms > 0);

-- Pause: a paused (`enabled = false`) subscription still gets a delivery for every matching
-- event, but held: `held` deliveries sit in the hot queue with `due_at = 'infinity'`, past the
-- end of every claim's range (the claim's indexes stay as they are), until the subscription is
-- resumed. `held` lives on the delivery, not only in the queue, so every write of a delivery
-- (claim, outcome, deferral, release, replay) keeps it without knowing about pauses.
-- (Its index, what a resume reads, is built concurrently by migration 000012.)
ALTER TABLE deliveries ADD COLUMN held boolean NOT NULL DEFAULT false;

-- Fan-out now includes paused subscriptions: the matching index no longer filters on `enabled`
-- (the previous release's `deleted_at IS NULL AND enabled` query can still use it).
CREATE INDEX subscriptions_live_event_types
    ON subscriptions USING gin (event_types) WITH (fastupdate = off)
    WHERE deleted_at IS NULL;
DROP INDEX subscriptions_active_event_types;

-- The queue's triggers (migration 000010) with holds: a held delivery is due at 'infinity'.
CREATE OR REPLACE FUNCTION delivery_queue_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_queue (delivery_id, subscription_id, retry, leased, due_at)
    SELECT n.id, n.subscription_id, n.attempts > 0, n.status = 'processing',
           CASE WHEN n.held THEN 'infinity'::timestamptz
                WHEN n.status = 'processing' THEN n.leased_until ELSE n.next_attempt_at END
      FROM new_deliveries n
     WHERE n.status IN ('pending', 'processing', 'retrying')
    ON CONFLICT (delivery_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION delivery_queue_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM delivery_queue q
     USING new_deliveries n
     WHERE q.delivery_id = n.id AND n.status NOT IN ('pending', 'processing', 'retrying');
    INSERT INTO delivery_queue AS q (delivery_id, subscription_id, retry, leased, due_at)
    SELECT n.id, n.subscription_id, n.attempts > 0, n.status = 'processing',
           CASE WHEN n.held THEN 'infinity'::timestamptz
                WHEN n.status = 'processing' THEN n.leased_until ELSE n.next_attempt_at END
      FROM new_deliveries n
     WHERE n.status IN ('pending', 'processing', 'retrying')
    ON CONFLICT (delivery_id) DO UPDATE
       SET retry = EXCLUDED.retry, leased = EXCLUDED.leased, due_at = EXCLUDED.due_at
     WHERE (q.retry, q.leased, q.due_at)
           IS DISTINCT FROM (EXCLUDED.retry, EXCLUDED.leased, EXCLUDED.due_at);
    RETURN NULL;
END
$$;
