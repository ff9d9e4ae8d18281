//! The console's browser tests need headless Chromium and its WebDriver (the Debian packages
//! `chromium` and `chromium-driver`): `test` says in one line that they are skipped when those
//! are missing (and fails instead under `CI=true`); `screenshots` runs them and copies the
//! README's two screenshots into `docs/console/`.

use std::path::Path;

use anyhow::{Context, Result, bail};

use dispatch_harness::{cargo, pg, status_of, workspace_root};

/// Where the browser tests look for the browser and its driver (unless `DISPATCH_CHROMIUM` /
/// `DISPATCH_CHROMEDRIVER` say otherwise).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// The README's screenshots: the file the tests write, the name under `docs/console/`.
const README_SHOTS: [&str; 2] = ["overview.png", "event.png"];

fn present(var: &str, default: &str) -> bool {
    std::env::var_os(var).map_or_else(|| Path::new(default).exists(), |p| Path::new(&p).exists())
}

/// Whether the browser tests can run here.
pub fn available() -> bool {
    present("DISPATCH_CHROMIUM", CHROMIUM) && present("DISPATCH_CHROMEDRIVER", CHROMEDRIVER)
}

/// Before the suite: one line when the browser tests will skip, or an error under CI.
pub fn check() -> Result<()> {
    if available() {
        return Ok(());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        bail!(
            "the console's browser tests need chromium and chromedriver, which CI must have \
             (.ci/run installs them): {INSTALL}"
        );
    }
    eprintln!(
        "xtask: console browser tests SKIPPED: chromium/chromedriver not found (install: \
         {INSTALL})"
    );
    Ok(())
}

/// Runs the browser tests with their screenshots in `target/console-screenshots/`, then
/// copies the README's two into `docs/console/`.
pub async fn screenshots() -> Result<bool> {
    if !available() {
        bail!("chromium and chromedriver are needed: {INSTALL}");
    }
    let root = workspace_root();
    let shots = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), Into::into)
        .join("console-screenshots");
    let mut pg = pg::for_tests(&root).await?;
    let mut command = cargo();
    command
        .args(["nextest", "run", "-p", "dispatch-e2e", "--test", "console"])
        .env("DISPATCH_TEST_DATABASE_URL", &pg.admin_url)
        .env("DISPATCH_SCREENSHOTS_DIR", &shots);
    let passed = status_of(command, "the console's browser tests");
    pg.stop();
    if !passed? {
        return Ok(false);
    }
    let docs = root.join("docs/console");
    std::fs::create_dir_all(&docs).context("creating docs/console")?;
    for name in README_SHOTS {
        std::fs::copy(shots.join(name), docs.join(name))
            .with_context(|| format!("copying {name} into docs/console"))?;
        println!("docs/console/{name}");
    }
    Ok(true)
}
