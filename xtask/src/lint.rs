//! `cargo xtask lint`: formatting, clippy with warnings denied (also on the two binaries alone,
//! as they ship: without dispatch-store's `tools`), no C TLS or libpq crates in the
//! tree, the dependencies' licences and security advisories (`cargo deny`, with `deny.toml`),
//! and the code's documentation built with warnings denied (`cargo doc`).

use std::process::{Command, Stdio};

use anyhow::Result;

use crate::{cargo, setup, status_of};

/// Runs every check (a failing one does not stop the others); true when all passed.
pub fn run() -> Result<bool> {
    let mut ok = status_of(with_args(&["fmt", "--all", "--", "--check"]), "cargo fmt")?;
    ok &= status_of(
        with_args(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "cargo clippy",
    )?;
    // The workspace-wide run turns dispatch-store's `tools` on (xtask needs it); the binaries
    // alone, as they ship, build without it.
    ok &= status_of(
        with_args(&[
            "clippy",
            "-p",
            "dispatch-api",
            "-p",
            "dispatch-worker",
            "--",
            "-D",
            "warnings",
        ]),
        "cargo clippy -p dispatch-api -p dispatch-worker (as shipped, without the store's tools)",
    )?;
    ok &= no_forbidden_crates();
    let deny = deny()?;
    ok &= deny.passed;
    ok &= docs()?;
    if ok {
        let skipped = if deny.skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped: {}; see above)", deny.skipped.join(", "))
        };
        eprintln!(
            "xtask lint: fmt, clippy, dependency, licence, advisory and documentation checks \
             passed{skipped}"
        );
    }
    Ok(ok)
}

fn with_args(args: &[&str]) -> Command {
    let mut c = cargo();
    c.args(args);
    c
}

/// aws-lc (a large C build) and libpq must never enter the tree through default features.
fn no_forbidden_crates() -> bool {
    let mut ok = true;
    for forbidden in ["aws-lc-sys", "pq-sys", "openssl-sys"] {
        let found = with_args(&[
            "tree",
            "--workspace",
            "--edges",
            "normal,build",
            "-i",
            forbidden,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
        if found {
            eprintln!("xtask lint: {forbidden} is in the dependency tree; trim default features");
            ok = false;
        }
    }
    ok
}

/// `cargo deny check licenses` always; `cargo deny check advisories` when the advisory
/// database (a git repository on GitHub) can be fetched, else skipped with a line saying so.
/// Without cargo-deny (and no way to install it) both are skipped with the command to run.
fn deny() -> Result<Checks> {
    if !setup::ensure_cargo_tool("deny", "cargo-deny") {
        eprintln!(
            "xtask lint: SKIPPED licence and advisory checks: cargo-deny is not installed and \
             could not be; run `cargo install cargo-deny --locked`, then `cargo xtask lint`"
        );
        return Ok(Checks {
            passed: true,
            skipped: vec!["licences", "advisories"],
        });
    }
    let mut skipped = Vec::new();
    let mut ok = status_of(
        with_args(&["deny", "--log-level", "error", "check", "licenses"]),
        "cargo deny check licenses",
    )?;
    let fetched = with_args(&["deny", "fetch", "db"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if fetched {
        ok &= status_of(
            with_args(&["deny", "check", "--disable-fetch", "advisories"]),
            "cargo deny check advisories",
        )?;
    } else {
        eprintln!(
            "xtask lint: SKIPPED advisories: the RustSec advisory database \
             (https://github.com/rustsec/advisory-db) cannot be fetched from here (offline?); \
             run `cargo deny check advisories` where GitHub is reachable"
        );
        skipped.push("advisories");
    }
    Ok(Checks {
        passed: ok,
        skipped,
    })
}

/// What a group of checks found: whether those that ran passed, and which could not run.
struct Checks {
    passed: bool,
    skipped: Vec<&'static str>,
}

/// Every crate's documentation, private items included, with rustdoc's warnings (broken
/// intra-doc links, bad HTML, …) as errors.
fn docs() -> Result<bool> {
    let mut command = with_args(&[
        "doc",
        "--workspace",
        "--no-deps",
        "--document-private-items",
    ]);
    command.env("RUSTDOCFLAGS", "-D warnings");
    status_of(command, "cargo doc")
}
