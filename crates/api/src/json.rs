//! Strict JSON parsing of request bodies: serde_json's grammar (RFC 8259, UTF-8, no trailing
//! data, at most 128 levels) plus what it lets through silently — a key repeated in an object
//! (serde_json keeps the last) and a leading byte order mark are refused.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON: serde_json's message (with line and column) or ours.
    Syntax(String),
    /// An object has the same key twice; the path of the repeated key, e.g. `data.items[2].sku`.
    DuplicateKey(String),
}

/// Parses `bytes` as one JSON value, refusing duplicate keys at any depth.
///
/// Costs one pass, like `serde_json::from_slice::<Value>`: the duplicate check is the map
/// insertion itself, and the path of a duplicate is only assembled on the way out of an error.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(JsonError::Syntax(
            "the body starts with a byte order mark (EF BB BF); send UTF-8 JSON without one"
                .to_owned(),
        ));
    }
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict {
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(reversed)) => Err(JsonError::DuplicateKey(path_of(&reversed))),
        (Err(e), None) => Err(JsonError::Syntax(e.to_string())),
    }
}

/// One step of a path into a JSON document.
#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `a.b[2].c`; keys that are not plain words are quoted: `a["x.y"]`.
fn path_of(reversed: &[Segment]) -> String {
    let mut path = String::new();
    for segment in reversed.iter().rev() {
        match segment {
            Segment::Index(i) => {
                let _ = write!(path, "[{i}]");
            }
            Segment::Key(key)
                if !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Key(key) => {
                let quoted = serde_json::to_string(key).unwrap_or_default();
                let _ = write!(path, "[{quoted}]");
            }
        }
    }
    path
}

/// A `Value` visitor that fails on a repeated key and, once one was found, records each
/// enclosing key or index while the error travels back up.
#[derive(Clone, Copy)]
struct Strict<'a> {
    /// The reversed path of the first duplicate key found, if any.
    duplicate: &'a RefCell<Option<Vec<Segment>>>,
}

impl Strict<'_> {
    fn on_the_way_out(self, segment: impl FnOnce() -> Segment) {
        if let Some(path) = self.duplicate.borrow_mut().as_mut() {
            path.push(segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text cannot spell NaN or infinity; serde_json refuses numbers that overflow.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    let index = items.len();
                    self.on_the_way_out(|| Segment::Index(index));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = match access.next_value_seed(self) {
                Ok(value) => value,
                Err(e) => {
                    self.on_the_way_out(|| Segment::Key(key));
                    return Err(e);
                }
            };
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(taken) => {
                    let key = taken.key().clone();
                    *self.duplicate.borrow_mut() = Some(vec![Segment::Key(key)]);
                    return Err(de::Error::custom("duplicate key"));
                }
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn syntax(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(JsonError::Syntax(message)) => message,
            other => panic!("{:?}: expected a syntax error, got {other:?}", bytes),
        }
    }

    #[test]
    fn valid_json_parses_exactly_as_serde_json_does() {
        for text in [
            "{}",
            "[]",
            "null",
            " \t\r\n{\"a\": [1, -2, 3.5, 1e300, 18446744073709551615, -9223372036854775808]}\n ",
            r#"{"a": {"b": {"c": [true, false, null, "x\u00e9\ud83d\ude00"]}}, "b": {"a": 1}}"#,
            r#"[{"k": 1}, {"k": 2}]"#,
            r#""just a string""#,
        ] {
            let expected: Value = serde_json::from_str(text).expect("valid JSON");
            assert_eq!(parse(text.as_bytes()), Ok(expected), "{text}");
        }
    }

    #[test]
    fn a_repeated_key_is_refused_with_its_path_at_any_depth() {
        for (text, path) in [
            (r#"{"id": "a", "id": "b"}"#, "id"),
            (r#"{"id": "a", "data": {"x": 1, "y": 2, "x": 1}}"#, "data.x"),
            (
                r#"{"data": {"items": [{"sku": 1}, {"n": 1, "sku": 2, "sku": 2}]}}"#,
                "data.items[1].sku",
            ),
            (
                r#"[[{}], [{"a.b": {"c": 1, "c": 1}}]]"#,
                r#"[1][0]["a.b"].c"#,
            ),
            (r#"{"": 1, "": 2}"#, r#"[""]"#),
            (
                r#"{"events": [{"id": 1}, {"id": 2, "id": 3}]}"#,
                "events[1].id",
            ),
        ] {
            assert_eq!(
                parse(text.as_bytes()),
                Err(JsonError::DuplicateKey(path.to_owned())),
                "{text}"
            );
        }
    }

    #[test]
    fn keys_equal_only_after_unescaping_are_duplicates() {
        assert_eq!(
            parse(br#"{"a": 1, "\u0061": 2}"#),
            Err(JsonError::DuplicateKey("a".to_owned()))
        );
        // The same key in sibling objects is fine.
        assert_eq!(
            parse(br#"[{"a": 1}, {"a": 2}]"#),
            Ok(json!([{"a": 1}, {"a": 2}]))
        );
    }

    #[test]
    fn trailing_data_is_refused_but_trailing_whitespace_is_not() {
        assert!(syntax(b"{\"a\": 1} x").contains("trailing characters"));
        assert!(syntax(b"{}{}").contains("trailing characters"));
        assert!(syntax(b"[1] [2]").contains("trailing characters"));
        assert!(syntax(b"{} \0").contains("trailing characters"));
        assert_eq!(parse(b"{}\r\n\t "), Ok(json!({})));
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_refused() {
        // A bare 0xff inside a string, an overlong encoding, a truncated sequence, a CESU-8
        // surrogate: none is UTF-8.
        for bytes in [
            &b"{\"a\": \"\xff\"}"[..],
            b"{\"a\": \"\xc0\xaf\"}",
            b"{\"a\": \"\xe2\x82\"}",
            b"{\"a\": \"\xed\xa0\x80\"}",
            b"{\"\xfe\": 1}",
        ] {
            let message = syntax(bytes);
            assert!(message.contains("invalid unicode code point"), "{message}");
        }
        syntax(b"\xff\xfe{}");
        for text in [
            r#"{"a": "\ud800"}"#,
            r#"{"a": "\udc00x"}"#,
            r#"{"a": "\ud800\u0041"}"#,
        ] {
            let message = syntax(text.as_bytes());
            assert!(message.contains("hex escape"), "{text}: {message}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_refused_with_a_clear_message() {
        assert!(syntax(b"\xEF\xBB\xBF{}").contains("byte order mark"));
    }

    #[test]
    fn nesting_deeper_than_serde_jsons_limit_is_a_syntax_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(syntax(deep.as_bytes()).contains("recursion limit"));
        let deep = "{\"a\":".repeat(100_000);
        assert!(syntax(deep.as_bytes()).contains("recursion limit"));
        let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn empty_and_truncated_bodies_are_syntax_errors() {
        for bytes in [
            &b""[..],
            b"  ",
            b"{",
            b"{\"a\"",
            b"{\"a\":",
            b"[1,",
            b"\"abc",
        ] {
            syntax(bytes);
        }
    }
}
