ALTER TABLE console_sessions DROP COLUMN IF EXISTS api_key_id;
