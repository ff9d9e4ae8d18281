-- "A subscription's deliveries, newest first" (GET /deliveries?subscription_id=, GET
-- /events?subscription_id=, replays by subscription). Neither column ever changes, so updates of
-- a delivery stay HOT. Built CONCURRENTLY (see metadata.toml), so ingestion is never blocked
-- while it builds; that also means this file must hold exactly one statement.
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_by_subscription
    ON deliveries (subscription_id, id);
