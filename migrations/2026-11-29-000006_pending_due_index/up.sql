-- The claim takes pending deliveries in (next_attempt_at, id) order along an index of pending rows
-- only: with one index over both statuses, a claim for one status had to visit the heap for
-- every entry of the other. Keys are unique (id breaks ties), so btree deduplication cannot
-- merge the many equal times a batch insert writes into posting lists whose dead entries
-- scans could not mark killed. CONCURRENTLY, so ingestion is never blocked while it builds;
-- hence one statement per migration (see metadata.toml).
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_pending_due
    ON deliveries (next_attempt_at, id) WHERE status = 'pending';
