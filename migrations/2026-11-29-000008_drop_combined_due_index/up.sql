-- Replaced by deliveries_pending_due and deliveries_retrying_due (the two migrations before).
DROP INDEX CONCURRENTLY IF EXISTS deliveries_due;
