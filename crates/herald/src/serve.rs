//! `herald serve`: loads configuration, opens the broker, serves HTTP, shuts down cleanly.
//!
//! Precedence: built-in defaults < TOML config file < `HERALD_*` env vars < flags.
//! Prints `herald listening http=HOST:PORT` on stdout once it serves (tests and scripts
//! wait for that line); logs go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use herald_broker::{Broker, BrokerConfig};
use herald_http::HttpOptions;
use serde::Deserialize;

/// Default HTTP listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./herald-data";
/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Data directory (default ./herald-data).
    #[arg(long, env = "HERALD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (default 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long, env = "HERALD_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// TOML configuration file.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Largest event accepted, in bytes (default 1 MiB).
    #[arg(long, env = "HERALD_MAX_EVENT_BYTES")]
    max_event_bytes: Option<usize>,
    /// Largest HTTP request body, in bytes (default 16 MiB).
    #[arg(long, env = "HERALD_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// Log format: text or json.
    #[arg(long, env = "HERALD_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize, clap::ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The TOML file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    max_event_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    log_format: Option<LogFormat>,
}

/// The resolved configuration.
#[derive(Debug)]
struct ServeConfig {
    data_dir: PathBuf,
    http_addr: SocketAddr,
    max_event_bytes: usize,
    max_request_bytes: usize,
    log_format: LogFormat,
}

fn resolve(args: ServeArgs) -> anyhow::Result<ServeConfig> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let defaults = HttpOptions::default();
    Ok(ServeConfig {
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        http_addr: match args.http_addr.or(file.http_addr) {
            Some(a) => a,
            None => DEFAULT_HTTP_ADDR.parse().context("default address")?,
        },
        max_event_bytes: args
            .max_event_bytes
            .or(file.max_event_bytes)
            .unwrap_or(1024 * 1024),
        max_request_bytes: args
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(defaults.max_request_bytes),
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = resolve(args)?;
    init_logging(config.log_format);
    if config.max_event_bytes == 0 || config.max_request_bytes < config.max_event_bytes {
        anyhow::bail!("max_request_bytes must be at least max_event_bytes, and both above 0");
    }
    let mut broker_config = BrokerConfig::new(&config.data_dir);
    broker_config.max_event_bytes = config.max_event_bytes;
    let broker = Broker::open(broker_config)
        .await
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let router = herald_http::router(
        broker.clone(),
        HttpOptions {
            max_request_bytes: config.max_request_bytes,
        },
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(herald_http::serve(listener, router, async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));
    tracing::info!(data_dir = %config.data_dir.display(), %http_addr, "herald serving");
    println!("herald listening http={http_addr}");

    shutdown_signal().await;
    tracing::info!("shutdown requested: closing listeners, flushing partitions");
    broker.shutdown().await;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("in-flight requests did not finish in time; exiting anyway"),
    }
    tracing::info!("herald stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
