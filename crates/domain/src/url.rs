//! A subscription's destination: an absolute http(s) URL with a host.

use std::fmt;
use std::net::IpAddr;

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
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ParseError::Invalid(
                "must not contain credentials ('user:password@'): they would be stored and \
                 shown in plain text; have the receiver check the signature instead"
                    .to_owned(),
            ));
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

    /// The host: an IP address when the URL names one (in any spelling the URL standard
    /// accepts, such as `http://2130706433/` for 127.0.0.1), otherwise a domain name.
    pub fn host(&self) -> Host {
        match ::url::Url::parse(&self.0)
            .ok()
            .as_ref()
            .and_then(::url::Url::host)
        {
            Some(::url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
            Some(::url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip)),
            Some(::url::Host::Domain(name)) => Host::Name(name.to_owned()),
            // Unreachable: `parse` checked the URL and its host, and stored it normalised.
            None => Host::Name(String::new()),
        }
    }
}

/// A destination URL's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A domain name, lower-cased (internationalised names in their ASCII form).
    Name(String),
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
    fn the_host_is_an_address_in_any_spelling_or_a_lower_cased_name() {
        for (url, host) in [
            (
                "http://127.0.0.1:9000/hook",
                Host::Ip("127.0.0.1".parse().expect("ip")),
            ),
            (
                "http://2130706433/",
                Host::Ip("127.0.0.1".parse().expect("ip")),
            ),
            ("http://0x7f.1/", Host::Ip("127.0.0.1".parse().expect("ip"))),
            ("http://[::1]/", Host::Ip("::1".parse().expect("ip"))),
            (
                "http://[::ffff:10.0.0.1]/",
                Host::Ip("::ffff:10.0.0.1".parse().expect("ip")),
            ),
            (
                "https://Hooks.Example.COM./x",
                Host::Name("hooks.example.com.".to_owned()),
            ),
            (
                "https://bücher.example/",
                Host::Name("xn--bcher-kva.example".to_owned()),
            ),
        ] {
            let parsed = DestinationUrl::parse(url).expect("valid");
            assert_eq!(parsed.host(), host, "{url}");
        }
    }

    #[test]
    fn refuses_credentials_in_the_url_and_says_why() {
        for bad in [
            "https://user:pass@example.com/hook",
            "https://user@example.com/hook",
            "https://:secret@example.com/hook",
        ] {
            let err = DestinationUrl::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("must not contain credentials"), "{bad}: {err}");
        }
        assert!(DestinationUrl::parse("https://example.com/u@x").is_ok());
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
        let longest = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN - 20));
        assert!(DestinationUrl::parse(&longest).is_ok());
        assert!(matches!(
            DestinationUrl::parse(&long),
            Err(ParseError::TooLong { .. })
        ));
    }
}
