//! `herald serve`: loads configuration, opens the broker, serves HTTP and the Kafka
//! protocol, shuts down cleanly.
//!
//! Precedence: built-in defaults < TOML config file < `HERALD_*` env vars < flags.
//! Prints `herald listening http=HOST:PORT kafka=HOST:PORT` on stdout once it serves
//! (`kafka=` absent when the Kafka listener is disabled; tests and scripts wait for that
//! line); logs go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use herald_broker::{Broker, BrokerConfig};
use herald_http::HttpOptions;
use herald_kafka::KafkaOptions;
use serde::Deserialize;

/// Kafka request decoding must not abort the process on an absurd array length (see
/// `herald_kafka::alloc`).
#[global_allocator]
static ALLOCATOR: herald_kafka::LazyLargeAllocator = herald_kafka::LazyLargeAllocator;

/// Default HTTP listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./herald-data";
/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often recorded histogram samples are folded into their buckets.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

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
    /// HTTP request-body bytes held in flight by all requests together before new ones
    /// wait and then get 503 `overloaded` (default 64 MiB).
    #[arg(long, env = "HERALD_MAX_INFLIGHT_BYTES")]
    max_inflight_bytes: Option<usize>,
    /// How long a request waits for room in that budget before the 503, in ms (default 5000).
    #[arg(long, env = "HERALD_INFLIGHT_WAIT_MS")]
    inflight_wait_ms: Option<u64>,
    /// Log format: text or json.
    #[arg(long, env = "HERALD_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Kafka protocol listen address (default 127.0.0.1:9092; port 0 picks a free port).
    #[arg(long, env = "HERALD_KAFKA_ADDR")]
    kafka_addr: Option<SocketAddr>,
    /// Address Kafka clients are told to connect to (default: the bound address).
    #[arg(long, env = "HERALD_KAFKA_ADVERTISED_ADDR")]
    kafka_advertised_addr: Option<SocketAddr>,
    /// Do not serve the Kafka protocol.
    #[arg(long)]
    no_kafka: bool,
    /// Create unknown topics on Kafka Metadata/Produce (Kafka's auto.create.topics.enable; default true).
    #[arg(long, env = "HERALD_KAFKA_AUTO_CREATE_TOPICS")]
    kafka_auto_create_topics: Option<bool>,
    /// Partitions of topics created through Kafka without a count (Kafka's num.partitions; default 1).
    #[arg(long, env = "HERALD_KAFKA_DEFAULT_PARTITIONS")]
    kafka_default_partitions: Option<u32>,
    /// How long a new Kafka consumer group waits for more members before its first
    /// assignment, in ms (Kafka's group.initial.rebalance.delay.ms; default 3000).
    #[arg(long, env = "HERALD_KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    kafka_group_initial_rebalance_delay_ms: Option<u64>,
    /// Export server spans over OTLP http/protobuf to this collector URL (e.g.
    /// http://127.0.0.1:4318; `/v1/traces` is appended). Off by default.
    #[arg(long, env = "HERALD_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Auth file (users, hashed credentials, ACLs; manage it with `herald auth`). When
    /// set, every API needs credentials and the ACLs decide (default deny).
    #[arg(long, env = "HERALD_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS and Kafka over TLS (with --tls-key).
    #[arg(long, env = "HERALD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HERALD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA: clients must present a certificate it issued (mutual TLS).
    #[arg(long, env = "HERALD_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Most open HTTP connections; more are closed at once (default 16384).
    #[arg(long, env = "HERALD_HTTP_MAX_CONNECTIONS")]
    http_max_connections: Option<usize>,
    /// Time a request's headers may take, and the idle keep-alive limit, in ms (default 30000).
    #[arg(long, env = "HERALD_HTTP_HEADER_TIMEOUT_MS")]
    http_header_timeout_ms: Option<u64>,
    /// Time a request body may take to arrive, in ms (default 30000; then 408).
    #[arg(long, env = "HERALD_HTTP_BODY_TIMEOUT_MS")]
    http_body_timeout_ms: Option<u64>,
    /// Most open Kafka connections; more wait to be accepted (default 1024).
    #[arg(long, env = "HERALD_KAFKA_MAX_CONNECTIONS")]
    kafka_max_connections: Option<usize>,
    /// Kafka connections idle this long are closed, in ms (connections.max.idle.ms; default 600000).
    #[arg(long, env = "HERALD_KAFKA_IDLE_TIMEOUT_MS")]
    kafka_idle_timeout_ms: Option<u64>,
    /// A started Kafka request must arrive in full within this many ms (default 30000).
    #[arg(long, env = "HERALD_KAFKA_REQUEST_TIMEOUT_MS")]
    kafka_request_timeout_ms: Option<u64>,
    /// A response write blocked this long on a client that reads nothing closes the
    /// connection, in ms (HTTP and Kafka; default 60000).
    #[arg(long, env = "HERALD_WRITE_STALL_TIMEOUT_MS")]
    write_stall_timeout_ms: Option<u64>,
    /// Comma-separated hosts webhooks may target (`hooks.example.com`, `*.example.com`,
    /// IPs). Unset: any host.
    #[arg(long, env = "HERALD_WEBHOOK_ALLOW_HOSTS", value_delimiter = ',')]
    webhook_allow_hosts: Option<Vec<String>>,
    /// Where topic partitions are stored: `local` (Herald's own log under --data-dir,
    /// the default) or `jetstream` (NATS JetStream at --nats-url).
    #[arg(long, env = "HERALD_STORAGE")]
    storage: Option<StorageKind>,
    /// NATS server URL(s) for `--storage jetstream`, comma-separated.
    #[arg(long, env = "HERALD_NATS_URL")]
    nats_url: Option<String>,
    /// Replicas of each JetStream stream Herald creates (default 1; 3 on a 3-node cluster).
    #[arg(long, env = "HERALD_NATS_REPLICAS")]
    nats_replicas: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, clap::ValueEnum, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    Local,
    Jetstream,
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
    max_inflight_bytes: Option<usize>,
    inflight_wait_ms: Option<u64>,
    log_format: Option<LogFormat>,
    kafka_enabled: Option<bool>,
    kafka_addr: Option<SocketAddr>,
    kafka_advertised_addr: Option<SocketAddr>,
    kafka_auto_create_topics: Option<bool>,
    kafka_default_partitions: Option<u32>,
    kafka_group_initial_rebalance_delay_ms: Option<u64>,
    otlp_endpoint: Option<String>,
    auth_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    http_max_connections: Option<usize>,
    http_header_timeout_ms: Option<u64>,
    http_body_timeout_ms: Option<u64>,
    kafka_max_connections: Option<usize>,
    kafka_idle_timeout_ms: Option<u64>,
    kafka_request_timeout_ms: Option<u64>,
    write_stall_timeout_ms: Option<u64>,
    webhook_allow_hosts: Option<Vec<String>>,
    storage: Option<StorageKind>,
    nats_url: Option<String>,
    nats_replicas: Option<usize>,
}

