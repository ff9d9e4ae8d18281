-- Tenants (issue #17, ADR 014): one Dispatch serving many producers, each seeing only its own
-- events, subscriptions, deliveries and replays.
--
-- Ids stay one text column per row. A row of the `default` tenant keeps the producer's id as it
-- is (so every row written before this migration is already right, and a single-tenant
-- installation never sees a difference); a row of any other tenant is stored under
-- `<tenant>/<id>`. Neither ids nor tenant ids may contain `/`, so two tenants may both send
-- `evt_123` and each gets its own row, idempotency is per tenant, and every join, foreign key,
-- trigger and index of the delivery path stays exactly as it was. `tenant_id` columns say whose
-- a row is, for the lists and selectors that do not start from an id.
--
-- No foreign key from the hot tables (events) to `tenants`: its check would take a key-share
-- lock on the tenant's row for every event, from every concurrent ingestion (a MultiXact per
-- row of the busiest tenant). Tenants are never deleted, only marked deleted, and the API
-- checks a tenant exists before writing for it.
CREATE TABLE tenants (
    id                  text        PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
    name                text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
    created_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    -- Limits; NULL: the configured default (DISPATCH_TENANT_*).
    ingest_rate_per_sec double precision CHECK (ingest_rate_per_sec > 0),
    ingest_burst        integer     CHECK (ingest_burst > 0),
    max_subscriptions   integer     CHECK (max_subscriptions >= 0),
    max_payload_bytes   integer     CHECK (max_payload_bytes > 0),
    CHECK (id <> 'default' OR deleted_at IS NULL)
);
INSERT INTO tenants (id, name) VALUES ('default', 'Default tenant');

-- The tenant of a stored id (`TenantId::stored_id`), for the filters over tables that carry
-- only ids (deliveries, attempts, the hot queue, failed deliveries): computed from the row
-- itself, so a filter by tenant costs no join. Inlined by the planner.
CREATE FUNCTION dispatch_tenant_of(stored_id text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(stored_id, '/') = 0 THEN 'default'
                ELSE split_part(stored_id, '/', 1) END
$$;

-- A constant default: no table rewrite, existing rows read as the default tenant's.
ALTER TABLE subscriptions ADD COLUMN tenant_id text NOT NULL DEFAULT 'default'
    REFERENCES tenants (id);
ALTER TABLE events ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE replays ADD COLUMN tenant_id text NOT NULL DEFAULT 'default' REFERENCES tenants (id);

-- The subscription list and the per-tenant count of live subscriptions (its limit).
CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant_id, id)
    WHERE deleted_at IS NULL;

-- An Idempotency-Key names a replay within its tenant.
DROP INDEX replays_idempotency_key;
CREATE UNIQUE INDEX replays_idempotency_key ON replays (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Keys: `tenant:<id>`, `tenant:<id>:read` and `ingest:<id>` work in one tenant; `admin` and
-- `read` in every tenant. `ingest` (before tenants) is `ingest:default`.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;
UPDATE api_keys SET scope = 'ingest:default' WHERE scope = 'ingest';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scope_check CHECK (
    scope ~ '^(admin|read|tenant:[a-z0-9][a-z0-9_-]{0,39}(:read)?|ingest:[a-z0-9][a-z0-9_-]{0,39})$');
ALTER TABLE api_keys ADD COLUMN tenant_id text
    GENERATED ALWAYS AS (CASE WHEN scope LIKE '%:%' THEN split_part(scope, ':', 2) END) STORED
    REFERENCES tenants (id);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at) WHERE tenant_id IS NOT NULL;

-- Fairness across tenants: a claim takes each tenant's earliest first attempts along this index
-- (one probe per tenant, never walking another tenant's backlog) and hands them out round-robin
-- by their rank within their tenant. It replaces the global `(due_at, delivery_id)` index of
-- first attempts: with one tenant the two are the same walk.
CREATE INDEX delivery_queue_first_due_by_tenant
    ON delivery_queue (dispatch_tenant_of(subscription_id), due_at, delivery_id)
    WHERE NOT retry AND NOT leased;
DROP INDEX delivery_queue_first_due;

-- A tenant's earliest `n` due first attempts, along that index in order and nothing else: the
-- planner may not choose a bitmap scan and a sort here, which would read every due row of a
-- tenant with a backlog of millions to return a few (its estimate of one tenant's share of the
-- queue can be far off). PL/pgSQL, so each connection plans it once and keeps the plan.
CREATE FUNCTION dispatch_first_due(tenant text, n bigint)
    RETURNS TABLE (delivery_id bigint, subscription_id text, due_at timestamptz)
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET enable_bitmapscan = off SET enable_sort = off SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY
    SELECT q.delivery_id, q.subscription_id, q.due_at
      FROM delivery_queue q
     WHERE dispatch_tenant_of(q.subscription_id) = tenant
       AND NOT q.retry AND NOT q.leased AND q.due_at <= now()
     ORDER BY dispatch_tenant_of(q.subscription_id), q.due_at, q.delivery_id
     LIMIT n;
END
$$;
