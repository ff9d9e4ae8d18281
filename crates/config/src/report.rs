//! What `check-config` prints for a binary: `OK` and its effective values (nothing secret:
//! the database URL as `dispatch_store::DatabaseUrl` shows it, keys named by id only), or every problem. Shared by
//! `dispatch-api admin check-config`, `dispatch-worker check-config` and `cargo xtask
//! check-config`, which differ only in the values they list.

use crate::ConfigError;

/// The report for one binary: whether its configuration is valid, and the text to print (on
/// stdout when valid, on stderr otherwise).
pub fn report<S>(
    binary: &str,
    loaded: Result<S, ConfigError>,
    values: impl Fn(&S) -> Vec<(&'static str, String)>,
) -> (bool, String) {
    match loaded {
        Ok(settings) => (
            true,
            format!("{binary}: OK\n{}", values_text(&values(&settings))),
        ),
        Err(e) => (false, format!("{binary}: {e}")),
    }
}

/// One `  key  value` line per value, the values aligned.
pub fn values_text(values: &[(&str, String)]) -> String {
    let width = values.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    values
        .iter()
        .map(|(k, v)| format!("  {k:<width$}  {v}\n"))
        .collect()
}

/// A duration in whole milliseconds, as the `*_ms` keys spell it.
pub fn millis(d: std::time::Duration) -> String {
    d.as_millis().to_string()
}

/// `Json` → `json`: an enum's value as the configuration spells it.
pub fn lowercase_debug(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}").to_ascii_lowercase()
}

/// The ids of the secret keys, never the keys, the sealing one first: `k2 (seals), k1`.
pub fn key_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    ids.enumerate()
        .map(|(i, id)| {
            if i == 0 {
                format!("{id} (seals)")
            } else {
                id.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_ok_with_aligned_values_or_lists_every_problem() {
        let values = |n: &u32| vec![("addr", n.to_string()), ("max_in_flight", "3".to_owned())];
        let (ok, text) = report("bin", Ok(7u32), values);
        assert!(ok);
        assert_eq!(text, "bin: OK\n  addr           7\n  max_in_flight  3\n");
        let (ok, text) = report(
            "bin",
            Err(ConfigError(vec![
                "a: bad".to_owned(),
                "b: worse".to_owned(),
            ])),
            values,
        );
        assert!(!ok);
        assert_eq!(
            text,
            "bin: invalid configuration:\n  - a: bad\n  - b: worse\n"
        );
    }

    #[test]
    fn key_ids_name_the_sealing_key_first() {
        assert_eq!(key_ids(["k2", "k1"].into_iter()), "k2 (seals), k1");
        assert_eq!(key_ids(["only"].into_iter()), "only (seals)");
    }
}
