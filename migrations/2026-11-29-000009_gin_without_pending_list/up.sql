-- Subscriptions are written rarely and matched on every ingestion. With GIN's fast update, new
-- entries wait in a pending list that every lookup scans in full until VACUUM merges it: with
-- 10 000 subscriptions created in bulk, one match took 2.5 ms instead of 0.4 ms (pgbench,
-- measured). Without it, a subscription insert updates the index at once.
ALTER INDEX subscriptions_active_event_types SET (fastupdate = off);
SELECT gin_clean_pending_list('subscriptions_active_event_types'::regclass);
