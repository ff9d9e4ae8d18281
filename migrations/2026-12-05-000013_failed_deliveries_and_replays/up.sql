-- Operator surface (issue 15): an index of failed deliveries, and replays as rows.
--
-- `failed_deliveries` holds one row per delivery whose status is `failed`, kept in step by a
-- trigger, as `delivery_queue` is for unfinished ones (ADR 007). "Show me what failed" and
-- "replay what failed" then read a table the size of the failures, not of the history, and no
-- index on `deliveries` names `status`, so state updates there stay HOT.

CREATE TABLE failed_deliveries (
    delivery_id       bigint      PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    event_id          text        NOT NULL,
    -- The event's, so "failed events, newest first" walks this table in the events list's order.
    event_received_at timestamptz NOT NULL,
    subscription_id   text        NOT NULL,
    failed_at         timestamptz NOT NULL
);
CREATE INDEX failed_deliveries_by_subscription
    ON failed_deliveries (subscription_id, delivery_id);
CREATE INDEX failed_deliveries_by_time ON failed_deliveries (failed_at, delivery_id);
CREATE INDEX failed_deliveries_by_event ON failed_deliveries (event_received_at, event_id);

-- Rows that became failed are added; rows that stopped being failed (a replay, a retry) go.
-- Both read only the statement's own rows, filtered by status first: a claim or an outcome
-- that touches no failed row costs two scans of its transition tables and nothing else.
CREATE FUNCTION failed_deliveries_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM failed_deliveries f
     USING old_deliveries o JOIN new_deliveries n ON n.id = o.id
     WHERE o.status = 'failed' AND n.status <> 'failed' AND f.delivery_id = o.id;
    INSERT INTO failed_deliveries
           (delivery_id, event_id, event_received_at, subscription_id, failed_at)
    SELECT n.id, n.event_id, e.received_at, n.subscription_id, n.updated_at
      FROM new_deliveries n JOIN events e ON e.id = n.event_id
     WHERE n.status = 'failed'
    ON CONFLICT (delivery_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE FUNCTION failed_deliveries_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO failed_deliveries
           (delivery_id, event_id, event_received_at, subscription_id, failed_at)
    SELECT n.id, n.event_id, e.received_at, n.subscription_id, n.updated_at
      FROM new_deliveries n JOIN events e ON e.id = n.event_id
     WHERE n.status = 'failed'
    ON CONFLICT (delivery_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER failed_deliveries_on_update
    AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_deliveries NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION failed_deliveries_sync();

CREATE TRIGGER failed_deliveries_on_insert
    AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION failed_deliveries_insert();

INSERT INTO failed_deliveries (delivery_id, event_id, event_received_at, subscription_id, failed_at)
SELECT d.id, d.event_id, e.received_at, d.subscription_id, d.updated_at
  FROM deliveries d JOIN events e ON e.id = d.event_id
 WHERE d.status = 'failed';

-- A replay (`POST /replays`): which deliveries, and how far it got. Any API replica may work on
-- it, a batch at a time with the row locked: each batch re-queues the matching deliveries among
-- ids (`cursor_id`, `cursor_id` + batch] and advances the cursor in the same transaction, so a
-- crash loses no progress and repeats none.
CREATE TABLE replays (
    id              text        PRIMARY KEY,
    event_id        text,
    subscription_id text,
    since           timestamptz,
    until           timestamptz,
    statuses        text[]      NOT NULL CHECK (cardinality(statuses) > 0),
    state           text        NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'completed', 'cancelled')),
    matched         bigint      NOT NULL CHECK (matched >= 0),
    requeued        bigint      NOT NULL DEFAULT 0 CHECK (requeued >= 0),
    batches         integer     NOT NULL DEFAULT 0 CHECK (batches >= 0),
    -- Deliveries with ids up to this one have been looked at.
    cursor_id       bigint      NOT NULL DEFAULT 0,
    -- The highest delivery id when the replay was created: later deliveries are not its business.
    last_id         bigint      NOT NULL,
    idempotency_key text,
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CHECK ((state = 'running') = (finished_at IS NULL))
);
CREATE UNIQUE INDEX replays_idempotency_key ON replays (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX replays_running ON replays (created_at) WHERE state = 'running';
