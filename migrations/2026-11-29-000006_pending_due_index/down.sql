DROP INDEX CONCURRENTLY IF EXISTS deliveries_pending_due;
