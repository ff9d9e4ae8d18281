-- Per-key ordering (issue #16, ADR 011): a subscription with `ordering = 'per_key'` receives the
-- events that carry the same `ordering_key` one at a time, in the order they were accepted.
--
-- The rule lives in the hot queue's triggers, so the claim is unchanged and stays index-backed:
-- of the unfinished deliveries of one (subscription, key), only the *head* — named by its row in
-- `ordered_keys` — is claimable; the others wait in `delivery_queue` due at 'infinity', as held
-- deliveries do (migration 000011). When the head finishes (delivered; or failed for good when
-- the subscription's `on_exhausted` is 'skip'), the queue's trigger makes the next one the head:
-- the lowest delivery id of the key still in the queue. Delivery ids are the sequence assigned at
-- ingest, so a replayed delivery goes back in its place (next, ahead of later events).
-- With `on_exhausted = 'block'` a head that failed for good stays the head: its key waits until
-- an operator replays it or skips it (`POST /deliveries/{id}/skip`).
--
-- Every statement that writes a key's deliveries takes its `ordered_keys` row lock (creating the
-- row when the key had none), in key order, before it decides anything: two workers, an ingestion
-- and a worker, or an operator and a worker never decide a key's head at the same time.
--
-- Expand only: the previous release writes no `ordering_key` (its deliveries are unordered) and
-- its claim reads the same queue.
ALTER TABLE subscriptions
    ADD COLUMN ordering text NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'per_key')),
    ADD COLUMN on_exhausted text NOT NULL DEFAULT 'skip' CHECK (on_exhausted IN ('skip', 'block'));

-- The producer's key, as accepted; copied to a delivery only for a per-key subscription.
ALTER TABLE events ADD COLUMN ordering_key text CHECK (octet_length(ordering_key) BETWEEN 1 AND 128);
ALTER TABLE deliveries ADD COLUMN ordering_key text;
-- In the queue only while the subscription orders by key: what finds a key's next delivery.
ALTER TABLE delivery_queue ADD COLUMN ordering_key text;
CREATE INDEX delivery_queue_ordered ON delivery_queue (subscription_id, ordering_key, delivery_id)
    WHERE ordering_key IS NOT NULL;

-- One row per key with unfinished (or blocking) deliveries: the head, the only claimable one.
CREATE TABLE ordered_keys (
    subscription_id text   NOT NULL,
    ordering_key    text   NOT NULL,
    head            bigint NOT NULL,
    PRIMARY KEY (subscription_id, ordering_key)
);
-- Retention keeps the event of a head (a failed head blocks its key until skipped or replayed).
CREATE INDEX ordered_keys_head ON ordered_keys (head);

