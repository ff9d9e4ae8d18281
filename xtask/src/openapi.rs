//! `cargo xtask openapi`: writes the API's OpenAPI document, generated from the code by
//! `dispatch-api openapi`, to docs/openapi.json (`--check`: only says whether it is up to date).

use std::process::Stdio;

use anyhow::{Context, Result};

use crate::{cargo, workspace_root};

pub fn run(check: bool) -> Result<bool> {
    let output = cargo()
        .args(["run", "--quiet", "-p", "dispatch-api", "--", "openapi"])
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo run -p dispatch-api -- openapi")?;
    if !output.status.success() {
        eprintln!("xtask: `dispatch-api openapi` failed");
        return Ok(false);
    }
    let path = workspace_root().join("docs").join("openapi.json");
    let current = std::fs::read(&path).unwrap_or_default();
    if check {
        let fresh = current == output.stdout;
        if fresh {
            println!("{} is up to date", path.display());
        } else {
            eprintln!(
                "{} is out of date: run `cargo xtask openapi`",
                path.display()
            );
        }
        return Ok(fresh);
    }
    if current == output.stdout {
        println!("{} is up to date", path.display());
    } else {
        std::fs::write(&path, &output.stdout)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}
