//! A private, throwaway Postgres cluster for tests: `initdb` into a temporary directory,
//! `postgres` on 127.0.0.1 at a free port (socket in the same directory, trust auth for
//! the superuser `herald`), stopped and deleted on drop. Run as the `postgres` user when
//! the test runs as root (Postgres refuses root). Missing binaries fail the test loudly:
//! nothing is skipped.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The superuser of every test cluster (trust authentication, loopback only).
pub const PG_USER: &str = "herald";
/// The system account clusters run as when the test runs as root.
const RUN_AS_WHEN_ROOT: &str = "postgres";
/// Free-port races (another process takes the port between probe and bind) are retried.
const START_ATTEMPTS: usize = 5;

/// A running Postgres cluster of the test's own (see the module docs).
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
}

impl PgServer {
    /// Creates and starts a cluster; panics (failing the test) with the reason when it
    /// cannot, e.g. "install postgresql (scripts/test does this)".
    pub fn start() -> PgServer {
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "Postgres server binaries (initdb, pg_ctl, psql) are in neither PATH nor \
                 /usr/lib/postgresql/*/bin: install postgresql (scripts/test does this: \
                 apt-get install -y postgresql)"
            )
        });
        let run_as = is_root().then_some(RUN_AS_WHEN_ROOT);
        let dir = tempfile::Builder::new()
            .prefix("herald-pg-")
            .tempdir_in(cluster_parent(run_as.is_some()))
            .expect("temporary directory for the Postgres cluster");
        std::fs::create_dir(dir.path().join("sock")).expect("socket directory");
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown {} to {user} failed: Postgres cannot run as root and needs the `{user}` \
                 account (install postgresql, which creates it; scripts/test does this)",
                dir.path().display()
            );
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            run_as,
        };
        server.init();
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            match server.pg_ctl_start() {
                Ok(()) => return server,
                Err(e) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "postgres did not start on port {} ({e}); retrying",
                        server.port
                    );
                }
                Err(e) => panic!("postgres did not start: {e}\n{}", server.log_tail()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the cluster's binaries, as the cluster's owner, in the
    /// cluster's directory (the test's own may be closed to that owner).
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.current_dir(self.dir.path());
        command
    }

    fn init(&self) {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", PG_USER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(output.status.success(), "initdb failed\n{}", text(&output));
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=40",
            self.port,
            self.dir.path().join("sock").display()
        );
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run pg_ctl: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(text(&output))
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected); the data stays.
    pub fn stop(&self) {
        let output = self.pg_ctl_stop("fast");
        assert!(
            output.status.success(),
            "pg_ctl stop failed\n{}",
            text(&output)
        );
    }

    /// Starts a stopped server again on the same port with the same data.
    pub fn restart(&self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("postgres did not restart: {e}\n{}", self.log_tail());
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", mode, "stop"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `dbname` (`postgres` exists from the start).
    pub fn url_for(&self, dbname: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Creates database `dbname` and returns its URL.
    pub fn create_database(&self, dbname: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{dbname}\""))
            .unwrap_or_else(|e| panic!("create database {dbname}: {e}"));
        self.url_for(dbname)
    }

    /// Runs SQL in `dbname` with psql; the unaligned, tuples-only output (`|` between
    /// columns, a line a row), or psql's error.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                PG_USER,
            ])
            .args(["-d", dbname, "-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run psql: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_string())
        } else {
            Err(text(&output))
        }
    }

    /// One integer from `sql` in `dbname`; `None` on an error (a table not created yet)
    /// or NULL.
    pub fn query_i64(&self, dbname: &str, sql: &str) -> Option<i64> {
        self.psql(dbname, sql).ok()?.trim().parse().ok()
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(4096);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(log.len());
        format!("--- postgres log (tail) ---\n{}", &log[start..])
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Immediate: the data is thrown away with the directory anyway.
        let _ = self.pg_ctl_stop("immediate");
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// The directory holding `initdb`, `pg_ctl` and `psql`: from PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian installs them only there).
fn find_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file());
    // PATH may hold symlinks to a versioned directory (psql elsewhere): resolve them.
    if let Some(dir) = from_path {
        let real = std::fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        for candidate in [real, Some(dir)].into_iter().flatten() {
            if complete(&candidate) {
                return Some(candidate);
            }
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versioned.sort();
    versioned.pop().map(|(_, dir)| dir)
}

/// Where cluster directories go: the temporary directory, unless the cluster runs as
/// another user who cannot reach it (a `TMPDIR` under a private home), then `/tmp`.
fn cluster_parent(other_user: bool) -> PathBuf {
    let temp = std::env::temp_dir();
    let reachable = temp
        .ancestors()
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0));
    if other_user && !reachable {
        PathBuf::from("/tmp")
    } else {
        temp
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probe a free port")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
