-- Retention (`cargo xtask purge`) walks the oldest events first, a small batch at a time: without
-- this index every batch would scan the whole table. Built CONCURRENTLY (see metadata.toml: this
-- migration runs outside a transaction), so ingestion is never blocked while it builds; that
-- also means this file must hold exactly one statement.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_received_at ON events (received_at);
