//! Black-box harness for the shop's process tests, adapted from the herald crate's
//! `tests/common/mod.rs`: runs the real `herald serve` (port 0, own temporary data
//! directory, address read from its `herald listening http=...` line) and `shop`
//! service processes, kills them with SIGKILL on demand and on drop, and waits on
//! conditions with deadlines. A dropped process in a panicking test prints its stderr.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const STDERR_TAIL_BYTES_MAX: usize = 64 * 1024;

/// The `herald` binary: `HERALD_BIN`, else the one cargo built next to this test.
pub fn herald_bin() -> PathBuf {
    if let Ok(path) = std::env::var("HERALD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/herald
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let herald = profile_dir.join("herald");
    assert!(
        herald.exists(),
        "{} is missing: build it first (`cargo build -p herald`) or set HERALD_BIN",
        herald.display()
    );
    herald
}

pub fn shop_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shop")
}

/// A child process killed (SIGKILL) on drop, with the tail of its stderr kept.
pub struct Process {
    name: String,
    child: Option<Child>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command) -> (Process, mpsc::Receiver<String>) {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = Arc::clone(&stderr_tail);
        thread::spawn(move || drain(stderr, &tail));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    // Nobody listens; keep draining so the child never blocks on stdout.
                }
            }
        });
        (
            Process {
                name: name.to_string(),
                child: Some(child),
                stderr_tail,
            },
            receiver,
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(&self.stderr_tail.lock().expect("stderr lock")).into_owned()
    }

    /// Panics if the process exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited with {status}\n--- stderr ---\n{}",
                self.name,
                self.stderr_tail()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!(
                "--- {} stderr (tail) ---\n{}",
                self.name,
                self.stderr_tail()
            );
        }
    }
}

fn drain(mut stderr: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buffer = [0u8; 8192];
    loop {
        match stderr.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(count) => {
                let mut tail = tail.lock().expect("stderr lock");
                tail.extend_from_slice(&buffer[..count]);
                if tail.len() > STDERR_TAIL_BYTES_MAX {
                    let excess = tail.len() - STDERR_TAIL_BYTES_MAX;
                    tail.drain(..excess);
                }
            }
        }
    }
}

/// A `herald serve` on a free port with its own data directory.
pub struct Herald {
    pub root: tempfile::TempDir,
    pub url: String,
    pub process: Process,
}

impl Herald {
    pub fn start() -> Herald {
        let root = tempfile::Builder::new()
            .prefix("shop-test-")
            .tempdir()
            .expect("temporary directory");
        let data_dir = root.path().join("data");
        let (process, lines) = Process::spawn(
            "herald serve",
            Command::new(herald_bin())
                .arg("serve")
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--http-addr", "127.0.0.1:0", "--no-kafka"])
                .env("NO_COLOR", "1")
                .env_remove("HERALD_CONFIG")
                .env_remove("HERALD_DATA_DIR")
                .env_remove("HERALD_HTTP_ADDR"),
        );
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let url = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(remaining).unwrap_or_else(|e| {
                panic!("herald did not start ({e:?})\n{}", process.stderr_tail())
            });
            if let Some(addr) = line
                .trim()
                .strip_prefix("herald listening")
                .and_then(|rest| {
                    rest.split_whitespace()
                        .find_map(|f| f.strip_prefix("http="))
                })
            {
                break format!("http://{addr}");
            }
        };
        Herald { root, url, process }
    }

    /// A fresh directory under the test's root.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).expect("create directory");
        dir
    }
}

/// Starts a long-running `shop` subcommand.
pub fn spawn_shop(name: &str, url: &str, args: &[&str]) -> Process {
    let (process, _stdout) = Process::spawn(
        name,
        Command::new(shop_bin())
            .args(args)
            .env("HERALD_URL", url)
            .env_remove("HERALD_SHOP_POSTGRES_URL")
            .env("RUST_LOG", "warn"),
    );
    process
}

/// Runs a `shop` subcommand to completion and returns its output.
pub fn run_shop(url: &str, args: &[&str]) -> Output {
    Command::new(shop_bin())
        .args(args)
        .env("HERALD_URL", url)
        .env_remove("HERALD_SHOP_POSTGRES_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run shop {args:?}: {e}"))
}

/// Like [`run_shop`], asserting success.
pub fn run_shop_ok(url: &str, args: &[&str]) -> String {
    let output = run_shop(url, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "shop {args:?} failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Polls `condition` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The test seed: `HERALD_TEST_SEED`, else from the clock; printed for replay.
pub fn seed() -> u64 {
    let seed = match std::env::var("HERALD_TEST_SEED") {
        Ok(text) => text.trim().parse().expect("HERALD_TEST_SEED is a u64"),
        Err(_) => {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ u64::from(std::process::id())
        }
    };
    eprintln!("seed={seed} (replay with HERALD_TEST_SEED={seed})");
    seed
}

/// Reads one integer from an SQLite database another process writes (WAL readers do not
/// block the writer); `None` while the table does not exist yet.
pub fn query_i64(db: &Path, sql: &str) -> Option<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row(sql, [], |row| row.get::<_, Option<i64>>(0))
        .ok()
        .flatten()
}

impl Process {
    /// `Some(())` once the process exited successfully; panics if it failed.
    pub fn try_finished(&mut self) -> Option<()> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) if status.success() => Some(()),
            Ok(Some(status)) => {
                panic!("{} failed with {status}\n{}", self.name, self.stderr_tail())
            }
            _ => None,
        }
    }
}
