//! The store's `tools` feature stays out of what ships: no shipped crate turns it on, the release
//! build of the binaries resolves it off, and the tool-only code is compiled only with it.

use super::tests::root;

/// The crates whose code ships in the release binaries (`cargo build -p dispatch-api -p
/// dispatch-worker`).
const SHIPPED: &[&str] = &[
    "dispatch-domain",
    "dispatch-config",
    "dispatch-telemetry",
    "dispatch-store",
    "dispatch-console",
    "dispatch-api",
    "dispatch-worker",
];

/// dispatch-store's feature for SQL that only tools and tests use.
const TOOLS: &str = "tools";

/// What dispatch-store compiles only with [`TOOLS`]: `(file, the start of the line that
/// declares it)`. Each must carry `#[cfg(feature = "tools")]` among its attributes.
const TOOL_ONLY: &[(&str, &str)] = &[
    ("crates/store/src/lib.rs", "pub mod admin;"),
    ("crates/store/src/queries/mod.rs", "pub mod bench;"),
    ("crates/store/src/queries/mod.rs", "pub mod chaos;"),
    (
        "crates/store/src/queries/attempts.rs",
        "pub async fn of_event(",
    ),
    ("crates/store/src/queries/listing.rs", "mod plans;"),
    (
        "crates/store/src/queries/subscription_changes.rs",
        "pub async fn held_count(",
    ),
    (
        "crates/store/src/queries/subscriptions/secrets.rs",
        "pub struct StoredSecretColumns",
    ),
    (
        "crates/store/src/queries/subscriptions/secrets.rs",
        "pub async fn stored_secret_columns(",
    ),
    (
        "crates/store/src/queries/subscriptions/secrets.rs",
        "pub async fn table_text(",
    ),
];

/// Runs cargo (the one running the tests when known) in the workspace and returns stdout.
fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(&cargo)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{cargo} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cargo} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// Everything `feature` of `package` turns on, itself included (`cargo metadata`'s
/// `features` map followed transitively).
fn feature_closure(package: &serde_json::Value, feature: &str) -> Vec<String> {
    let mut seen = vec![feature.to_owned()];
    let mut i = 0;
    while let Some(current) = seen.get(i).cloned() {
        i += 1;
        for next in package["features"][current.as_str()]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
        {
            if !seen.iter().any(|s| s == next) {
                seen.push(next.to_owned());
            }
        }
    }
    seen
}

#[test]
fn shipped_crates_never_turn_on_the_stores_tools_feature() {
    let metadata: serde_json::Value =
        serde_json::from_str(&cargo(&["metadata", "--format-version", "1", "--no-deps"]))
            .expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let store = packages
        .iter()
        .find(|p| p["name"] == "dispatch-store")
        .expect("dispatch-store is a member");
    assert!(
        store["features"][TOOLS].is_array(),
        "dispatch-store has no `{TOOLS}` feature: rename TOOLS with it"
    );
    let mut wrong = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        if !SHIPPED.contains(&name) {
            continue;
        }
        // [dependencies] and [build-dependencies]; dev-dependencies only build tests.
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let turns_on = dep["features"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f == TOOLS);
            if dep["name"] == "dispatch-store" && dep["kind"] != "dev" && turns_on {
                wrong.push(format!(
                    "{name} [dependencies]: dispatch-store with `{TOOLS}`"
                ));
            }
        }
        let default = feature_closure(package, "default");
        let on = |f: &String| {
            (name == "dispatch-store" && f == TOOLS)
                || f == &format!("dispatch-store/{TOOLS}")
                || f == &format!("dispatch-store?/{TOOLS}")
        };
        if let Some(f) = default.iter().find(|f| on(f)) {
            wrong.push(format!("{name}'s default features turn on {f}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "SQL for tools must stay out of the binaries (turn `{TOOLS}` on in \
         [dev-dependencies] or in a tool crate): {wrong:#?}"
    );
}

#[test]
fn the_release_build_of_the_binaries_compiles_no_tool_code() {
    // The same feature resolution as `cargo build -p dispatch-api -p dispatch-worker`
    // (dev-dependencies left out): which workspace crates it builds, with which features.
    let tree = cargo(&[
        "tree",
        "--offline",
        "-p",
        "dispatch-api",
        "-p",
        "dispatch-worker",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "-f",
        "{p} [{f}]",
    ]);
    let built: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("dispatch-"))
        .collect();
    let store: Vec<&str> = built
        .iter()
        .copied()
        .filter(|l| l.starts_with("dispatch-store "))
        .collect();
    assert!(
        !store.is_empty(),
        "the binaries build dispatch-store:\n{tree}"
    );
    let with_tools: Vec<&str> = store
        .into_iter()
        .filter(|l| {
            l.split_once('[')
                .and_then(|(_, f)| f.split_once(']'))
                .is_some_and(|(f, _)| f.split(',').any(|f| f.trim() == TOOLS))
        })
        .collect();
    assert!(
        with_tools.is_empty(),
        "the release build turns on dispatch-store/{TOOLS}: {with_tools:#?}"
    );
    let not_shipped: Vec<&str> = built
        .into_iter()
        .filter(|l| !SHIPPED.iter().any(|s| l.starts_with(&format!("{s} "))))
        .collect();
    assert!(
        not_shipped.is_empty(),
        "the release build links tool or test crates: {not_shipped:#?}"
    );
}

#[test]
fn tool_only_store_code_is_compiled_only_with_the_tools_feature() {
    for (file, declaration) in TOOL_ONLY {
        let text = std::fs::read_to_string(root().join(file)).expect("readable source");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(declaration))
            .unwrap_or_else(|| panic!("{file}: no `{declaration}` (update TOOL_ONLY)"));
        let gated = lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("///") || l.starts_with("#["))
            .any(|l| *l == "#[cfg(feature = \"tools\")]");
        assert!(
            gated,
            "{file}: `{declaration}` is compiled without #[cfg(feature = \"{TOOLS}\")]"
        );
    }
}

#[test]
fn tools_feature_check_reads_features_the_way_cargo_tree_prints_them() {
    // xtask turns the feature on: the same reading must find it there, or the check above
    // would pass whatever the binaries build.
    let tree = cargo(&[
        "tree",
        "--offline",
        "-p",
        "xtask",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "-f",
        "{p} [{f}]",
    ]);
    assert!(
        tree.lines()
            .any(|l| l.starts_with("dispatch-store ") && l.contains(TOOLS)),
        "{tree}"
    );
}
