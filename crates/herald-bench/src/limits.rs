//! Physical limits of this machine, so broker figures can be read as fractions:
//!
//! - sequential write: `write_bytes` in 1 MiB writes to a new file, then one
//!   fdatasync; MB/s over the whole time (the page cache does not flatter it);
//! - fdatasync latency: append 4 KiB, fdatasync, `syncs` times; percentiles of each;
//! - loopback TCP: one connection on 127.0.0.1, 64 KiB writes, bytes the reader got;
//! - memcpy: copies of a 64 MiB buffer (bytes copied per second, one direction).
//!
//! All probes are blocking and run on a blocking thread. Files are removed afterwards.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::args::LimitsArgs;
use crate::stats::{self, human_us, Latency};

const WRITE_CHUNK_BYTES: usize = 1024 * 1024;
const SYNC_WRITE_BYTES: usize = 4096;
const TCP_CHUNK_BYTES: usize = 64 * 1024;
const MEMCPY_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// What `herald bench limits` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Always `"limits"`.
    pub kind: String,
    pub dir: String,
    pub disk_write_mb_per_s: f64,
    pub fdatasync: Option<Latency>,
    pub loopback_tcp_mb_per_s: f64,
    pub memcpy_gb_per_s: f64,
}

/// Runs every probe.
pub async fn measure(args: &LimitsArgs) -> Result<Limits> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || measure_blocking(&args))
        .await
        .context("limits probe thread")?
}

fn measure_blocking(args: &LimitsArgs) -> Result<Limits> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let probe_dir = tempfile::Builder::new()
        .prefix("herald-limits-")
        .tempdir_in(&args.dir)?;
    let seconds = Duration::from_secs_f64(args.seconds.max(0.1));
    Ok(Limits {
        kind: "limits".into(),
        dir: args.dir.display().to_string(),
        disk_write_mb_per_s: sequential_write(probe_dir.path(), args.write_bytes)?,
        fdatasync: fdatasync_latency(probe_dir.path(), args.syncs)?,
        loopback_tcp_mb_per_s: loopback_tcp(seconds)?,
        memcpy_gb_per_s: memcpy(seconds),
    })
}

/// MB/s of writing `bytes` sequentially and fdatasync-ing once.
pub fn sequential_write(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join("sequential-write");
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let chunk = filler(WRITE_CHUNK_BYTES);
    let started = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        let n = (bytes - written).min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        written += n as u64;
    }
    file.sync_data()?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(written as f64 / seconds / 1e6)
}

/// Latency of `append 4 KiB + fdatasync`, `syncs` times.
pub fn fdatasync_latency(dir: &Path, syncs: u32) -> Result<Option<Latency>> {
    let path = dir.join("fdatasync");
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = filler(SYNC_WRITE_BYTES);
    // The first sync also allocates metadata: warm up once.
    file.write_all(&block)?;
    file.sync_data()?;
    let mut histogram = stats::histogram();
    for _ in 0..syncs {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        stats::record(&mut histogram, started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Latency::of(&histogram))
}

/// MB/s through one loopback TCP connection for `duration`.
pub fn loopback_tcp(duration: Duration) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Instant)> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; TCP_CHUNK_BYTES];
        let mut received = 0u64;
        loop {
            match stream.read(&mut buffer)? {
                0 => return Ok((received, Instant::now())),
                n => received += n as u64,
            }
        }
    });
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let chunk = filler(TCP_CHUNK_BYTES);
    let started = Instant::now();
    while started.elapsed() < duration {
        stream.write_all(&chunk)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let (received, ended) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("TCP reader thread panicked"))??;
    let seconds = (ended - started).as_secs_f64().max(1e-9);
    Ok(received as f64 / seconds / 1e6)
}

/// GB/s of copying a 64 MiB buffer for `duration`.
pub fn memcpy(duration: Duration) -> f64 {
    let source = filler(MEMCPY_BUFFER_BYTES);
    let mut target = vec![0u8; MEMCPY_BUFFER_BYTES];
    target.copy_from_slice(&source); // fault the pages in
    let started = Instant::now();
    let mut copied = 0u64;
    while started.elapsed() < duration {
        target.copy_from_slice(std::hint::black_box(&source));
        std::hint::black_box(&mut target);
        copied += MEMCPY_BUFFER_BYTES as u64;
    }
    copied as f64 / started.elapsed().as_secs_f64().max(1e-9) / 1e9
}

fn filler(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
}

impl Limits {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "physical limits (disk of {}):", self.dir);
        let _ = writeln!(
            out,
            "  sequential write + fdatasync: {:.0} MB/s",
            self.disk_write_mb_per_s
        );
        if let Some(l) = &self.fdatasync {
            let _ = writeln!(
                out,
                "  4 KiB append + fdatasync: p50 {}  p99 {}  max {}",
                human_us(l.p50_us),
                human_us(l.p99_us),
                human_us(l.max_us)
            );
        }
        let _ = writeln!(
            out,
            "  loopback TCP (1 connection): {:.0} MB/s",
            self.loopback_tcp_mb_per_s
        );
        let _ = writeln!(out, "  memcpy: {:.1} GB/s", self.memcpy_gb_per_s);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_report_positive_figures() -> Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(sequential_write(dir.path(), 4 * 1024 * 1024)? > 0.0);
        let sync = fdatasync_latency(dir.path(), 5)?;
        assert_eq!(sync.map(|l| l.count), Some(5));
        assert!(loopback_tcp(Duration::from_millis(50))? > 0.0);
        assert!(memcpy(Duration::from_millis(20)) > 0.0);
        assert_eq!(
            std::fs::read_dir(dir.path())?.count(),
            0,
            "probe files removed"
        );
        Ok(())
    }
}
