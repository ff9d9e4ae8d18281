-- What a resume releases: a paused subscription's held deliveries (migration 000011), found
-- without reading the whole history; only held rows are in it, so it stays tiny, and `held`
-- never changes in the hot path, so updates there stay HOT. Built CONCURRENTLY (see
-- metadata.toml: this migration runs outside a transaction), so ingestion is never blocked
-- while it reads `deliveries`; that also means this file must hold exactly one statement.
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_held ON deliveries (subscription_id, id) WHERE held;
