ALTER TABLE deliveries RESET (fillfactor);
CREATE INDEX IF NOT EXISTS deliveries_pending_due
    ON deliveries (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_retrying_due
    ON deliveries (next_attempt_at, id) WHERE status = 'retrying';
CREATE INDEX IF NOT EXISTS deliveries_leases
    ON deliveries (leased_until) WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS deliveries_open_by_subscription
    ON deliveries (subscription_id) WHERE status IN ('pending', 'processing', 'retrying');
DROP TRIGGER IF EXISTS delivery_queue_on_update ON deliveries;
DROP TRIGGER IF EXISTS delivery_queue_on_insert ON deliveries;
DROP FUNCTION IF EXISTS delivery_queue_sync();
DROP FUNCTION IF EXISTS delivery_queue_enqueue();
DROP TABLE IF EXISTS delivery_queue;
