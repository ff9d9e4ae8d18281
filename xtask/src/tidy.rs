//! Rules of the house that check themselves (run by `cargo xtask test` as ordinary tests): every
//! Rust file says what it owns in a `//!` line, files stay small (an allow-list of today's long
//! files that may only shrink), internal crates are named through the workspace, and the
//! dependency arrows between crates point the way docs/architecture.md draws them; SQL that only
//! tools use stays out of the shipped binaries (`tools.rs`); each configuration key is written
//! once, in code, and the README, the Helm chart and `check-config` agree with it
//! (`config_keys.rs`).

#[cfg(test)]
mod config_keys;
#[cfg(test)]
mod tools;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// Longest a Rust file may be, in lines, unless it is in [`LONG_FILES`].
    const MAX_LINES: usize = 400;

    /// Files longer than [`MAX_LINES`] today. The list may only shrink: a file listed here that
    /// has come down to the limit fails the test until its entry is removed, and no file may be
    /// added.
    const LONG_FILES: &[&str] = &[];

    /// The internal crates each crate may depend on (`[dependencies]`): domain at the ground,
    /// store above it, the binaries above both and never on each other, and nothing shipped on
    /// a test or tool crate.
    const ALLOWED: &[(&str, &[&str])] = &[
        ("dispatch-domain", &[]),
        ("dispatch-config", &[]),
        ("dispatch-telemetry", &[]),
        ("dispatch-store", &["dispatch-domain"]),
        // The console is a library the API mounts: it reads through the store and changes
        // through the API's route code, handed in (never a dependency on the API).
        ("dispatch-console", &["dispatch-domain", "dispatch-store"]),
        (
            "dispatch-api",
            &[
                "dispatch-config",
                "dispatch-console",
                "dispatch-domain",
                "dispatch-store",
                "dispatch-telemetry",
            ],
        ),
        (
            "dispatch-worker",
            &[
                "dispatch-config",
                "dispatch-domain",
                "dispatch-store",
                "dispatch-telemetry",
            ],
        ),
        (
            "dispatch-test-support",
            &["dispatch-domain", "dispatch-store"],
        ),
        ("dispatch-e2e", &[]),
        // The tools' library (bench, chaos, process control): a tool crate, so no list above
        // names it and nothing shipped or used by the tests can depend on it.
        (
            "dispatch-harness",
            &[
                "dispatch-config",
                "dispatch-domain",
                "dispatch-store",
                "dispatch-test-support",
                "dispatch-worker",
            ],
        ),
    ];

    pub(super) fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask sits in the workspace")
            .to_path_buf()
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every `.rs` file of the workspace, as paths relative to its root (`/` separated).
    fn sources() -> Vec<(String, String)> {
        let root = root();
        let mut files = Vec::new();
        rust_files(&root.join("crates"), &mut files);
        rust_files(&root.join("xtask"), &mut files);
        let mut out: Vec<(String, String)> = files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).expect("readable source");
                let relative = path
                    .strip_prefix(&root)
                    .expect("under the root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                (relative, text)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn every_rust_file_opens_with_a_line_saying_what_it_owns() {
        let missing: Vec<String> = sources()
            .into_iter()
            .filter(|(_, text)| {
                !text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.starts_with("//!"))
            })
            .map(|(path, _)| path)
            .collect();
        assert!(missing.is_empty(), "no `//!` line first: {missing:#?}");
    }

    #[test]
    fn files_stay_under_the_line_limit_and_the_allow_list_only_shrinks() {
        let lengths: BTreeMap<String, usize> = sources()
            .into_iter()
            .map(|(path, text)| (path, text.lines().count()))
            .collect();
        let too_long: Vec<String> = lengths
            .iter()
            .filter(|(path, n)| **n > MAX_LINES && !LONG_FILES.contains(&path.as_str()))
            .map(|(path, n)| format!("{path}: {n} lines"))
            .collect();
        assert!(
            too_long.is_empty(),
            "over {MAX_LINES} lines (split them; the allow-list may not grow): {too_long:#?}"
        );
        let stale: Vec<&str> = LONG_FILES
            .iter()
            .copied()
            .filter(|path| lengths.get(*path).is_none_or(|n| *n <= MAX_LINES))
            .collect();
        assert!(
            stale.is_empty(),
            "short enough (or gone) now: remove them from LONG_FILES: {stale:#?}"
        );
    }

    /// `(crate name, section, dependency name, the line)` for every `dispatch-*` dependency in
    /// the workspace's manifests.
    fn internal_dependencies() -> Vec<(String, String, String, String)> {
        let root = root();
        let mut manifests = vec![root.join("xtask/Cargo.toml")];
        if let Ok(entries) = std::fs::read_dir(root.join("crates")) {
            manifests.extend(entries.flatten().map(|e| e.path().join("Cargo.toml")));
        }
        let mut out = Vec::new();
        for manifest in manifests {
            let Ok(text) = std::fs::read_to_string(&manifest) else {
                continue;
            };
            let (mut name, mut section) = (String::new(), String::new());
            for line in text.lines().map(str::trim) {
                if line.starts_with('[') {
                    section = line.trim_matches(['[', ']']).to_owned();
                } else if section == "package" && line.starts_with("name") {
                    name = line.split('"').nth(1).unwrap_or_default().to_owned();
                } else if section.ends_with("dependencies") && line.starts_with("dispatch-") {
                    let dep = line
                        .split(['.', ' ', '='])
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    out.push((name.clone(), section.clone(), dep, line.to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn internal_crates_are_named_through_the_workspace() {
        let direct: Vec<String> = internal_dependencies()
            .into_iter()
            .filter(|(_, _, _, line)| {
                !(line.contains(".workspace = true") || line.contains("workspace = true"))
            })
            .map(|(krate, section, _, line)| format!("{krate} [{section}]: {line}"))
            .collect();
        assert!(
            direct.is_empty(),
            "use `<name>.workspace = true` (versions and paths live in [workspace.dependencies]): \
             {direct:#?}"
        );
    }

    #[test]
    fn dependencies_point_the_way_the_architecture_draws_them() {
        let mut wrong = Vec::new();
        for (krate, section, dep, _) in internal_dependencies() {
            let shipped = section == "dependencies";
            match ALLOWED.iter().find(|(name, _)| *name == krate) {
                Some((_, allowed)) if shipped && !allowed.contains(&dep.as_str()) => {
                    wrong.push(format!("{krate} depends on {dep}"));
                }
                _ => {}
            }
            // Not even in tests: end-to-end tests that need both live in dispatch-e2e.
            let binaries = ["dispatch-api", "dispatch-worker"];
            if binaries.contains(&krate.as_str()) && binaries.contains(&dep.as_str()) {
                wrong.push(format!("{krate} [{section}] depends on {dep}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
