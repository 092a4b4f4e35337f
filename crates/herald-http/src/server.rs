//! The HTTP listener: accept loop, optional TLS, connection cap, timeouts, shutdown.
//!
//! Owns what `axum::serve` would do plus the limits a public listener needs: at most
//! `max_connections` open connections (more are accepted and closed at once, and
//! counted), a deadline for a request's headers (slowloris; it also closes idle
//! keep-alive connections), a TLS-handshake deadline, and [`StallGuard`] on every
//! connection so a client that stops reading is dropped. On shutdown the listener
//! closes and in-flight requests finish (graceful HTTP/1 and HTTP/2 shutdown).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_net::StallGuard;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::metrics::OPEN_CONNECTIONS_METRIC;

/// Connections refused because the listener was at its cap (counter, by protocol).
pub const REJECTED_CONNECTIONS_METRIC: &str = "herald_connections_rejected_total";
/// Longest pause after repeated accept errors.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Limits and TLS of the HTTP listener.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Most open connections, default 16,384.
    pub max_connections: usize,
    /// Longest time a request's headers may take to arrive (also the idle keep-alive
    /// limit), default 30 s.
    pub header_read_timeout: Duration,
    /// Longest TLS handshake, default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Longest a response write may stay blocked on a peer that reads nothing, 60 s.
    pub write_stall_timeout: Duration,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            tls: None,
            max_connections: 16_384,
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(60),
        }
    }
}

/// Counts a live connection in the open-connections gauge until dropped.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        metrics::gauge!(OPEN_CONNECTIONS_METRIC, "protocol" => "http").increment(1.0);
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_CONNECTIONS_METRIC, "protocol" => "http").decrement(1.0);
    }
}

/// Serves `router` on `listener` with `options` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(options.header_read_timeout))
        .keep_alive_timeout(options.header_read_timeout);
    // Behind TLS, ALPN has already chosen the protocol: serve exactly that one, so the
    // HTTP/1 header deadline runs from the first byte (the auto-detecting builder would
    // wait for a first byte with no deadline).
    let h1_only = Arc::new(builder.clone().http1_only());
    let h2_only = Arc::new(builder.clone().http2_only());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "HTTP accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        backoff = Duration::from_millis(10);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics::counter!(REJECTED_CONNECTIONS_METRIC, "protocol" => "http").increment(1);
            tracing::debug!(%peer, "HTTP connection refused: at the connection limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (builder, h1_only, h2_only) = (
            Arc::clone(&builder),
            Arc::clone(&h1_only),
            Arc::clone(&h2_only),
        );
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let options = options.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = OpenConnection::new();
            let result = match acceptor {
                None => {
                    // Protocol detection waits for a first byte: bound that wait too.
                    let mut first = [0u8; 1];
                    let first_byte =
                        tokio::time::timeout(options.header_read_timeout, stream.peek(&mut first))
                            .await;
                    if !matches!(first_byte, Ok(Ok(1..))) {
                        tracing::debug!(%peer, "HTTP connection sent nothing in time; closed");
                        return;
                    }
                    serve(&builder, watcher, stream, &options, service).await
                }
                Some(acceptor) => {
                    let Some(tls) = handshake(&acceptor, stream, &options).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let builder = if h2 { h2_only } else { h1_only };
                    serve(&builder, watcher, tls, &options, service).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    options: &ListenerOptions,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(options.tls_handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}

/// Serves one accepted connection (plain TCP or TLS) until it ends or shutdown drains it;
/// writes stalled by a client that reads nothing end it after `write_stall_timeout`.
async fn serve<I>(
    builder: &Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    options: &ListenerOptions,
    service: TowerToHyperService<Router>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(StallGuard::new(io, options.write_stall_timeout));
    watcher
        .watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        )
        .await
}
