-- Held deliveries become due again (as the previous release knows no holds).
CREATE OR REPLACE FUNCTION delivery_queue_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_queue (delivery_id, subscription_id, retry, leased, due_at)
    SELECT n.id, n.subscription_id, n.attempts > 0, n.status = 'processing',
           CASE WHEN n.status = 'processing' THEN n.leased_until ELSE n.next_attempt_at END
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
           CASE WHEN n.status = 'processing' THEN n.leased_until ELSE n.next_attempt_at END
      FROM new_deliveries n
     WHERE n.status IN ('pending', 'processing', 'retrying')
    ON CONFLICT (delivery_id) DO UPDATE
       SET retry = EXCLUDED.retry, leased = EXCLUDED.leased, due_at = EXCLUDED.due_at
     WHERE (q.retry, q.leased, q.due_at)
           IS DISTINCT FROM (EXCLUDED.retry, EXCLUDED.leased, EXCLUDED.due_at);
    RETURN NULL;
END
$$;

UPDATE delivery_queue q
   SET due_at = CASE WHEN d.status = 'processing' THEN d.leased_until ELSE d.next_attempt_at END
  FROM deliveries d
 WHERE d.id = q.delivery_id AND d.held;

CREATE INDEX IF NOT EXISTS subscriptions_active_event_types
    ON subscriptions USING gin (event_types) WITH (fastupdate = off)
    WHERE deleted_at IS NULL AND enabled;
DROP INDEX IF EXISTS subscriptions_live_event_types;

ALTER TABLE deliveries DROP COLUMN IF EXISTS held;

ALTER TABLE subscriptions
    DROP COLUMN IF EXISTS description,
    DROP COLUMN IF EXISTS metadata,
    DROP COLUMN IF EXISTS headers,
    DROP COLUMN IF EXISTS max_attempts,
    DROP COLUMN IF EXISTS max_delay_secs,
    DROP COLUMN IF EXISTS timeout_ms;
