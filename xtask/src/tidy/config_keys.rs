//! Each configuration key is written once, in code (each binary's `KEYS`: name, variables,
//! default, help); the README's configuration tables, the Helm chart and `check-config` must say
//! the same, or these tests name the difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dispatch_config::Key;
use serde_json::Value;

use super::tests::root;

/// The binaries: their name (the README's heading), their key table and their `check-config`
/// values for a valid configuration.
fn binaries() -> Vec<(&'static str, &'static [Key], Vec<&'static str>)> {
    let env: HashMap<String, String> = [
        ("DISPATCH_DEVELOPMENT", "true"),
        ("DISPATCH_API_KEYS", dispatch_config::development::API_KEY),
        (
            "DISPATCH_SECRET_KEYS",
            dispatch_config::development::SECRET_KEYS,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let api = dispatch_api::config::Settings::load_from(None, &env).expect("a valid API config");
    let worker =
        dispatch_worker::config::Settings::load_from(None, &env).expect("a valid worker config");
    let names = |values: Vec<(&'static str, String)>| values.into_iter().map(|(k, _)| k).collect();
    vec![
        (
            "dispatch-api",
            dispatch_api::config::KEYS,
            names(dispatch_api::admin::check_config::values(&api)),
        ),
        (
            "dispatch-worker",
            dispatch_worker::config::KEYS,
            names(dispatch_worker::cli::values(&worker)),
        ),
    ]
}

/// `(key, environment, default)` cells of the README's table under ``### `binary` ``, without
/// their backticks.
fn readme_table(binary: &str) -> Vec<(String, String, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let heading = format!("### `{binary}`");
    let rows: Vec<(String, String, String)> = readme
        .lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let cell = |i: usize| cells.get(i).copied().unwrap_or_default().to_owned();
            (cell(0).replace('`', ""), cell(1).replace('`', ""), cell(2))
        })
        .collect();
    assert!(!rows.is_empty(), "README.md has no table under {heading}");
    rows
}

/// The `DISPATCH_*` variable of a key.
fn dispatch_variable(key: &Key) -> &'static str {
    key.env
        .split('/')
        .map(str::trim)
        .find(|v| v.starts_with("DISPATCH_"))
        .expect("every key has a DISPATCH_ variable")
}

