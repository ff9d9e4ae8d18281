//! A subscription's destination: an absolute http(s) URL with a host.

use std::fmt;

use crate::error::{ParseError, check_length};

/// Longest destination URL accepted, in characters.
pub const MAX_URL_LEN: usize = 2048;

/// Where a subscription's webhooks are POSTed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct DestinationUrl(String);

impl DestinationUrl {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        check_length(value, MAX_URL_LEN)?;
        let parsed = ::url::Url::parse(value)
            .map_err(|e| ParseError::Invalid(format!("is not an absolute URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ParseError::Invalid(format!(
                "must use http or https, not {:?}",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(ParseError::Invalid("must name a host".to_owned()));
        }
        if parsed.fragment().is_some() {
            return Err(ParseError::Invalid(
                "must not contain a fragment ('#...'); it is never sent".to_owned(),
            ));
        }
        Ok(Self(parsed.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DestinationUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_urls_in_normalised_form() {
        let u = DestinationUrl::parse("https://Example.com/webhook?x=1").expect("valid");
        assert_eq!(u.as_str(), "https://example.com/webhook?x=1");
        assert!(DestinationUrl::parse("http://127.0.0.1:9000/hook").is_ok());
    }

    #[test]
    fn refuses_other_schemes_relative_urls_and_fragments() {
        for bad in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://example.com/#frag",
            "mailto:a@b.c",
        ] {
            assert!(
                DestinationUrl::parse(bad).is_err(),
                "{bad:?} must be refused"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(
            DestinationUrl::parse(&long),
            Err(ParseError::TooLong { .. })
        ));
    }
}
