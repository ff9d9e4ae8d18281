//! The fan-out, written once: the SQL that creates one delivery per subscription an event
//! selects, shared by ingestion (`events::INSERT_GROUP`) and operational events
//! (`operational::emit`).

/// An `INSERT INTO deliveries … RETURNING *` of one delivery per (event, subscription) pair the
/// preceding CTE `fan(id, event_type, source, data, patterns, ordering_key, subject, tenant_id)`
/// selects (only the event's tenant's subscriptions are candidates):
/// `patterns` the candidate patterns of the event's type as one space-separated text,
/// `ordering_key` the event's (NULL: none), `subject` the subscription an operational event is
/// about (it never receives that event; NULL for a producer's event). Paused subscriptions get
/// their deliveries held.
macro_rules! fan_out_sql {
    () => {
        "-- A delivery to a destination whose circuit is open is due when it half-opens, so
         -- it never sits at the head of the queue where claims pick their candidates. One to a
         -- paused subscription is held (due at 'infinity' in the queue) until it is resumed.
         -- The key only for a per-key subscription: the queue's trigger then makes the delivery
         -- wait for the earlier ones of its key (migration 000016).
         INSERT INTO deliveries (event_id, subscription_id, next_attempt_at, held, ordering_key)
         SELECT fan.id, s.id, greatest(now(), s.circuit_open_until), NOT s.enabled,
                CASE WHEN s.ordering = 'per_key' THEN fan.ordering_key END
           FROM fan, subscriptions s
          WHERE s.deleted_at IS NULL
            AND s.event_types && string_to_array(fan.patterns, ' ')
            AND s.tenant_id = fan.tenant_id
            AND s.id IS DISTINCT FROM fan.subject
            -- A payload filter (migration 000015), only where there is one: CASE fixes the
            -- order, so an unfiltered subscription costs one NULL test and no event document.
            -- `silent`: a filter that raises an error for this event (a strict-mode type
            -- mismatch, say) does not match, and the ingestion goes on.
            AND CASE WHEN s.filter_path IS NULL THEN true
                     ELSE jsonb_path_match(jsonb_build_object('type', fan.event_type,
                                                              'source', fan.source,
                                                              'data', fan.data),
                                           s.filter_path, '{}', true)
                END
         -- The key-share lock the foreign key takes anyway, taken while choosing: a concurrent
         -- delete, pause or resume (which lock the row FOR UPDATE) either waits for this
         -- ingestion and then sees its deliveries, or commits first and is seen here (the
         -- locked row is re-read, `enabled` included).
         FOR KEY SHARE OF s
         RETURNING *"
    };
}

pub(crate) use fan_out_sql;