#[test]
fn the_readme_tables_list_exactly_the_keys_with_their_variables_and_defaults() {
    let api_default = |name: &str| {
        dispatch_api::config::KEYS
            .iter()
            .find(|k| k.name == name)
            .map(|k| k.default)
    };
    let mut wrong = Vec::new();
    for (binary, keys, _) in binaries() {
        let rows = readme_table(binary);
        let documented: BTreeSet<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
        let coded: BTreeSet<&str> = keys.iter().map(|k| k.name).collect();
        for missing in coded.difference(&documented) {
            wrong.push(format!(
                "{binary}: `{missing}` is not in the README's table"
            ));
        }
        for extra in documented.difference(&coded) {
            wrong.push(format!(
                "{binary}: the README documents `{extra}`, which it does not read"
            ));
        }
        for (name, env, default) in &rows {
            let Some(key) = keys.iter().find(|k| k.name == name) else {
                continue;
            };
            if env.replace(' ', "") != key.env.replace(' ', "") {
                wrong.push(format!(
                    "{binary}: `{name}` is read from {}, the README says {env}",
                    key.env
                ));
            }
            // The default cell starts with the value in backticks, or says there is none.
            let shown = default
                .strip_prefix('`')
                .and_then(|d| d.split('`').next())
                .map(str::to_owned);
            let agrees = match shown {
                Some(value) => value == key.default,
                None if default.starts_with("as for the API") => {
                    api_default(name) == Some(key.default)
                }
                None => key.default.is_empty(),
            };
            if !agrees {
                wrong.push(format!(
                    "{binary}: `{name}` defaults to {:?}, the README says {default}",
                    key.default
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Lines of `check-config` that stand for several keys: `(binary, line, keys)`.
const SHOWN_AS: &[(&str, &str, &[&str])] =
    &[("dispatch-api", "auth", &["api_keys", "auth_disabled"])];

/// Keys `check-config` does not show (yet): `development` only decides at start-up whether the
/// published keys are accepted; `allow_destinations` has no printed form yet. Shrink, never grow.
const NOT_SHOWN: &[(&str, &str)] = &[
    ("dispatch-api", "development"),
    ("dispatch-api", "allow_destinations"),
    ("dispatch-worker", "development"),
    ("dispatch-worker", "allow_destinations"),
];

#[test]
fn check_config_shows_every_key_once() {
    for (binary, keys, shown) in binaries() {
        let coded: BTreeSet<&str> = keys.iter().map(|k| k.name).collect();
        let mut listed = BTreeSet::new();
        for line in &shown {
            let stands_for = SHOWN_AS
                .iter()
                .find(|(b, l, _)| *b == binary && l == line)
                .map_or_else(|| vec![*line], |(_, _, keys)| keys.to_vec());
            for key in stands_for {
                assert!(
                    listed.insert(key),
                    "{binary}: check-config shows `{key}` twice"
                );
            }
        }
        listed.extend(
            NOT_SHOWN
                .iter()
                .filter(|(b, _)| *b == binary)
                .map(|(_, k)| *k),
        );
        assert_eq!(
            listed, coded,
            "{binary}: check-config's keys (with SHOWN_AS and NOT_SHOWN) and the key table differ"
        );
    }
}

/// Keys the chart sets from other values (the database secret, the port, the log format, the
/// key secrets) rather than from `<binary>.config`.
const SET_ELSEWHERE: &[&str] = &[
    "addr",
    "database_url",
    "log_format",
    "api_keys",
    "secret_keys",
];

#[test]
fn the_helm_chart_takes_every_other_key_with_its_default() {
    let chart = root().join("helm/dispatch");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart.join("values.schema.json")).expect("values.schema.json"),
    )
    .expect("values.schema.json is JSON");
    let values = std::fs::read_to_string(chart.join("values.yaml")).expect("values.yaml");
    let mut wrong = Vec::new();
    for ((binary, keys, _), section) in binaries().into_iter().zip(["api", "worker"]) {
        let config = &schema["properties"][section]["properties"]["config"];
        let described = config["description"].as_str().unwrap_or_default();
        let properties = config["properties"].as_object().expect("config properties");
        let variables: BTreeMap<&str, &Key> =
            keys.iter().map(|k| (dispatch_variable(k), k)).collect();
        for property in properties.keys() {
            if !variables.contains_key(property.as_str()) {
                wrong.push(format!(
                    "{section}.config.{property}: {binary} reads no such key"
                ));
            }
        }
        for (variable, key) in &variables {
            if SET_ELSEWHERE.contains(&key.name) {
                let named = key
                    .env
                    .split('/')
                    .map(str::trim)
                    .any(|v| described.contains(v));
                if !named || properties.contains_key(*variable) {
                    wrong.push(format!(
                        "{section}.config: `{}` is set elsewhere; the schema should say so and not take {variable}",
                        key.name
                    ));
                }
                continue;
            }
            let Some(property) = properties.get(*variable) else {
                wrong.push(format!("{section}.config: no {variable} (`{}`)", key.name));
                continue;
            };
            let description = property["description"].as_str().unwrap_or_default();
            if !key.default.is_empty() && !description.contains(&format!("default {}", key.default))
            {
                wrong.push(format!(
                    "{section}.config.{variable}: the description should say `default {}`",
                    key.default
                ));
            }
        }
        // values.yaml's commented examples under `<section>.config` show the defaults.
        for (variable, example) in commented_examples(&values, section) {
            match variables.get(variable.as_str()) {
                Some(key) if key.default == example => {}
                Some(key) => wrong.push(format!(
                    "values.yaml {section}.config: `# {variable}: {example}` but the default is {:?}",
                    key.default
                )),
                None => wrong.push(format!(
                    "values.yaml {section}.config: {binary} reads no {variable}"
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// `(variable, value)` of the `# DISPATCH_X: value` lines right under `<section>:`'s `config:`.
fn commented_examples(values: &str, section: &str) -> Vec<(String, String)> {
    let examples: Vec<(String, String)> = values
        .lines()
        .skip_while(|l| *l != format!("{section}:"))
        .skip_while(|l| !l.trim_start().starts_with("config:"))
        .skip(1)
        .map(str::trim)
        .take_while(|l| l.starts_with("# DISPATCH_"))
        .filter_map(|l| {
            let (variable, rest) = l.strip_prefix("# ")?.split_once(": ")?;
            let value = rest.split('#').next()?.trim().trim_matches('"');
            Some((variable.to_owned(), value.to_owned()))
        })
        .collect();
    assert!(
        !examples.is_empty(),
        "values.yaml: no commented examples under {section}.config"
    );
    examples
}
