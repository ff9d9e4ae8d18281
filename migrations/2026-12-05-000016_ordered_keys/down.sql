-- Waiting deliveries of ordered keys become due again (the previous release knows no ordering).
UPDATE delivery_queue q
   SET due_at = CASE WHEN d.held THEN 'infinity'::timestamptz
                     WHEN d.status = 'processing' THEN d.leased_until ELSE d.next_attempt_at END
  FROM deliveries d
 WHERE d.id = q.delivery_id AND q.ordering_key IS NOT NULL;

-- The queue's insert trigger of migration 000011.
CREATE FUNCTION delivery_queue_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
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
DROP TRIGGER delivery_queue_on_insert ON deliveries;
CREATE TRIGGER delivery_queue_on_insert
    AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_queue_enqueue();

-- The update trigger's function of migration 000011.
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

DROP FUNCTION IF EXISTS dispatch_ordering_advance(text, text);
DROP TABLE IF EXISTS ordered_keys;
DROP INDEX IF EXISTS delivery_queue_ordered;
ALTER TABLE delivery_queue DROP COLUMN IF EXISTS ordering_key;
ALTER TABLE deliveries DROP COLUMN IF EXISTS ordering_key;
ALTER TABLE events DROP COLUMN IF EXISTS ordering_key;
ALTER TABLE subscriptions
    DROP COLUMN IF EXISTS ordering,
    DROP COLUMN IF EXISTS on_exhausted;
