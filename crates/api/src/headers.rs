//! Request header limits, answered `431 headers_too_large` in the API's JSON error shape.
//!
//! actix-web's HTTP/1 parser has its own fixed ceilings: more than 96 headers, or a request
//! head that does not fit in 128 KiB, is answered with a bare `431` and the connection closed.
//! These limits sit below those, so any client that stays under actix's ceilings gets a JSON
//! answer naming the limit.

use actix_web::http::header::HeaderMap;

use crate::error::ApiError;

/// Most request headers accepted (each repetition of a name counts).
pub const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values accepted, all headers together.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// `Err(431)` when `headers` hold more than [`MAX_HEADERS`] entries or [`MAX_HEADER_BYTES`].
pub fn check(headers: &HeaderMap) -> Result<(), ApiError> {
    let count = headers.len();
    if count > MAX_HEADERS {
        return Err(ApiError::HeadersTooLarge(format!(
            "the request has {count} headers; at most {MAX_HEADERS} are accepted"
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge(format!(
            "the request's headers hold {bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(count: usize, value_len: usize) -> HeaderMap {
        let mut map = HeaderMap::new();
        for i in 0..count {
            map.append(
                HeaderName::try_from(format!("x-h{i}")).expect("a valid name"),
                HeaderValue::from_str(&"v".repeat(value_len)).expect("a valid value"),
            );
        }
        map
    }

    #[test]
    fn headers_up_to_the_limits_pass_and_beyond_them_are_refused() {
        assert!(check(&headers(MAX_HEADERS, 10)).is_ok());
        let error = check(&headers(MAX_HEADERS + 1, 10)).expect_err("one too many");
        assert_eq!(error.code(), "headers_too_large");
        assert!(error.to_string().contains("65 headers"), "{error}");

        // x-h0 .. x-h3 are four bytes each.
        assert!(check(&headers(4, MAX_HEADER_BYTES / 4 - 4)).is_ok());
        let error = check(&headers(4, MAX_HEADER_BYTES / 4 - 3)).expect_err("four bytes over");
        assert!(error.to_string().contains("32772 bytes"), "{error}");
    }

    #[test]
    fn a_repeated_header_counts_each_time() {
        let mut map = HeaderMap::new();
        for _ in 0..=MAX_HEADERS {
            map.append(
                HeaderName::from_static("x-same"),
                HeaderValue::from_static("1"),
            );
        }
        assert!(check(&map).is_err());
    }
}
