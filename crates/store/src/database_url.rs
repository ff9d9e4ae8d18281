//! The database URL as a secret: what connects gets all of it ([`DatabaseUrl::expose`]), while
//! `{}` and `{:?}` mask its password, so a configuration that is logged, printed by
//! `check-config` or shown in a panic never carries it.

use std::fmt;

/// A PostgreSQL URL (`postgres://user:password@host:port/database?sslmode=…`) whose password
/// never prints: [`fmt::Display`] and [`fmt::Debug`] show it as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The whole URL, password included: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&redact(&self.0))
            .finish()
    }
}

/// The URL without its password (in the user info or a `password=` parameter).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
                    None => base.to_owned(),
                },
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    match query {
        None => base,
        Some(q) => {
            let params: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(
            redact("postgres://postgres:postgres@localhost:5432/dispatch?sslmode=disable"),
            "postgres://postgres:***@localhost:5432/dispatch?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://u:p@ss:w@rd@h/db"),
            "postgresql://u:***@h/db",
            "the host follows the last @"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=p&sslmode=prefer"),
            "postgres://h/db?user=u&password=***&sslmode=prefer"
        );
    }

    #[test]
    fn display_and_debug_never_show_the_password_and_expose_gives_it_all() {
        let url = DatabaseUrl::new("postgres://app:s3cret-pw@db:5432/dispatch?password=s3cret-pw");
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db:5432/dispatch?password=***"
        );
        assert!(!format!("{url:?}").contains("s3cret-pw"), "{url:?}");
        assert!(format!("{url:?}").contains("app:***@db"), "{url:?}");
        assert_eq!(
            url.expose(),
            "postgres://app:s3cret-pw@db:5432/dispatch?password=s3cret-pw"
        );
    }
}
