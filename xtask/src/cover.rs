//! `cargo xtask cover`: the whole suite under cargo-llvm-cov, against a PostgreSQL found or
//! started for it, with Debian's LLVM tools when rustup's are missing.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Result, bail};

use crate::{cargo, pg, setup, status_of, workspace_root};

pub async fn run() -> Result<bool> {
    if !setup::ensure_cargo_tool("nextest", "cargo-nextest") {
        bail!("cargo-nextest is not installed: `cargo install cargo-nextest --locked`");
    }
    let has_llvm_cov = cargo()
        .args(["llvm-cov", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_llvm_cov {
        bail!(
            "cargo-llvm-cov is not installed: `cargo install cargo-llvm-cov --locked`, plus LLVM \
             tools (`rustup component add llvm-tools-preview`, or Debian's llvm-22 with \
             LLVM_COV=/usr/bin/llvm-cov-22 LLVM_PROFDATA=/usr/bin/llvm-profdata-22)"
        );
    }
    let mut pg = pg::for_tests(&workspace_root()).await?;
    let mut command = cargo();
    command
        .args([
            "llvm-cov",
            "nextest",
            "--workspace",
            "--all-targets",
            "--summary-only",
        ])
        .env("DISPATCH_TEST_DATABASE_URL", &pg.admin_url);
    for (var, tool) in [
        ("LLVM_COV", "llvm-cov-22"),
        ("LLVM_PROFDATA", "llvm-profdata-22"),
    ] {
        let path = Path::new("/usr/bin").join(tool);
        if std::env::var_os(var).is_none() && path.is_file() {
            command.env(var, path);
        }
    }
    let passed = status_of(command, "cargo llvm-cov");
    pg.stop();
    passed
}
