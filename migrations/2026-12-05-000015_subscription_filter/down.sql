ALTER TABLE subscriptions
    DROP COLUMN IF EXISTS filter_path,
    DROP COLUMN IF EXISTS filter;
