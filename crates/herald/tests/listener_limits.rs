//! The listeners under hostile or careless clients, against the real binary: TLS and
//! mutual TLS (certificates generated here with rcgen), slowloris on HTTP headers and
//! bodies and on Kafka frames, idle connections, clients that never read, the HTTP
//! connection cap, and 10,000 idle connections (RSS and /healthz recorded).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Server;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Pki {
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    for (name, sans) in [
        (
            "server",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
        ),
        ("client", vec!["client.herald.test".to_string()]),
    ] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        write(&format!("{name}.pem"), &cert.pem());
        write(&format!("{name}.key"), &key.serialize_pem());
        write(
            &format!("{name}-identity.pem"),
            &format!("{}{}", cert.pem(), key.serialize_pem()),
        );
    }
    write("ca.pem", &ca_cert.pem());
    Pki {
        ca_pem: ca_cert.pem(),
        dir,
    }
}

fn https_client(pki: &Pki, identity: bool) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap());
    if identity {
        let pem = std::fs::read(pki.path("client-identity.pem")).unwrap();
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[test]
fn https_serves_and_plain_http_on_the_tls_port_gets_nothing() {
    let pki = pki();
    let server = Server::start_with_args(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ]);
    let client = https_client(&pki, false);
    let base = format!("https://127.0.0.1:{}", server.addr().port());
    let health = client.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let created = client
        .post(format!("{base}/v1/topics"))
        .header("content-type", "application/json")
        .body(r#"{"name":"secure"}"#)
        .send()
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    // Speaking plain HTTP to the TLS port fails; the server keeps serving.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", server.addr().port()))
        .timeout(Duration::from_secs(5))
        .send();
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // A client that does not trust the CA is refused.
    let untrusting = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(untrusting.get(format!("{base}/healthz")).send().is_err());
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let server = Server::start_with_args(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
    ]);
    let base = format!("https://127.0.0.1:{}", server.addr().port());
    let anonymous = https_client(&pki, false)
        .get(format!("{base}/healthz"))
        .send();
    assert!(anonymous.is_err(), "no client certificate must be refused");
    let with_cert = https_client(&pki, true)
        .get(format!("{base}/healthz"))
        .send()
        .unwrap();
    assert_eq!(with_cert.status().as_u16(), 200);
}

#[test]
fn bad_tls_files_stop_the_server_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let output = std::process::Command::new(common::herald_bin())
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--no-kafka",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&bogus)
        .arg("--tls-key")
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bogus.pem"), "{stderr}");
}

