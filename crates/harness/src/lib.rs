//! Dispatch's tool harness (never shipped): what `cargo xtask bench`, `cargo xtask chaos` and
//! `cargo xtask schemathesis` run. The benchmark ([`bench`](mod@bench)) and the fault-injection suite
//! ([`chaos`]) over what they share: building and running the real binaries as child processes
//! ([`processes`]), their CPU and memory from `/proc` ([`procfs`]), the counting webhook receiver
//! ([`receiver`]), the HTTP client ([`http`]), aligned text tables ([`table`]), and PostgreSQL:
//! found or started as a private cluster ([`pg`]), its server binaries installed on a fresh
//! machine when allowed ([`setup`], which also installs missing cargo tools). xtask parses the
//! command line and calls in here.

// The module docs link to the private modules they are made of; `cargo xtask lint` documents
// private items, where those links resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod bench;
pub mod chaos;
pub mod http;
pub mod pg;
pub mod processes;
pub mod procfs;
pub mod receiver;
pub mod setup;
pub mod table;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// The checkout's short commit id, for the reports.
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()?;
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !rev.is_empty()).then_some(rev)
}

/// The workspace's root directory (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `cargo` (the one running us, when there is one), run in the workspace's root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    c.current_dir(workspace_root());
    c
}

/// Runs `command` to its end; whether it succeeded (an error when it could not start).
pub fn status_of(mut command: Command, what: &str) -> Result<bool> {
    Ok(command
        .status()
        .with_context(|| format!("starting {what}"))?
        .success())
}

/// Where cargo builds: `CARGO_TARGET_DIR`, or `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}
