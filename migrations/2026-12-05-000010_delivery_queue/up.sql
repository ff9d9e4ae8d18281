-- The hot queue apart from history (ADR 007). `deliveries` keeps every delivery for as long as
-- retention allows; `delivery_queue` holds one small row per *unfinished* delivery (pending,
-- processing or retrying) and nothing else, so a claim walks an index whose size is the backlog,
-- however many finished deliveries there are, and the table can be vacuumed in milliseconds.
--
-- `deliveries` stays the single source of truth: triggers keep the queue in step with every
-- INSERT and UPDATE of it (ingestion, claims, outcomes, replays, cancellations, and the writes of
-- a previous release during a rolling upgrade), so no code path can forget the queue.
-- `due_at` is when the row can next be claimed: `next_attempt_at` while it waits, the end of its
-- lease while a worker holds it (`leased`; an expired lease is simply due again, and claimed
-- before anything else: it is the oldest work there is).

CREATE TABLE delivery_queue (
    delivery_id     bigint      PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    subscription_id text        NOT NULL,
    -- Attempted before: retries take at most half of a claim, so they cannot starve new events.
    retry           boolean     NOT NULL DEFAULT false,
    -- A worker holds it (`processing`): due when the lease ends.
    leased          boolean     NOT NULL DEFAULT false,
    due_at          timestamptz NOT NULL
) WITH (
    -- Every row is updated once per claim: leave room on each page.
    fillfactor = 70,
    -- A hot queue: vacuum after a fixed number of dead rows, not a share of a table that is
    -- mostly dead. The worker also vacuums it itself (see docs/operations.md).
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 2000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim's order, one index per kind (leases, first attempts, retries), so a claim for one
-- kind never walks the other's rows: due first; `delivery_id` breaks ties, so keys are unique and
-- btree deduplication builds no posting lists (scans can then mark dead entries killed one by
-- one).
CREATE INDEX delivery_queue_lease_due ON delivery_queue (due_at, delivery_id) WHERE leased;
CREATE INDEX delivery_queue_first_due ON delivery_queue (due_at, delivery_id)
    WHERE NOT retry AND NOT leased;
CREATE INDEX delivery_queue_retry_due ON delivery_queue (due_at, delivery_id)
    WHERE retry AND NOT leased;

CREATE FUNCTION delivery_queue_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE FUNCTION delivery_queue_sync() RETURNS trigger LANGUAGE plpgsql AS $$
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

-- Statement-level with transition tables: one call per statement, however many rows it wrote.
CREATE TRIGGER delivery_queue_on_insert
    AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_queue_enqueue();

CREATE TRIGGER delivery_queue_on_update
    AFTER UPDATE ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_queue_sync();

INSERT INTO delivery_queue (delivery_id, subscription_id, retry, leased, due_at)
SELECT id, subscription_id, attempts > 0, status = 'processing',
       CASE WHEN status = 'processing' THEN leased_until ELSE next_attempt_at END
  FROM deliveries
 WHERE status IN ('pending', 'processing', 'retrying');

-- The queue serves every question these answered. Without them no column an update of a
-- delivery's state touches is indexed, so those updates are HOT (no new index entries, dead
-- versions pruned within the page without VACUUM) given free space on the page.
DROP INDEX IF EXISTS deliveries_pending_due;
DROP INDEX IF EXISTS deliveries_retrying_due;
DROP INDEX IF EXISTS deliveries_leases;
DROP INDEX IF EXISTS deliveries_open_by_subscription;
ALTER TABLE deliveries SET (fillfactor = 85);
