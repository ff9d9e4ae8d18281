//! What `cargo xtask bench` and `cargo xtask chaos` share: building and running the real
//! binaries as child processes ([`processes`]), their CPU and memory from `/proc` ([`procfs`]),
//! the counting webhook receiver ([`receiver`]), the HTTP client ([`http`]) and aligned text
//! tables ([`table`]).

pub mod http;
pub mod processes;
pub mod procfs;
pub mod receiver;
pub mod table;

/// The checkout's short commit id, for the reports.
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(crate::workspace_root())
        .output()
        .ok()?;
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !rev.is_empty()).then_some(rev)
}