-- Makes the next delivery of a key its head (due when its own schedule says), or forgets the key
-- when none is left. The caller holds the key's row lock.
CREATE FUNCTION dispatch_ordering_advance(p_subscription text, p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    next_id bigint;
BEGIN
    SELECT q.delivery_id INTO next_id
      FROM delivery_queue q
     WHERE q.subscription_id = p_subscription AND q.ordering_key = p_key
     ORDER BY q.delivery_id
     LIMIT 1;
    IF next_id IS NULL THEN
        DELETE FROM ordered_keys WHERE subscription_id = p_subscription AND ordering_key = p_key;
        RETURN;
    END IF;
    UPDATE ordered_keys SET head = next_id
     WHERE subscription_id = p_subscription AND ordering_key = p_key;
    UPDATE delivery_queue q
       SET due_at = CASE WHEN d.held THEN 'infinity'::timestamptz
                         WHEN d.status = 'processing' THEN d.leased_until
                         ELSE d.next_attempt_at END
      FROM deliveries d
     WHERE q.delivery_id = next_id AND d.id = next_id;
    -- Wake the workers: the new head may be due now (sent at commit, once per transaction).
    PERFORM pg_notify('dispatch_deliveries', '');
END
$$;

-- The queue's trigger (migrations 000010, 000011) with per-key ordering; now also the insert
-- trigger, so one function decides what is due however a delivery was written.
CREATE OR REPLACE FUNCTION delivery_queue_sync() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    finished record;
BEGIN
    DELETE FROM delivery_queue q
     USING new_deliveries n
     WHERE q.delivery_id = n.id AND n.status NOT IN ('pending', 'processing', 'retrying');
    -- Keyed deliveries that are `processing` or `retrying` are heads already (only a head is
    -- ever claimed, and it stays the head until it finishes): a claim, or an attempt that will
    -- be retried, decides nothing about its key and takes no lock, so claims never wait for an
    -- ingestion of the same key. Every other keyed write (a new or re-queued delivery, one that
    -- finished, a hold or release) decides under the key's lock.
    IF EXISTS (SELECT 1 FROM new_deliveries
                WHERE ordering_key IS NOT NULL AND status NOT IN ('processing', 'retrying')) THEN
        -- Lock (or create, headed by its earliest unfinished delivery here) the row of every
        -- key this statement decides about, in key order. A no-op update, for its lock.
        INSERT INTO ordered_keys AS k (subscription_id, ordering_key, head)
        SELECT n.subscription_id, n.ordering_key,
               coalesce(min(n.id) FILTER (WHERE n.status = 'pending'), min(n.id))
          FROM new_deliveries n
          JOIN subscriptions s ON s.id = n.subscription_id AND s.ordering = 'per_key'
         WHERE n.ordering_key IS NOT NULL AND n.status NOT IN ('processing', 'retrying')
         GROUP BY n.subscription_id, n.ordering_key
         ORDER BY n.subscription_id, n.ordering_key
        ON CONFLICT (subscription_id, ordering_key) DO UPDATE SET head = k.head;
        -- A head that finished hands over, unless it failed for good and its subscription
        -- blocks on that. Key by key, each along its primary key (a join with the statement's
        -- rows, which have no statistics, could read every key).
        FOR finished IN
            SELECT DISTINCT n.subscription_id, n.ordering_key FROM new_deliveries n
             WHERE n.ordering_key IS NOT NULL
               AND n.status NOT IN ('pending', 'processing', 'retrying')
             ORDER BY 1, 2
        LOOP
            IF EXISTS (SELECT 1 FROM ordered_keys k
                         JOIN deliveries d ON d.id = k.head
                         JOIN subscriptions s ON s.id = k.subscription_id
                        WHERE k.subscription_id = finished.subscription_id
                          AND k.ordering_key = finished.ordering_key
                          AND d.status NOT IN ('pending', 'processing', 'retrying')
                          AND NOT (d.status = 'failed' AND s.on_exhausted = 'block')) THEN
                PERFORM dispatch_ordering_advance(finished.subscription_id,
                                                  finished.ordering_key);
            END IF;
        END LOOP;
    END IF;
    WITH n AS (
        SELECT n.*,
               CASE WHEN n.ordering_key IS NOT NULL
                         AND EXISTS (SELECT 1 FROM subscriptions s
                                      WHERE s.id = n.subscription_id AND s.ordering = 'per_key')
                    THEN n.ordering_key END AS queue_key
          FROM new_deliveries n
         WHERE n.status IN ('pending', 'processing', 'retrying')
    )
    INSERT INTO delivery_queue AS q (delivery_id, subscription_id, retry, leased, due_at,
                                     ordering_key)
    SELECT n.id, n.subscription_id, n.attempts > 0, n.status = 'processing',
           CASE WHEN n.held THEN 'infinity'::timestamptz
                -- Not its key's head: waits for its turn.
                WHEN n.queue_key IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM ordered_keys k
                                      WHERE k.subscription_id = n.subscription_id
                                        AND k.ordering_key = n.queue_key AND k.head = n.id)
                     THEN 'infinity'::timestamptz
                WHEN n.status = 'processing' THEN n.leased_until
                ELSE n.next_attempt_at END,
           n.queue_key
      FROM n
    ON CONFLICT (delivery_id) DO UPDATE
       SET retry = EXCLUDED.retry, leased = EXCLUDED.leased, due_at = EXCLUDED.due_at,
           ordering_key = EXCLUDED.ordering_key
     WHERE (q.retry, q.leased, q.due_at, q.ordering_key)
           IS DISTINCT FROM (EXCLUDED.retry, EXCLUDED.leased, EXCLUDED.due_at,
                             EXCLUDED.ordering_key);
    RETURN NULL;
END
$$;

DROP TRIGGER delivery_queue_on_insert ON deliveries;
CREATE TRIGGER delivery_queue_on_insert
    AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_queue_sync();
DROP FUNCTION delivery_queue_enqueue();
