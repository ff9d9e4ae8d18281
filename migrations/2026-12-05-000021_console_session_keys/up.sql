-- Scoped console sessions (issue #18): a session remembers which database key signed it in, so
-- every console request can look that key up again in the API's key cache (reloaded each
-- second) and take its scope from it: a `read` key's session sees everything and changes
-- nothing, and a revoked or expired key ends its sessions at their next request. NULL: a key
-- of DISPATCH_API_KEYS (admin), as every session of the previous release was, so sessions
-- created before this migration keep working (expand only).
ALTER TABLE console_sessions
    ADD COLUMN api_key_id text REFERENCES api_keys (id) ON DELETE CASCADE;
