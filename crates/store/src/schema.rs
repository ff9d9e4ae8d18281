//! Diesel's view of the tables created by `migrations/` (written by hand: no libpq here).

diesel::table! {
    subscriptions (id) {
        id -> Text,
        url -> Text,
        event_types -> Array<Text>,
        /// Legacy plaintext secret (rows written before migration 000005); never written now.
        secret -> Nullable<Text>,
        /// The current secret, sealed (`dispatch_domain::sealing`).
        sealed_secret -> Nullable<Text>,
        /// The secret being rotated out, sealed; signs too until `previous_secret_expires_at`.
        previous_sealed_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamptz>,
        enabled -> Bool,
        created_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        rate_limit_per_sec -> Float8,
        rate_limit_burst -> Int4,
        circuit_state -> Text,
        circuit_open_until -> Nullable<Timestamptz>,
        circuit_changed_at -> Nullable<Timestamptz>,
        description -> Nullable<Text>,
        /// String → string map (a JSON object).
        metadata -> Jsonb,
        /// Header name (lower case) → value, sent with every attempt (a JSON object).
        headers -> Jsonb,
        /// NULL: the global setting (as for the two below).
        max_attempts -> Nullable<Int4>,
        max_delay_secs -> Nullable<Int4>,
        timeout_ms -> Nullable<Int4>,
        /// A SQL/JSON path predicate over `{type, source, data}`; NULL: every matching event.
        /// (Its parsed form, the generated column `filter_path`, is read only by fan-out SQL.)
        filter -> Nullable<Text>,
        /// Seconds of nothing but failed attempts before it is disabled; NULL: the worker's
        /// `auto_disable_after_secs`; 0: never.
        auto_disable_after_secs -> Nullable<Int4>,
        /// Why it was disabled by Dispatch (auto-disable); NULL when enabled or paused by hand.
        disabled_reason -> Nullable<Text>,
        disabled_at -> Nullable<Timestamptz>,
        /// When its current run of failed attempts began; NULL: its last attempt succeeded.
        failing_since -> Nullable<Timestamptz>,
        /// The share of the threshold (0, 50, 90) already warned about in this run.
        failing_warned -> Int2,
        /// `none` or `per_key` (`dispatch_domain::Ordering`).
        ordering -> Text,
        /// `skip` or `block` (`dispatch_domain::OnExhausted`).
        on_exhausted -> Text,
        /// Whose it is (migration 000023); `id` is stored as `TenantId::stored_id` spells it.
        tenant_id -> Text,
    }
}

diesel::table! {
    workers (id) {
        id -> Text,
        seen_at -> Timestamptz,
    }
}

diesel::table! {
    /// The console's sessions (migration 000019): only the SHA-256 of each cookie's token.
    console_sessions (token_sha256) {
        token_sha256 -> Bytea,
        created_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    events (id) {
        id -> Text,
        event_type -> Text,
        source -> Text,
        data -> Jsonb,
        received_at -> Timestamptz,
        traceparent -> Nullable<Text>,
        /// The producer's ordering key, if it gave one.
        ordering_key -> Nullable<Text>,
        /// Whose it is (migration 000023); `id` is stored as `TenantId::stored_id` spells it.
        tenant_id -> Text,
    }
}

diesel::table! {
    /// Tenants (migration 000023): never deleted, only marked so.
    tenants (id) {
        id -> Text,
        name -> Text,
        created_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        ingest_rate_per_sec -> Nullable<Float8>,
        ingest_burst -> Nullable<Int4>,
        max_subscriptions -> Nullable<Int4>,
        max_payload_bytes -> Nullable<Int4>,
    }
}

diesel::table! {
    deliveries (id) {
        id -> Int8,
        event_id -> Text,
        subscription_id -> Text,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        leased_by -> Nullable<Text>,
        leased_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        /// Its subscription is paused: due at 'infinity' in `delivery_queue` until resumed.
        held -> Bool,
        /// The event's ordering key, when its subscription ordered by key at ingest.
        ordering_key -> Nullable<Text>,
    }
}

diesel::table! {
    attempts (id) {
        id -> Int8,
        delivery_id -> Int8,
        event_id -> Text,
        subscription_id -> Text,
        attempt -> Int4,
        status_code -> Nullable<Int4>,
        latency_ms -> Int4,
        error_code -> Nullable<Text>,
        error -> Nullable<Text>,
        response_body -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(deliveries -> events (event_id));
diesel::joinable!(deliveries -> subscriptions (subscription_id));
diesel::joinable!(attempts -> deliveries (delivery_id));
diesel::allow_tables_to_appear_in_same_query!(subscriptions, events, deliveries, attempts, workers);
