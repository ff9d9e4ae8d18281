-- Subscription secrets sealed at rest (AES-256-GCM under `secret_keys`, sealed and opened by the
-- binaries: the database never sees a key or, for new rows, a plaintext secret), and secret
-- rotation with an overlap window.
--
-- Expand only: the plaintext column `secret` stays, so the previous release keeps signing
-- subscriptions it created, and this release still signs rows that hold only a plaintext secret.
-- This release never writes `secret`; `dispatch-api secrets reseal` seals the plaintext ones and
-- clears the column. A later release drops it (contract).
ALTER TABLE subscriptions
    -- `v1:<key id>:<base64(nonce || ciphertext || tag)>`, bound to the subscription's id.
    ADD COLUMN sealed_secret text,
    -- The secret being rotated out: still used to sign (next to the current one) until
    -- `previous_secret_expires_at`.
    ADD COLUMN previous_sealed_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD CONSTRAINT subscriptions_previous_secret_expiry
        CHECK ((previous_sealed_secret IS NULL) = (previous_secret_expires_at IS NULL));

COMMENT ON COLUMN subscriptions.secret IS
    'Legacy plaintext secret of rows written before secrets were sealed; never written any more. '
    'Sealed and cleared by `dispatch-api secrets reseal`.';
