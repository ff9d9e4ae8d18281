CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_due
    ON deliveries (next_attempt_at) WHERE status IN ('pending', 'retrying');