/// Waits until the peer closes `stream` (read returns 0 or an error); returns how long.
fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn slowloris_and_idle_http_connections_are_cut_while_others_are_served() {
    let server = Server::start_with_args(&[
        "--http-header-timeout-ms",
        "700",
        "--http-body-timeout-ms",
        "700",
    ]);
    let api = server.api();
    // Headers dribbled one byte every 100 ms never complete within 700 ms.
    let mut slow = TcpStream::connect(server.addr()).unwrap();
    let dribbler = {
        let mut writer = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for byte in
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            {
                if writer.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    api.get("/healthz").expect_status(200);
    let closed = time_until_closed(&mut slow, Duration::from_secs(10));
    assert!(closed.is_some(), "slowloris connection was never closed");
    dribbler.join().unwrap();
    // An idle connection (no request at all) is closed by the same deadline.
    let mut idle = TcpStream::connect(server.addr()).unwrap();
    let closed = time_until_closed(&mut idle, Duration::from_secs(10)).expect("idle closed");
    assert!(
        closed >= Duration::from_millis(500),
        "closed too early: {closed:?}"
    );
    // A body that never finishes gets a 408 and the connection closes.
    let mut body = TcpStream::connect(server.addr()).unwrap();
    body.write_all(
        b"POST /v1/topics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na",
    )
    .unwrap();
    body.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = String::new();
    let _ = body.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("request_timeout"), "{reply}");
    api.get("/healthz").expect_status(200);
}

#[test]
fn the_http_connection_cap_refuses_extra_connections_and_recovers() {
    let server = Server::start_with_args(&["--http-max-connections", "4"]);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    // Give the server time to accept the four (they hold every slot).
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(server.addr()).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let closed = time_until_closed(&mut extra, Duration::from_secs(5));
    assert!(
        closed.is_some(),
        "the fifth connection was served over the cap"
    );
    drop(held);
    common::wait_for("a slot frees", Duration::from_secs(10), || {
        server
            .api()
            .try_send(
                server.api().client().get(server.api().url("/healthz")),
                "GET".into(),
            )
            .is_ok_and(|r| r.status == 200)
            .then_some(())
    });
}

fn open_connections(server: &Server, protocol: &str) -> f64 {
    let text = server.api().get("/metrics").expect_status(200).text;
    let prefix = format!("herald_open_connections{{protocol=\"{protocol}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_client_that_never_reads_is_disconnected() {
    let server = Server::start_with_args(&["--write-stall-timeout-ms", "500"]);
    let api = server.api();
    api.create_topic("big", 1);
    let data = "x".repeat(200_000);
    let events: Vec<_> = (0..10)
        .map(|i| common::event_with_data(&format!("e{i}"), serde_json::json!(data)))
        .collect();
    api.publish("big", &events);
    let baseline = open_connections(&server, "http");
    // Pipeline many 2 MB fetches and never read a byte of the answers.
    let mut hog = TcpStream::connect(server.addr()).unwrap();
    let request =
        "GET /v1/topics/big/events?partition=0&offset=0&max=10 HTTP/1.1\r\nHost: x\r\n\r\n";
    for _ in 0..50 {
        if hog.write_all(request.as_bytes()).is_err() {
            break;
        }
    }
    common::wait_for("the hog is disconnected", Duration::from_secs(30), || {
        (open_connections(&server, "http") <= baseline).then_some(())
    });
    api.get("/healthz").expect_status(200);
    drop(hog);
}

#[test]
fn kafka_slowloris_and_idle_connections_are_closed() {
    let server = Server::start_with_args(&[
        "--kafka-request-timeout-ms",
        "500",
        "--kafka-idle-timeout-ms",
        "800",
    ]);
    let kafka: SocketAddr = server.kafka_addr();
    // Half a length prefix, then nothing.
    let mut partial = TcpStream::connect(kafka).unwrap();
    partial.write_all(&[0, 0]).unwrap();
    let closed = time_until_closed(&mut partial, Duration::from_secs(10)).expect("closed");
    assert!(
        closed < Duration::from_millis(800) + Duration::from_secs(2),
        "{closed:?}"
    );
    // Nothing at all: closed after the idle timeout.
    let mut idle = TcpStream::connect(kafka).unwrap();
    let closed = time_until_closed(&mut idle, Duration::from_secs(10)).expect("idle closed");
    assert!(closed >= Duration::from_millis(600), "{closed:?}");
    server.api().get("/healthz").expect_status(200);
}

/// RSS of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn raise_own_fd_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(wanted.max(limit.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[test]
fn ten_thousand_idle_connections_keep_rss_bounded_and_healthz_answering() {
    const CONNECTIONS: usize = 10_000;
    let available = raise_own_fd_limit(CONNECTIONS as u64 + 512);
    assert!(
        available >= CONNECTIONS as u64 + 256,
        "this test needs {} open files, the hard limit allows {available}",
        CONNECTIONS + 256
    );
    // Idle connections are normally closed after the header deadline (30 s); hold them
    // here for as long as the test needs.
    let server = Server::start_with_args(&["--http-header-timeout-ms", "600000"]);
    let before = rss_kib(server.pid());
    let connecting = Instant::now();
    let mut held = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        match TcpStream::connect(server.addr()) {
            Ok(stream) => held.push(stream),
            Err(e) => panic!("connection {i} failed: {e}"),
        }
    }
    common::wait_for("all connections accepted", Duration::from_secs(60), || {
        (open_connections(&server, "http") >= CONNECTIONS as f64).then_some(())
    });
    let connect_time = connecting.elapsed();
    let started = Instant::now();
    server.api().get("/healthz").expect_status(200);
    let healthz = started.elapsed();
    let during = rss_kib(server.pid());
    eprintln!(
        "10k idle HTTP connections: RSS {} MiB before, {} MiB with them open ({} KiB per connection); /healthz in {} ms; connecting took {} ms",
        before / 1024,
        during / 1024,
        (during.saturating_sub(before)) / CONNECTIONS as u64,
        healthz.as_millis(),
        connect_time.as_millis()
    );
    assert!(
        during < before + 512 * 1024,
        "RSS grew by more than 512 MiB for 10k idle connections: {before} -> {during} KiB"
    );
    drop(held);
}
