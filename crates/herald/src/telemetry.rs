//! Telemetry of `herald serve`: the `tracing` subscriber (text or JSON logs on stderr,
//! filtered by `RUST_LOG`), OpenTelemetry span export over OTLP http/protobuf when an
//! endpoint is configured, and the Prometheus recorder behind `GET /metrics`.
//!
//! Invariants: with no OTLP endpoint nothing is exported and no exporter thread runs;
//! only spans of Herald's own crates are exported (never the exporter's HTTP client);
//! log and span fields never carry webhook secrets or tokens (callers log names, ids and
//! errors only).

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::serve::LogFormat;

/// Path of the OTLP/HTTP traces endpoint below the collector's base URL.
const TRACES_PATH: &str = "/v1/traces";
/// Longest wait for the last spans to reach the collector at shutdown.
const EXPORT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The OTLP/HTTP traces URL for `endpoint`: a collector base URL
/// (`http://collector:4318`, as `OTEL_EXPORTER_OTLP_ENDPOINT`) gets `/v1/traces`
/// appended; a URL already ending in `/v1/traces` is used as is.
pub fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let endpoint = endpoint.trim();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        anyhow::bail!("otlp_endpoint must be an http:// or https:// URL, got {endpoint:?}");
    }
    if endpoint.ends_with(TRACES_PATH) {
        return Ok(endpoint.to_string());
    }
    Ok(format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/')))
}

/// Installs the subscriber, the OTLP exporter (when `otlp_endpoint` is set) and the
/// Prometheus recorder. Call once, before serving.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    let provider = match otlp_endpoint {
        Some(endpoint) => Some(build_provider(&traces_url(endpoint)?)?),
        None => None,
    };
    let spans = provider.as_ref().map(|provider| {
        let herald_only = Targets::new()
            .with_default(LevelFilter::OFF)
            .with_target("herald", LevelFilter::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("herald"))
            .with_filter(herald_only)
    });
    // A second init (tests running `run` twice in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    herald_http::metrics::install()
        .map_err(|e| anyhow::anyhow!("installing the Prometheus recorder: {e}"))?;
    if let Some(endpoint) = otlp_endpoint {
        tracing::info!(endpoint, "exporting spans over OTLP http/protobuf");
    }
    Ok(Telemetry { provider })
}

/// The tracer provider with a batch exporter. Built on a plain thread: the blocking
/// HTTP client it owns must not be created or dropped on a Tokio worker.
fn build_provider(url: &str) -> anyhow::Result<SdkTracerProvider> {
    let url = url.to_string();
    std::thread::spawn(move || -> anyhow::Result<SdkTracerProvider> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build()
            .with_context(|| format!("building the OTLP exporter for {url}"))?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("herald").build())
            .build())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))?
}

impl Telemetry {
    /// Exports the spans still queued (bounded wait) and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(EXPORT_SHUTDOWN_TIMEOUT)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing spans to the OTLP endpoint failed"),
            Err(e) => tracing::warn!(error = %e, "the span exporter shutdown task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").ok().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://c:4318/").ok().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            traces_url("https://c/otlp/v1/traces").ok().as_deref(),
            Some("https://c/otlp/v1/traces")
        );
        assert!(traces_url("c:4318").is_err());
    }
}
