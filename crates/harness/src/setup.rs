//! What the README's two commands set up by themselves on a fresh machine: cargo tools that are
//! missing (cargo-nextest for `test`, cargo-deny for `lint`), installed with `cargo install`,
//! and PostgreSQL's server binaries, installed with the system's package manager when it may be
//! used (root or passwordless sudo with apt-get or dnf, or Homebrew). Every command is printed
//! before it runs; where nothing can be installed, the error names the command to run.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};
use dispatch_test_support::cluster;

/// Whether `cargo <subcommand> --version` works.
pub fn has_cargo_tool(subcommand: &str) -> bool {
    crate::cargo()
        .args([subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes `cargo <subcommand>` available, running `cargo install <package> --locked` when it is
/// missing. Returns whether it is available afterwards (an offline machine cannot install).
pub fn ensure_cargo_tool(subcommand: &str, package: &str) -> bool {
    if has_cargo_tool(subcommand) {
        return true;
    }
    eprintln!("xtask: {package} is not installed; running `cargo install {package} --locked`");
    let installed = crate::cargo()
        .args(["install", package, "--locked"])
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("xtask: `cargo install {package} --locked` failed");
    }
    installed && has_cargo_tool(subcommand)
}

/// How this process may run a system package manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// We are root.
    Root,
    /// `sudo -n` works without a password.
    Sudo,
    /// Neither: the user has to run the command.
    None,
}

/// The package managers we know how to install PostgreSQL's server with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    AptGet,
    Dnf,
    Brew,
}

/// What to do about missing server binaries: run these commands, or tell the user to.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Run(Vec<Vec<String>>),
    Ask(String),
}

fn words(line: &[&str]) -> Vec<String> {
    line.iter().map(|w| (*w).to_owned()).collect()
}

fn shell_line(command: &[String]) -> String {
    command.join(" ")
}

/// The commands that install PostgreSQL's server binaries with `manager`, as `privilege`
/// allows; or, when they cannot run here, the message naming them.
pub fn plan(manager: Option<Manager>, privilege: Privilege) -> Plan {
    let Some(manager) = manager else {
        return Plan::Ask(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed and no \
             known package manager (apt-get, dnf, brew) was found: install PostgreSQL 13 or \
             later from https://www.postgresql.org/download/, or point DATABASE_URL at a \
             running server"
                .to_owned(),
        );
    };
    let commands: Vec<Vec<String>> = match manager {
        Manager::AptGet => vec![
            words(&["apt-get", "update", "-qq"]),
            words(&[
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "-qq",
                "postgresql",
            ]),
        ],
        Manager::Dnf => vec![words(&["dnf", "install", "-y", "postgresql-server"])],
        // Homebrew refuses to run as root and needs no sudo.
        Manager::Brew => return Plan::Run(vec![words(&["brew", "install", "postgresql@16"])]),
    };
    match privilege {
        Privilege::Root => Plan::Run(commands),
        Privilege::Sudo => Plan::Run(
            commands
                .into_iter()
                .map(|c| [words(&["sudo", "-n"]), c].concat())
                .collect(),
        ),
        Privilege::None => {
            let lines: Vec<String> = commands
                .iter()
                .map(|c| format!("sudo {}", shell_line(c)))
                .collect();
            Plan::Ask(format!(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed, and \
                 installing them needs root: run `{}`, then this command again (or point \
                 DATABASE_URL at a running server)",
                lines.join(" && ")
            ))
        }
    }
}

fn found(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn manager_here() -> Option<Manager> {
    if cfg!(target_os = "macos") {
        return found("brew").then_some(Manager::Brew);
    }
    [("apt-get", Manager::AptGet), ("dnf", Manager::Dnf)]
        .into_iter()
        .find(|(program, _)| found(program))
        .map(|(_, m)| m)
}

fn privilege_here() -> Privilege {
    if cluster::is_root() {
        return Privilege::Root;
    }
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if sudo {
        Privilege::Sudo
    } else {
        Privilege::None
    }
}

/// Makes sure `initdb`, `pg_ctl` and `postgres` exist, installing them when allowed; otherwise
/// fails with the command to run.
pub fn ensure_postgres_server() -> Result<()> {
    if cluster::server_binaries().is_ok() {
        return Ok(());
    }
    let commands = match plan(manager_here(), privilege_here()) {
        Plan::Ask(message) => bail!(message),
        Plan::Run(commands) => commands,
    };
    eprintln!("xtask: PostgreSQL server binaries are missing; installing them");
    for command in &commands {
        eprintln!("xtask: running `{}`", shell_line(command));
        let ok = Command::new(&command[0])
            .args(&command[1..])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!(
                "`{}` failed; install PostgreSQL's server yourself, or point DATABASE_URL at a \
                 running server",
                shell_line(command)
            );
        }
    }
    cluster::server_binaries().map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(plan: &Plan) -> Vec<String> {
        match plan {
            Plan::Run(commands) => commands.iter().map(|c| shell_line(c)).collect(),
            Plan::Ask(message) => panic!("expected commands, got {message}"),
        }
    }

    #[test]
    fn root_installs_with_the_package_manager_and_sudo_prefixes_each_command() {
        assert_eq!(
            lines(&plan(Some(Manager::AptGet), Privilege::Root)),
            [
                "apt-get update -qq",
                "env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql"
            ]
        );
        assert_eq!(
            lines(&plan(Some(Manager::Dnf), Privilege::Sudo)),
            ["sudo -n dnf install -y postgresql-server"]
        );
        assert_eq!(
            lines(&plan(Some(Manager::Brew), Privilege::None)),
            ["brew install postgresql@16"],
            "Homebrew needs no privilege"
        );
    }

    #[test]
    fn without_privilege_or_a_package_manager_the_message_names_what_to_run() {
        match plan(Some(Manager::AptGet), Privilege::None) {
            Plan::Ask(message) => assert!(
                message.contains(
                    "`sudo apt-get update -qq && sudo env DEBIAN_FRONTEND=noninteractive \
                     apt-get install -y -qq postgresql`"
                ),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        match plan(None, Privilege::Root) {
            Plan::Ask(message) => assert!(message.contains("DATABASE_URL"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
