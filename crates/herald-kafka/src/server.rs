//! The TCP side: accept loop, connection cap, one task per connection, shutdown.
//!
//! Owns: accepting (a [`Semaphore`] caps live connections; accept errors back off
//! exponentially up to one second), the per-connection loop (read bytes → frames →
//! requests → responses, in order), and stopping: when the `shutdown` future resolves the
//! listener closes, every connection finishes the request it is on (long polls end at
//! once) and closes, and `serve` returns.
//! Invariants: requests of one connection are handled one at a time, in order, as Kafka
//! brokers do (clients rely on response order); a connection's read buffer grows only by
//! bytes the peer sent.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use herald_broker::Broker;
use herald_net::StallGuard;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::api::{self, Session, Shared};
use crate::codec::{decode_request, encode_response, encode_unsupported, Decoded};
use crate::frame::{bytes_missing, take_frame};
use crate::KafkaOptions;

/// Read-buffer growth step: at least this much is reserved before a read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Most the read buffer grows by in one step, however large the frame being read.
const READ_STEP_BYTES_MAX: usize = 1024 * 1024;
/// How long connections get to finish their request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the group coordinator expires sessions and ends overdue join phases.
const GROUP_TICK: Duration = Duration::from_millis(100);
/// Longest pause after repeated accept errors.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves the Kafka protocol on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    options: KafkaOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_sender, stop) = watch::channel(false);
    let connections_max = options.connections_max.max(1);
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let shared = Arc::new(Shared::new(broker, options, stop.clone()));
    let ticker = tokio::spawn(group_ticker(Arc::clone(&shared), stop.clone()));
    let permits = Arc::new(Semaphore::new(connections_max));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let shared = Arc::clone(&shared);
                let stop = stop.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let _open = OpenConnection::new();
                    let _ = stream.set_nodelay(true);
                    let stall = shared.options.write_stall_timeout;
                    let result = match acceptor {
                        None => {
                            handle_connection(&shared, StallGuard::new(stream, stall), peer, stop)
                                .await
                        }
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                shared.options.tls_handshake_timeout,
                                acceptor.accept(stream),
                            )
                            .await;
                            match handshake {
                                Ok(Ok(tls)) => {
                                    handle_connection(
                                        &shared,
                                        StallGuard::new(tls, stall),
                                        peer,
                                        stop,
                                    )
                                    .await
                                }
                                Ok(Err(e)) => Err(e),
                                Err(_) => Err(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "TLS handshake timed out",
                                )),
                            }
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "kafka connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "kafka accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_sender.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("kafka connections did not finish in time; closing them");
        connections.abort_all();
    }
    ticker.abort();
    Ok(())
}

/// Histogram (seconds) of Kafka request handling by API key (`metrics` facade).
pub const REQUEST_SECONDS_METRIC: &str = "herald_kafka_request_duration_seconds";
/// Gauge of open connections by protocol (`protocol="kafka"` here).
pub const OPEN_CONNECTIONS_METRIC: &str = "herald_open_connections";

/// Counts a live Kafka connection in [`OPEN_CONNECTIONS_METRIC`] until dropped.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        metrics::gauge!(OPEN_CONNECTIONS_METRIC, "protocol" => "kafka").increment(1.0);
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_CONNECTIONS_METRIC, "protocol" => "kafka").decrement(1.0);
    }
}

/// What a client may send before it has logged in.
fn allowed_before_login(api_key: kafka_protocol::messages::ApiKey) -> bool {
    use kafka_protocol::messages::ApiKey;
    matches!(
        api_key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

async fn group_ticker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(GROUP_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.coordinator.tick(Instant::now()),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn handle_connection<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut stream: S,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let frame_bytes_max = shared.options.frame_bytes_max;
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut session = Session::new(format!("/{}", peer.ip()));
    let auth_required = shared.options.auth.is_some();
    loop {
        let frame = match take_frame(&mut buffer, frame_bytes_max) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let missing = bytes_missing(&buffer, frame_bytes_max);
                buffer.reserve(missing.clamp(READ_CHUNK_BYTES, READ_STEP_BYTES_MAX));
                // Between requests a client may idle (Kafka's connections.max.idle.ms); once
                // a request has started it must arrive in full within the read timeout.
                let limit = if buffer.is_empty() {
                    shared.options.idle_timeout
                } else {
                    shared.options.request_read_timeout
                };
                let read = tokio::select! {
                    read = tokio::time::timeout(limit, stream.read_buf(&mut buffer)) => match read {
                        Ok(read) => read?,
                        Err(_) => {
                            tracing::debug!(%peer, partial_bytes = buffer.len(), "kafka: closing a connection that sent nothing in time");
                            return Ok(());
                        }
                    },
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                };
                if read == 0 {
                    if !buffer.is_empty() {
                        tracing::debug!(%peer, bytes = buffer.len(), "kafka client closed mid-request");
                    }
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "kafka: closing connection on a bad frame");
                return Ok(());
            }
        };
        let reply = match decode_request(frame) {
            Decoded::Request {
                header,
                api_key,
                request,
            } => {
                if let Some(client_id) = &header.client_id {
                    if session.client_id != **client_id {
                        session.client_id = client_id.to_string();
                    }
                }
                let version = header.request_api_version;
                if auth_required && session.principal.is_none() && !allowed_before_login(api_key) {
                    // Kafka closes a connection that skips the SASL handshake.
                    tracing::info!(%peer, ?api_key, "kafka: request before authentication; closing the connection");
                    return Ok(());
                }
                let started = Instant::now();
                let response = api::dispatch(shared, &mut session, &header, request).await;
                metrics::histogram!(REQUEST_SECONDS_METRIC, "api" => format!("{api_key:?}"))
                    .record(started.elapsed().as_secs_f64());
                match response {
                    Some(response) => {
                        match encode_response(api_key, version, header.correlation_id, &response) {
                            Ok(bytes) => Some(bytes),
                            Err(e) => {
                                tracing::error!(%peer, ?api_key, version, error = %e, "kafka: could not encode a response");
                                return Ok(());
                            }
                        }
                    }
                    None => None,
                }
            }
            Decoded::Unsupported { raw } => {
                tracing::debug!(%peer, api_key = raw.api_key, version = raw.api_version, "kafka: unsupported api or version");
                match encode_unsupported(&raw) {
                    Ok(bytes) => Some(bytes),
                    Err(_) => return Ok(()),
                }
            }
            Decoded::Malformed { reason } => {
                tracing::warn!(%peer, reason, "kafka: closing connection on a malformed request");
                return Ok(());
            }
        };
        if let Some(bytes) = reply {
            stream.write_all(&bytes).await?;
        }
        if session.close_after_reply || *stop.borrow() {
            return Ok(());
        }
    }
}