/// The resolved configuration.
#[derive(Debug)]
struct ServeConfig {
    data_dir: PathBuf,
    http_addr: SocketAddr,
    max_event_bytes: usize,
    max_request_bytes: usize,
    max_inflight_bytes: usize,
    inflight_wait: Duration,
    log_format: LogFormat,
    /// OTLP/HTTP collector URL; `None` exports nothing.
    otlp_endpoint: Option<String>,
    /// `None` when the Kafka listener is disabled.
    kafka: Option<KafkaConfig>,
    /// `None`: no authentication.
    auth_file: Option<PathBuf>,
    /// `None`: plaintext listeners.
    tls: Option<herald_net::TlsFiles>,
    listener: herald_http::server::ListenerOptions,
    body_timeout: Duration,
    kafka_max_connections: Option<usize>,
    kafka_idle_timeout: Option<Duration>,
    kafka_request_timeout: Option<Duration>,
    webhook_allow_hosts: Option<Vec<String>>,
    storage: herald_broker::config::StorageBackend,
}

/// The resolved Kafka listener settings.
#[derive(Debug)]
struct KafkaConfig {
    addr: SocketAddr,
    advertised_addr: Option<SocketAddr>,
    auto_create_topics: bool,
    default_partitions: u32,
    group_initial_rebalance_delay: Duration,
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
    let kafka_enabled = !args.no_kafka && file.kafka_enabled.unwrap_or(true);
    let kafka = if kafka_enabled {
        let default_partitions = args
            .kafka_default_partitions
            .or(file.kafka_default_partitions)
            .unwrap_or(1);
        if default_partitions == 0 {
            anyhow::bail!("kafka_default_partitions must be at least 1");
        }
        Some(KafkaConfig {
            addr: match args.kafka_addr.or(file.kafka_addr) {
                Some(a) => a,
                None => herald_kafka::DEFAULT_KAFKA_ADDR
                    .parse()
                    .context("default Kafka address")?,
            },
            advertised_addr: args.kafka_advertised_addr.or(file.kafka_advertised_addr),
            auto_create_topics: args
                .kafka_auto_create_topics
                .or(file.kafka_auto_create_topics)
                .unwrap_or(true),
            default_partitions,
            group_initial_rebalance_delay: Duration::from_millis(
                args.kafka_group_initial_rebalance_delay_ms
                    .or(file.kafka_group_initial_rebalance_delay_ms)
                    .unwrap_or(3000),
            ),
        })
    } else {
        None
    };
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
        max_inflight_bytes: args
            .max_inflight_bytes
            .or(file.max_inflight_bytes)
            .unwrap_or(defaults.max_inflight_bytes),
        inflight_wait: args
            .inflight_wait_ms
            .or(file.inflight_wait_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults.inflight_wait),
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
        otlp_endpoint: args
            .otlp_endpoint
            .or(file.otlp_endpoint)
            .filter(|e| !e.trim().is_empty()),
        kafka,
        auth_file: args.auth_file.or(file.auth_file),
        tls: match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert_chain), Some(private_key)) => Some(herald_net::TlsFiles {
                cert_chain,
                private_key,
                client_ca: args.tls_client_ca.or(file.tls_client_ca),
            }),
            (None, None) => None,
            _ => anyhow::bail!("tls_cert and tls_key go together"),
        },
        listener: {
            let defaults = herald_http::server::ListenerOptions::default();
            herald_http::server::ListenerOptions {
                tls: None,
                max_connections: args
                    .http_max_connections
                    .or(file.http_max_connections)
                    .unwrap_or(defaults.max_connections),
                header_read_timeout: args
                    .http_header_timeout_ms
                    .or(file.http_header_timeout_ms)
                    .map_or(defaults.header_read_timeout, Duration::from_millis),
                tls_handshake_timeout: defaults.tls_handshake_timeout,
                write_stall_timeout: args
                    .write_stall_timeout_ms
                    .or(file.write_stall_timeout_ms)
                    .map_or(defaults.write_stall_timeout, Duration::from_millis),
            }
        },
        body_timeout: args
            .http_body_timeout_ms
            .or(file.http_body_timeout_ms)
            .map_or(defaults.body_timeout, Duration::from_millis),
        kafka_max_connections: args.kafka_max_connections.or(file.kafka_max_connections),
        kafka_idle_timeout: args
            .kafka_idle_timeout_ms
            .or(file.kafka_idle_timeout_ms)
            .map(Duration::from_millis),
        kafka_request_timeout: args
            .kafka_request_timeout_ms
            .or(file.kafka_request_timeout_ms)
            .map(Duration::from_millis),
        webhook_allow_hosts: args.webhook_allow_hosts.or(file.webhook_allow_hosts),
        storage: resolve_storage(
            args.storage.or(file.storage).unwrap_or_default(),
            args.nats_url.or(file.nats_url),
            args.nats_replicas.or(file.nats_replicas),
        )?,
    })
}

