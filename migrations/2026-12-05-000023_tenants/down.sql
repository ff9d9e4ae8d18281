DROP FUNCTION dispatch_first_due(text, bigint);
CREATE INDEX delivery_queue_first_due ON delivery_queue (due_at, delivery_id)
    WHERE NOT retry AND NOT leased;
DROP INDEX delivery_queue_first_due_by_tenant;
DROP INDEX api_keys_by_tenant;
ALTER TABLE api_keys DROP COLUMN tenant_id;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;
DELETE FROM api_keys WHERE scope LIKE 'tenant:%' OR (scope LIKE 'ingest:%' AND scope <> 'ingest:default');
UPDATE api_keys SET scope = 'ingest' WHERE scope = 'ingest:default';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('admin', 'read', 'ingest'));
DROP INDEX replays_idempotency_key;
CREATE UNIQUE INDEX replays_idempotency_key ON replays (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX subscriptions_by_tenant;
ALTER TABLE replays DROP COLUMN tenant_id;
ALTER TABLE events DROP COLUMN tenant_id;
ALTER TABLE subscriptions DROP COLUMN tenant_id;
DROP FUNCTION dispatch_tenant_of(text);
DROP TABLE tenants;
