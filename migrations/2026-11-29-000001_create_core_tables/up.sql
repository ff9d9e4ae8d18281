-- Dispatch's core tables: events, subscriptions, deliveries (event x subscription) and attempts.

CREATE TABLE subscriptions (
    id          text        PRIMARY KEY,
    url         text        NOT NULL,
    -- Patterns such as '*', 'order.*', 'order.created'; matched with the array-overlap operator
    -- against the few patterns that can select an event's type (see docs/spec.md).
    event_types text[]      NOT NULL CHECK (cardinality(event_types) > 0),
    secret      text,
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Deleted subscriptions are kept (soft delete) so their delivery history stays readable.
    deleted_at  timestamptz
);

-- Finds the active subscriptions whose patterns overlap an event's candidate patterns.
CREATE INDEX subscriptions_active_event_types
    ON subscriptions USING gin (event_types)
    WHERE deleted_at IS NULL AND enabled;

CREATE TABLE events (
    id          text        PRIMARY KEY,
    event_type  text        NOT NULL,
    source      text        NOT NULL,
    data        jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        text        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    subscription_id text        NOT NULL REFERENCES subscriptions (id),
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'retrying', 'delivered', 'failed', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_by       text,
    leased_until    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- One delivery per event and subscription; also serves "the deliveries of an event".
    UNIQUE (event_id, subscription_id),
    CHECK ((status = 'processing') = (leased_until IS NOT NULL))
);

-- "Claim the due deliveries": a small partial index over the waiting rows only.
CREATE INDEX deliveries_due
    ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');

-- "Reclaim deliveries whose lease expired" (their worker died).
CREATE INDEX deliveries_leases
    ON deliveries (leased_until)
    WHERE status = 'processing';

-- "Cancel a deleted subscription's unfinished deliveries".
CREATE INDEX deliveries_open_by_subscription
    ON deliveries (subscription_id)
    WHERE status IN ('pending', 'processing', 'retrying');

CREATE TABLE attempts (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     bigint      NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    event_id        text        NOT NULL,
    subscription_id text        NOT NULL,
    attempt         integer     NOT NULL CHECK (attempt > 0),
    status_code     integer,
    latency_ms      integer     NOT NULL CHECK (latency_ms >= 0),
    error_code      text,
    error           text,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- "Show an event's attempts, oldest first".
CREATE INDEX attempts_by_event ON attempts (event_id, id);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
