//! Property-based fuzzing of body parsing and validation (tests only): arbitrary bytes and
//! JSON-like text never panic the parser, which agrees with serde_json except where it is
//! stricter, and the validators answer every parsed body with `Ok` or a 4xx, never a 500.
//! 256 cases per property (proptest's default), or `PROPTEST_CASES`.

use proptest::prelude::*;
use serde_json::Value;

use crate::body::check_storable_json;
use crate::error::ApiError;
use crate::json::{JsonError, parse};
use crate::routes::events::parse_new_event;
use crate::routes::subscriptions::parse_new_subscription;

/// Keys the validators look for, plus strangers.
const KEYS: &[&str] = &[
    "id",
    "type",
    "source",
    "data",
    "url",
    "event_types",
    "secret",
    "rate_limit",
    "per_second",
    "burst",
    "events",
    "x",
    "",
    "\\u0000",
    "\\u0069d",
];

/// JSON text, mostly well formed, built from the grammar's tokens so it reaches deep into the
/// parser and the validators; sometimes with a repeated key, sometimes cut or spliced.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,4})?",
        "\"([a-z.*_:/0-9 -]|\\\\[nt\"\\\\/]|\\\\u[0-9a-fA-F]{4}|[\u{80}-\u{10ffff}]){0,12}\"",
        "\"(https?|ftp)://[a-z0-9.:\\[\\]]{0,20}/[a-z]{0,5}\"",
        "\"whsec_[A-Za-z0-9+/=]{0,30}\"",
    ];
    let text = leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\": {v}"))
                    .collect();
                format!("{{{}}}", members.join(", "))
            }),
        ]
    });
    (text, any::<u8>(), any::<prop::sample::Index>(), ".{0,3}").prop_map(
        |(text, mode, at, junk)| {
            let cut = at.index(text.len() + 1);
            let cut = (0..=cut)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            match mode % 8 {
                0 => format!("{}{junk}{}", &text[..cut], &text[cut..]),
                1 => text[..cut].to_owned(),
                2 => format!("{text}{junk}"),
                _ => text,
            }
        },
    )
}

/// Whether an error is one the client caused (4xx), not ours (5xx).
fn is_client_error(error: &ApiError) -> bool {
    actix_web::ResponseError::status_code(error).is_client_error()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn the_parser_agrees_with_serde_json_except_where_it_is_stricter(text in json_text()) {
        let ours = parse(text.as_bytes());
        let theirs = serde_json::from_str::<Value>(&text);
        match (&ours, &theirs) {
            (Ok(value), Ok(expected)) => prop_assert_eq!(value, expected),
            (Ok(_), Err(e)) => prop_assert!(false, "accepted, serde_json refuses ({e}): {text}"),
            (Err(JsonError::DuplicateKey(path)), Ok(_)) => {
                prop_assert!(!path.is_empty(), "{text}");
            }
            (Err(JsonError::Syntax(message)), Ok(_)) => {
                prop_assert!(false, "refused what serde_json accepts ({message}): {text}");
            }
            (Err(JsonError::DuplicateKey(_)), Err(_)) => {
                // A duplicate before the syntax error: either answer is a 400.
            }
            (Err(JsonError::Syntax(_)), Err(_)) => {}
        }
    }

    #[test]
    fn validators_answer_any_body_with_ok_or_a_client_error(text in json_text()) {
        if let Ok(value) = parse(text.as_bytes()) {
            let _ = check_storable_json(&value);
            if let Err(e) = parse_new_event(&dispatch_domain::TenantId::default_tenant(), value.clone()) {
                prop_assert!(is_client_error(&e), "{e:?} for {text}");
            }
            if let Err(e) = parse_new_subscription(&dispatch_domain::TenantId::default_tenant(), value) {
                prop_assert!(is_client_error(&e), "{e:?} for {text}");
            }
        }
    }

    #[test]
    fn a_repeated_key_is_always_found(
        text in json_text(),
        key in prop::sample::select(KEYS),
    ) {
        // An object holding the same key twice, the second time at the end, around any value.
        let doubled = format!("{{\"{key}\": 1, \"w\": {text}, \"{key}\": 2}}");
        if serde_json::from_str::<Value>(&text).is_ok() {
            prop_assert!(matches!(parse(doubled.as_bytes()), Err(JsonError::DuplicateKey(_))));
        }
    }
}
