DROP TABLE IF EXISTS replays;
DROP TRIGGER IF EXISTS failed_deliveries_on_insert ON deliveries;
DROP TRIGGER IF EXISTS failed_deliveries_on_update ON deliveries;
DROP FUNCTION IF EXISTS failed_deliveries_insert();
DROP FUNCTION IF EXISTS failed_deliveries_sync();
DROP TABLE IF EXISTS failed_deliveries;
