ALTER INDEX subscriptions_active_event_types SET (fastupdate = on);
