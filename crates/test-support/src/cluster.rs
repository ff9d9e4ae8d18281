//! Private PostgreSQL clusters from the machine's own `initdb`/`pg_ctl` (run as the `postgres` OS
//! user when we are root, because initdb refuses root): `cargo xtask`'s fallback server, and
//! tests that need a server configured their own way (TLS only, say).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directories that may hold `initdb`, `pg_ctl` and `postgres`, best first.
fn candidate_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versioned.into_iter().map(|(_, p)| p));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs.push(PathBuf::from("/opt/homebrew/bin"));
    // Homebrew's versioned formulae (`postgresql@16`) are keg-only: not linked into its bin.
    for opt in ["/opt/homebrew/opt", "/usr/local/opt"] {
        let mut kegs: Vec<PathBuf> = std::fs::read_dir(opt)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("postgresql"))
            .map(|e| e.path().join("bin"))
            .collect();
        kegs.sort_by(|a, b| b.cmp(a));
        dirs.extend(kegs);
    }
    dirs
}

/// The directory holding the server binaries, or how to install them.
pub fn server_binaries() -> Result<PathBuf, String> {
    candidate_bin_dirs()
        .into_iter()
        .find(|d| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| d.join(b).is_file())
        })
        .ok_or_else(|| {
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found.\n\
             Install them, e.g. `apt-get install postgresql` (Debian/Ubuntu), \
             `dnf install postgresql-server` (Fedora), `brew install postgresql@15` (macOS),\n\
             or point DATABASE_URL at a running server."
                .to_owned()
        })
}

/// Whether this process runs as root (the cluster then belongs to the `postgres` OS user).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Runs `command`; a failure carries its output.
pub fn run(mut command: Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("running {what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// One data directory and the server started on it, stopped on [`Cluster::stop`] or drop.
pub struct Cluster {
    bin: PathBuf,
    data_dir: PathBuf,
    as_postgres_user: bool,
    port: Option<u16>,
}

impl Cluster {
    /// The cluster in `data_dir`, created by initdb (trust auth, superuser `postgres`) unless it
    /// exists. As root, `data_dir`'s parent is handed to the `postgres` user, so it must be a
    /// folder that user can reach (under /tmp, not a private home).
    pub fn init(data_dir: &Path) -> Result<Self, String> {
        let bin = server_binaries()?;
        let cluster = Self {
            bin,
            data_dir: data_dir.to_owned(),
            as_postgres_user: is_root(),
            port: None,
        };
        let parent = data_dir
            .parent()
            .ok_or_else(|| format!("{} has no parent folder", data_dir.display()))?;
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        cluster.give_to_server_user(parent)?;
        if !data_dir.join("PG_VERSION").is_file() {
            let mut c = cluster.command("initdb");
            c.arg("-D").arg(data_dir).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]);
            run(c, "initdb")?;
        }
        Ok(cluster)
    }

    /// A command running one of the server binaries, as the `postgres` user when we are root.
    pub fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// Makes `path` the server user's (when we are root; otherwise it is ours already).
    pub fn give_to_server_user(&self, path: &Path) -> Result<(), String> {
        if !self.as_postgres_user {
            return Ok(());
        }
        let mut c = Command::new("chown");
        c.arg("postgres:").arg(path);
        run(
            c,
            "chown to the postgres user (is there a `postgres` OS user?)",
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The port the server listens on, once started.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Starts the server on a free port of 127.0.0.1 (no Unix socket), logging to `log`, with
    /// `settings` as extra `-c name=value` options; returns the port. A server left running on
    /// this data directory by an interrupted run is stopped first.
    pub fn start(&mut self, log: &Path, settings: &[&str]) -> Result<u16, String> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "stop"]);
        let _ = stop.output();

        let port = free_port()?;
        let mut options =
            format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
        for setting in settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(log)
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        run(start, "pg_ctl start").map_err(|e| format!("{e}\n(server log: {})", log.display()))?;
        self.port = Some(port);
        Ok(port)
    }

    /// Stops the server (fast shutdown), if it was started.
    pub fn stop(&mut self) -> Result<(), String> {
        if self.port.take().is_none() {
            return Ok(());
        }
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"]);
        run(stop, "pg_ctl stop")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!(
                "could not stop PostgreSQL in {}: {e}",
                self.data_dir.display()
            );
        }
    }
}
