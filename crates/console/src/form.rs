//! Form bodies and query strings as ordered pairs (a field may repeat: selected deliveries),
//! with the console's one rule for blanks: an empty field is an absent one.

use crate::error::ConsoleError;

/// The pairs of an `application/x-www-form-urlencoded` text.
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(text: &str) -> Result<Self, ConsoleError> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(text)
            .map(Self)
            .map_err(|e| ConsoleError::invalid("form", format!("is not url-encoded: {e}")))
    }

    pub fn from_bytes(body: &[u8]) -> Result<Self, ConsoleError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ConsoleError::invalid("form", "is not UTF-8 text"))?;
        Self::parse(text)
    }

    /// The first non-blank value of `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
    }

    /// Whether the form has a field `name` at all, blank or not (a cleared input).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// Every non-blank value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanks_are_absent_and_fields_repeat() {
        let f = Fields::parse("a=&a=+x+&b=1&b=2&c=").expect("parses");
        assert_eq!(f.get("a"), Some("x"));
        assert_eq!(f.all("b").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(f.get("c"), None);
        assert!(
            f.has("c") && !f.has("d"),
            "a blank field is there, an absent one is not"
        );
        assert!(Fields::from_bytes(&[0xff]).is_err());
    }
}
