//! Property-based fuzzing of every parser that sees caller input: ids, event types, patterns,
//! sources, destination URLs, address ranges, allow-lists and secrets. None may panic, and what
//! one accepts must survive a second trip through it unchanged. Bounded
//! (proptest's default, 256 cases each) so it runs in seconds in `cargo xtask test`;
//! `PROPTEST_CASES=100000` fuzzes longer.

use std::net::IpAddr;

use dispatch_domain::destination::{Cidr, DestinationPolicy, classify};
use dispatch_domain::signature::{SigningKey, validate_secret};
use dispatch_domain::url::Host;
use dispatch_domain::{DestinationUrl, EventId, EventType, Pattern, Source, SubscriptionId};
use proptest::prelude::*;

/// Text that is mostly the grammar's own characters, with the odd stranger: shrinks to small,
/// readable failures and reaches the interesting branches far more often than random Unicode.
fn grammar_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_.:*/\\-]{0,140}",
        "[a-z]{1,8}(\\.[a-z*]{0,8}){0,6}",
        "(whsec_)?[A-Za-z0-9+/=]{0,40}",
        "[\\x00-\\x20\\x7f\u{80}-\u{10ffff}a.]{0,10}",
    ]
}

fn url_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(https?|ftp|file|HTTP)://[a-zA-Z0-9.:@\\[\\]%_-]{0,40}(/[a-zA-Z0-9%?#=&./-]{0,30})?",
        "https?://\\[[0-9a-fA-F:.]{0,40}\\](:[0-9]{0,6})?/",
        "https?://[0-9x.]{1,20}/",
        "https?://[^\\s]{0,60}",
    ]
}

fn range_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9.]{1,16}(/[0-9]{0,4})?",
        "[0-9a-fA-F:.]{1,40}(/[0-9]{0,4})?",
        "([0-9./: ,a-f]{0,20},){0,4}",
    ]
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        any::<[u8; 4]>().prop_map(|o| IpAddr::from(std::net::Ipv4Addr::from(o).to_ipv6_mapped())),
    ]
}

proptest! {
    #[test]
    fn identifier_and_name_parsers_never_panic_and_round_trip(text in grammar_text()) {
        if let Ok(id) = EventId::parse(&text) {
            prop_assert_eq!(id.as_str(), text.as_str());
        }
        if let Ok(id) = SubscriptionId::parse(&text) {
            prop_assert_eq!(id.as_str(), text.as_str());
        }
        if let Ok(source) = Source::parse(&text) {
            prop_assert_eq!(source.as_str(), text.as_str());
        }
        if let Ok(event_type) = EventType::parse(&text) {
            prop_assert_eq!(event_type.as_str(), text.as_str());
            // Every pattern a type lists parses, and matches it.
            for listed in event_type.matching_patterns() {
                let pattern = Pattern::parse(&listed);
                prop_assert!(pattern.is_ok(), "{listed:?} does not parse");
                prop_assert!(pattern.is_ok_and(|p| p.matches(&event_type)), "{listed:?}");
            }
        }
        if let Ok(pattern) = Pattern::parse(&text) {
            prop_assert_eq!(pattern.as_str(), text.as_str());
        }
    }

    #[test]
    fn destination_urls_never_panic_and_are_stored_in_a_stable_form(text in url_text()) {
        if let Ok(url) = DestinationUrl::parse(&text) {
            let again = DestinationUrl::parse(url.as_str());
            prop_assert_eq!(again.as_ref(), Ok(&url), "normalising twice changes {:?}", text);
            match url.host() {
                Host::Ip(ip) => {
                    classify(ip);
                }
                Host::Name(name) => prop_assert!(!name.is_empty(), "{text:?} has no host"),
            }
        }
    }

    #[test]
    fn ranges_and_allow_lists_never_panic_and_allow_what_they_name(
        text in range_text(),
        ip in address(),
    ) {
        if let Ok(range) = text.parse::<Cidr>() {
            range.contains(ip);
            // A range of one address contains that address.
            if let Ok(single) = text.trim().parse::<IpAddr>() {
                prop_assert!(range.contains(single));
            }
        }
        if let Ok(policy) = DestinationPolicy::parse(&text) {
            let _ = policy.check(ip);
            let _ = policy.first_refused([ip]);
        }
        let everything = DestinationPolicy::parse("0.0.0.0/0, ::/0").map_err(|e| e.to_string());
        prop_assert_eq!(everything.map(|p| p.check(ip)), Ok(Ok(())));
    }

    #[test]
    fn secrets_never_panic_and_valid_ones_sign(
        secret in grammar_text(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        timestamp in any::<i64>(),
    ) {
        if validate_secret(&secret).is_ok() {
            prop_assert!(SigningKey::from_secret(&secret).is_ok(), "{secret:?}");
        }
        if let Ok(key) = SigningKey::from_secret(&secret) {
            let signature = key.dispatch_signature(&body);
            prop_assert_eq!(signature.len(), "sha256=".len() + 64);
            prop_assert_eq!(key.dispatch_signature(&body), signature);
            let standard = key.standard_signature("msg_1", timestamp, &body);
            prop_assert!(standard.starts_with("v1,"), "{standard}");
        }
    }
}