fn resolve_storage(
    kind: StorageKind,
    nats_url: Option<String>,
    replicas: Option<usize>,
) -> anyhow::Result<herald_broker::config::StorageBackend> {
    use herald_broker::config::StorageBackend;
    match kind {
        StorageKind::Local => {
            if nats_url.is_some() || replicas.is_some() {
                anyhow::bail!("nats_url and nats_replicas need storage = \"jetstream\"");
            }
            Ok(StorageBackend::Local)
        }
        StorageKind::Jetstream => {
            let Some(url) = nats_url.filter(|u| !u.trim().is_empty()) else {
                anyhow::bail!(
                    "storage = \"jetstream\" needs nats_url (e.g. nats://127.0.0.1:4222)"
                );
            };
            let mut config = herald_broker::JetStreamConfig::new(url);
            if let Some(replicas) = replicas {
                if !(1..=5).contains(&replicas) {
                    anyhow::bail!("nats_replicas must be between 1 and 5, got {replicas}");
                }
                config.replicas = replicas;
            }
            Ok(StorageBackend::JetStream(config))
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = resolve(args)?;
    let telemetry = crate::telemetry::init(config.log_format, config.otlp_endpoint.as_deref())?;
    let upkeep = tokio::spawn(async {
        let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            herald_http::metrics::upkeep();
        }
    });
    if config.max_event_bytes == 0 || config.max_request_bytes < config.max_event_bytes {
        anyhow::bail!("max_request_bytes must be at least max_event_bytes, and both above 0");
    }
    let open_files = herald_net::raise_open_files_limit();
    tracing::debug!(?open_files, "open-files limit");
    let http_tls = match &config.tls {
        Some(files) => Some(files.server_config(&[b"h2", b"http/1.1"])?),
        None => None,
    };
    let kafka_tls = match &config.tls {
        Some(files) => Some(files.server_config(&[])?),
        None => None,
    };
    let auth = match &config.auth_file {
        Some(path) => {
            let store = herald_auth::AuthStore::load(path)?;
            tracing::info!(auth_file = %path.display(), "authentication and ACLs enabled");
            Some(std::sync::Arc::new(store))
        }
        None => None,
    };
    let mut broker_config = BrokerConfig::new(&config.data_dir);
    broker_config.max_event_bytes = config.max_event_bytes;
    broker_config.storage = config.storage.clone();
    let broker = Broker::open(broker_config)
        .await
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let mut bus_config = herald_bus::BusConfig::new(&config.data_dir);
    if let Some(hosts) = &config.webhook_allow_hosts {
        bus_config.webhook_hosts = herald_bus::allowlist::HostAllowList::only(hosts);
    }
    let bus = herald_bus::Bus::open(broker.clone(), bus_config)
        .await
        .context("starting the event bus")?;
    let eventstore =
        open_eventstore(&config.data_dir, config.max_event_bytes, &config.storage).await?;
    let router = herald_http::router_with_eventstore(
        broker.clone(),
        Some(bus.clone()),
        Some(eventstore.clone()),
        HttpOptions {
            max_request_bytes: config.max_request_bytes,
            max_inflight_bytes: config.max_inflight_bytes,
            inflight_wait: config.inflight_wait,
            body_timeout: config.body_timeout,
            auth: auth.clone(),
        },
    );

    let kafka = match &config.kafka {
        Some(kafka) => {
            let (listener, mut options) = bind_kafka(kafka, auth.clone()).await?;
            options.tls = kafka_tls;
            if let Some(max) = config.kafka_max_connections {
                options.connections_max = max;
            }
            if let Some(idle) = config.kafka_idle_timeout {
                options.idle_timeout = idle;
            }
            if let Some(request) = config.kafka_request_timeout {
                options.request_read_timeout = request;
            }
            options.write_stall_timeout = config.listener.write_stall_timeout;
            options.cluster = join_kafka_cluster(&config.storage, &options).await?;
            Some((listener, options))
        }
        None => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let listener_options = herald_http::server::ListenerOptions {
        tls: http_tls,
        ..config.listener.clone()
    };
    let server = tokio::spawn(herald_http::server::serve_with(
        listener,
        router,
        listener_options,
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    ));
    let mut ready_line = format!("herald listening http={http_addr}");
    if config.tls.is_some() {
        ready_line.push_str(" tls=on");
    }
    let kafka_cluster = kafka
        .as_ref()
        .and_then(|(_, options)| options.cluster.clone());
    let kafka_server = match kafka {
        Some((listener, options)) => {
            let kafka_addr = listener.local_addr()?;
            ready_line.push_str(&format!(" kafka={kafka_addr}"));
            let mut kafka_stop = stop_rx.clone();
            Some(tokio::spawn(herald_kafka::serve(
                listener,
                broker.clone(),
                options,
                async move {
                    let _ = kafka_stop.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    tracing::info!(data_dir = %config.data_dir.display(), %http_addr, "herald serving");
    println!("{ready_line}");

    shutdown_signal().await;
    tracing::info!("shutdown requested: closing listeners, flushing partitions");
    bus.shutdown().await;
    broker.shutdown().await;
    close_eventstore(eventstore).await;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("in-flight requests did not finish in time; exiting anyway"),
    }
    if let Some(cluster) = &kafka_cluster {
        cluster.leave().await;
    }
    if let Some(kafka_server) = kafka_server {
        match tokio::time::timeout(SHUTDOWN_GRACE, kafka_server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "Kafka listener ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "Kafka listener task failed"),
            Err(_) => tracing::warn!("Kafka connections did not finish in time; exiting anyway"),
        }
    }
    upkeep.abort();
    tracing::info!("herald stopped");
    telemetry.shutdown().await;
    Ok(())
}

/// Opens the event store in `<data_dir>/eventstore` (fsync `always`). With JetStream
/// storage its writes go to JetStream (shared by every gateway) and that directory holds
/// this gateway's mirror and persistent subscriptions. The broker keeps its JetStream
/// connection to itself, so the event store opens one of its own with the same settings.
async fn open_eventstore(
    data_dir: &std::path::Path,
    max_event_bytes: usize,
    storage: &herald_broker::config::StorageBackend,
) -> anyhow::Result<herald_eventstore::EventStore> {
    let dir = data_dir.join("eventstore");
    let config = herald_eventstore::EventStoreConfig {
        max_event_bytes,
        ..herald_eventstore::EventStoreConfig::default()
    };
    if let herald_broker::config::StorageBackend::JetStream(js) = storage {
        let backend = herald_broker::storage::JetStreamBackend::connect(js.clone())
            .await
            .context("connecting the event store to JetStream")?;
        return herald_eventstore::EventStore::open_jetstream(&dir, config, &backend)
            .await
            .context("opening the event store on JetStream");
    }
    tokio::task::spawn_blocking(move || herald_eventstore::EventStore::open(&dir, config))
        .await
        .context("opening the event store")?
        .context("opening the event store")
}

async fn close_eventstore(store: herald_eventstore::EventStore) {
    match tokio::task::spawn_blocking(move || store.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "closing the event store failed"),
        Err(e) => tracing::warn!(error = %e, "closing the event store panicked"),
    }
}

/// On JetStream storage, claims this gateway's Kafka node id in the shared node registry
/// (its own JetStream connection, like the event store's): every gateway is then a node of
/// one Kafka cluster and each consumer group has one coordinator among them.
async fn join_kafka_cluster(
    storage: &herald_broker::config::StorageBackend,
    options: &KafkaOptions,
) -> anyhow::Result<Option<std::sync::Arc<herald_broker::storage::NodeRegistry>>> {
    let herald_broker::config::StorageBackend::JetStream(js) = storage else {
        return Ok(None);
    };
    let backend = herald_broker::storage::JetStreamBackend::connect(js.clone())
        .await
        .context("connecting the Kafka node registry to JetStream")?;
    let addr = options.advertised_addr;
    if addr.ip().is_unspecified() {
        tracing::warn!(
            %addr,
            "the Kafka address advertised to clients and other gateways is unspecified: set \
             --kafka-advertised-addr to this gateway's reachable address"
        );
    }
    let registry =
        herald_broker::storage::NodeRegistry::join(&backend, addr.ip().to_string(), addr.port())
            .await
            .context("joining the Kafka nodes on JetStream")?;
    Ok(Some(registry))
}

/// Binds the Kafka listener; the advertised address defaults to the bound one.
async fn bind_kafka(
    config: &KafkaConfig,
    auth: Option<std::sync::Arc<herald_auth::AuthStore>>,
) -> anyhow::Result<(tokio::net::TcpListener, KafkaOptions)> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| {
            format!(
                "binding Kafka on {} (use --no-kafka to disable it)",
                config.addr
            )
        })?;
    let bound = listener.local_addr()?;
    let mut options = KafkaOptions::new(config.advertised_addr.unwrap_or(bound));
    options.auto_create_topics = config.auto_create_topics;
    options.default_partitions = config.default_partitions;
    options.groups.initial_rebalance_delay = config.group_initial_rebalance_delay;
    options.auth = auth;
    tracing::info!(kafka_addr = %bound, advertised = %options.advertised_addr, "Kafka listener bound");
    Ok((listener, options))
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
