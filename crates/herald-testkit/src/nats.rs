//! [`NatsServer`]: real `nats-server` processes with JetStream for tests (Herald's
//! black-box suite, the event store's JetStream tests): a single server, or a cluster of
//! three on 127.0.0.1, each on free ports with its own store directory.
//! Invariant: a `NatsServer` that is dropped is killed; its store goes with its directory.
//! `scripts/test` installs `nats-server` (Debian package); without it these tests fail
//! with a message saying so rather than pass silently.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a nats-server may take to report that it is ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable that switches the black-box suite to JetStream storage.
pub const STORAGE_ENV: &str = "HERALD_TEST_STORAGE";

/// True when the suite runs against JetStream (`HERALD_TEST_STORAGE=jetstream`).
pub fn jetstream_suite() -> bool {
    std::env::var(STORAGE_ENV).is_ok_and(|v| v == "jetstream")
}

fn nats_server_bin() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in candidates {
        let bin = dir.join("nats-server");
        if bin.is_file() {
            return bin;
        }
    }
    panic!(
        "nats-server is not installed (the JetStream tests need it; scripts/test installs \
         the Debian package `nats-server`)"
    );
}

/// Another attempt after a port taken between choosing it and the server binding it
/// (tests run in parallel); panics with the log on any other failure, or the fifth.
fn retry_or_panic(attempt: &mut u32, log: &str) {
    *attempt += 1;
    if *attempt >= 5 || !log.contains("address already in use") {
        panic!("nats-server did not become ready within {STARTUP_TIMEOUT:?}\n--- log ---\n{log}");
    }
    eprintln!("nats-server port taken meanwhile; trying other ports");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One running nats-server with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    /// The store's directory when this server made its own (dropped last).
    dir: Option<tempfile::TempDir>,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl NatsServer {
    /// A single server storing under `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        let mut attempt = 0;
        loop {
            let port = free_port();
            let args = vec![
                "-js".to_string(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-sd".into(),
                dir.join("jetstream").display().to_string(),
            ];
            match NatsServer::spawn(args, port, dir.join("nats.log")) {
                Ok(server) => return server,
                Err(log) => retry_or_panic(&mut attempt, &log),
            }
        }
    }

    /// A single server in a temporary directory of its own.
    pub fn start_temp() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("herald-nats-")
            .tempdir()
            .expect("create temporary directory");
        let mut server = NatsServer::start(dir.path());
        server.dir = Some(dir);
        server
    }

    /// Three servers clustered on 127.0.0.1 (JetStream with Raft across them).
    pub fn start_cluster(dir: &Path) -> Vec<NatsServer> {
        let mut attempt = 0;
        loop {
            // A fresh store per attempt: a node that started before another failed must
            // not keep a cluster's half-made state.
            let base = dir.join(format!("attempt{attempt}"));
            match NatsServer::try_cluster(&base) {
                Ok(servers) => return servers,
                Err(log) => retry_or_panic(&mut attempt, &log),
            }
        }
    }

    fn try_cluster(dir: &Path) -> Result<Vec<NatsServer>, String> {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let mut servers = Vec::new();
        for (i, (client, cluster)) in ports.iter().enumerate() {
            let node = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node).expect("node dir");
            let args = vec![
                "-js".to_string(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client.to_string(),
                "-sd".into(),
                node.join("jetstream").display().to_string(),
                "-n".into(),
                format!("n{i}"),
                "--cluster_name".into(),
                "herald-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{cluster}"),
                "--routes".into(),
                routes.join(","),
            ];
            // On failure the servers started so far are stopped (dropped) with it.
            servers.push(NatsServer::spawn(args, *client, node.join("nats.log"))?);
        }
        Ok(servers)
    }

    /// A started server, or the log of one that did not start.
    fn spawn(args: Vec<String>, port: u16, log: PathBuf) -> Result<NatsServer, String> {
        let mut server = NatsServer {
            child: None,
            dir: None,
            port,
            args,
            log,
        };
        server.try_restart()?;
        Ok(server)
    }

    /// Starts the (stopped) server again with the same ports and store.
    pub fn restart(&mut self) {
        if let Err(log) = self.try_restart() {
            panic!(
                "nats-server did not become ready within {STARTUP_TIMEOUT:?}\n--- log ---\n{log}"
            );
        }
    }

    fn try_restart(&mut self) -> Result<(), String> {
        assert!(
            self.child.is_none(),
            "restart() needs a stopped nats-server"
        );
        let mut child = Command::new(nats_server_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        let log_path = self.log.clone();
        thread::spawn(move || {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .ok();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if line.contains("Server is ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        if ready_rx.recv_timeout(STARTUP_TIMEOUT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        self.child = Some(child);
        // Clients can connect now; JetStream answers once its store is open.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server port {} never opened",
                self.port
            );
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, like a crashed machine's process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(8 * 1024);
        log.get(start..).unwrap_or_default().to_string()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!("--- nats-server log (tail) ---\n{}", self.log_tail());
        }
    }
}
