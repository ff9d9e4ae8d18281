-- Reverting would drop every sealed secret, and the previous release would then send those
-- subscriptions' webhooks unsigned. Refuse while any subscription that is not deleted has only a
-- sealed secret. To revert anyway, accepting that those subscriptions lose their secret, clear
-- it first: UPDATE subscriptions SET sealed_secret = NULL, previous_sealed_secret = NULL,
-- previous_secret_expires_at = NULL;
DO $$
DECLARE
    sealed_only bigint;
BEGIN
    SELECT count(*) INTO sealed_only
      FROM subscriptions
     WHERE deleted_at IS NULL AND secret IS NULL AND sealed_secret IS NOT NULL;
    IF sealed_only > 0 THEN
        RAISE EXCEPTION '% subscription(s) have only a sealed secret, which the previous release cannot read; reverting would leave their webhooks unsigned (see migrations/2026-11-29-000005_secret_encryption/down.sql)', sealed_only;
    END IF;
END $$;

COMMENT ON COLUMN subscriptions.secret IS NULL;
ALTER TABLE subscriptions
    DROP CONSTRAINT subscriptions_previous_secret_expiry,
    DROP COLUMN previous_secret_expires_at,
    DROP COLUMN previous_sealed_secret,
    DROP COLUMN sealed_secret;
