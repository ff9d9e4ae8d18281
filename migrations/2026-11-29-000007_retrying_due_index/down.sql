DROP INDEX CONCURRENTLY IF EXISTS deliveries_retrying_due;
