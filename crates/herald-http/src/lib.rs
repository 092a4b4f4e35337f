//! Herald's HTTP/JSON API (`/v1/...`, see `docs/http-api.md`) and SSE streams.
//!
//! A thin adapter: parse and validate the request, call [`herald_broker::Broker`],
//! render JSON. No state of its own beyond the limits in [`HttpOptions`].
//!
//! - [`error`]: `{"error": {"code", "message", "field"}}` and status mapping.
//! - [`topics`], [`events`], [`sse`], [`groups`]: one module per resource.
//! - [`bus`]: subscriptions, queues, dead letters, push streams, filter tests.
//! - [`streams`]: the event store (streams, `$all`, snapshots, catch-up subscriptions);
//!   [`persistent`]: its persistent subscriptions.
//! - [`console`]: the web console's embedded assets at `/ui`; [`console_api`]: its
//!   JSON views under `/v1/console`.
//! - [`server`]: the listener (TLS, connection cap, header/stall timeouts, shutdown).
//! - [`metrics`]: `GET /metrics` (Prometheus), request metrics, connection counts;
//!   [`tracecontext`]: W3C `traceparent`/`tracestate` on publish and server spans.

pub mod admission;
pub mod auth;
pub mod body;
pub mod bus;
pub mod console;
pub mod console_api;
pub mod error;
pub mod events;
pub mod groups;
pub mod metrics;
pub mod params;
pub mod persistent;
pub mod schemas;
pub mod server;
pub mod sse;
pub mod streams;
pub mod topics;
pub mod tracecontext;

use std::future::Future;

use axum::routing::{get, post};
use axum::{Json, Router};
use herald_broker::Broker;
use serde_json::json;
use tokio::net::TcpListener;

use crate::error::ApiError;

/// Limits of the HTTP front-end.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body accepted (a batch of events), default 16 MiB.
    pub max_request_bytes: usize,
    /// Request-body bytes all requests together may hold in flight, default 64 MiB
    /// (see [`admission`]).
    pub max_inflight_bytes: usize,
    /// How long a request waits for room in that budget before a 503, default 5 s.
    pub inflight_wait: std::time::Duration,
    /// Longest time a request body may take to arrive (slow-body clients), default 30 s.
    pub body_timeout: std::time::Duration,
    /// Users, tokens and ACLs; `None` = no authentication (every request allowed).
    pub auth: Option<std::sync::Arc<herald_auth::AuthStore>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 * 1024 * 1024,
            max_inflight_bytes: 64 * 1024 * 1024,
            inflight_wait: std::time::Duration::from_secs(5),
            body_timeout: std::time::Duration::from_secs(30),
            auth: None,
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub broker: Broker,
    pub options: HttpOptions,
    /// The event bus; `None` answers its routes with 503.
    pub bus: Option<herald_bus::Bus>,
    /// The event store; `None` answers its routes with 503.
    pub eventstore: Option<herald_eventstore::EventStore>,
}

/// The full router.
pub fn router(broker: Broker, options: HttpOptions) -> Router {
    router_with_bus(broker, None, options)
}

/// The full router, with the event-bus routes served by `bus`.
pub fn router_with_bus(
    broker: Broker,
    bus: Option<herald_bus::Bus>,
    options: HttpOptions,
) -> Router {
    router_with_eventstore(broker, bus, None, options)
}

/// The full router, with the bus and event-store routes served when given.
pub fn router_with_eventstore(
    broker: Broker,
    bus: Option<herald_bus::Bus>,
    eventstore: Option<herald_eventstore::EventStore>,
    options: HttpOptions,
) -> Router {
    let admission = admission::Admission::new(
        options.max_inflight_bytes,
        options.max_request_bytes,
        options.inflight_wait,
    );
    let auth = options.auth.clone();
    let state = AppState {
        broker,
        options,
        bus,
        eventstore,
    };
    let router = Router::new()
        .merge(bus_routes())
        .merge(stream_routes())
        .merge(console::routes())
        .route("/v1/console/topology", get(console_api::topology))
        .route(
            "/v1/console/topics/{topic}/events",
            get(console_api::browse),
        )
        .route(
            "/v1/console/chains/{correlation_id}",
            get(console_api::chain),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/topics", post(topics::create).get(topics::list))
        .route(
            "/v1/topics/{topic}",
            get(topics::describe).delete(topics::delete),
        )
        .route(
            "/v1/topics/{topic}/events",
            post(events::publish).get(events::fetch),
        )
        .route("/v1/topics/{topic}/sse", get(sse::stream))
        .route("/v1/schemas", get(schemas::list))
        .route(
            "/v1/schemas/{ty}",
            post(schemas::register)
                .get(schemas::latest)
                .delete(schemas::delete),
        )
        .route("/v1/schemas/{ty}/versions/{version}", get(schemas::version))
        .route("/v1/groups", get(groups::list))
        .route(
            "/v1/groups/{group}",
            get(groups::describe).delete(groups::delete),
        )
        .route("/v1/groups/{group}/reset", post(groups::reset))
        .route("/v1/groups/{group}/members", post(groups::join))
        .route(
            "/v1/groups/{group}/members/{member}",
            axum::routing::delete(groups::leave),
        )
        .route(
            "/v1/groups/{group}/members/{member}/events",
            get(groups::fetch),
        )
        .route(
            "/v1/groups/{group}/members/{member}/heartbeat",
            post(groups::heartbeat),
        )
        .route(
            "/v1/groups/{group}/members/{member}/commit",
            post(groups::commit),
        )
        .route("/metrics", get(metrics::scrape))
        .fallback(not_found);
    // Authorization sits inside the request metrics, so 401s and 403s are counted.
    let router = match auth {
        Some(store) => router.layer(axum::middleware::from_fn_with_state(store, auth::enforce)),
        None => router,
    };
    router
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            admission,
            admission::admit,
        ))
}

fn bus_routes() -> Router<AppState> {
    use bus::{filters, push, subscriptions as subs};
    Router::new()
        .route("/v1/subscriptions", post(subs::create).get(subs::list))
        .route(
            "/v1/subscriptions/{name}",
            get(subs::describe).delete(subs::delete),
        )
        .route("/v1/subscriptions/{name}/pull", post(subs::pull))
        .route("/v1/subscriptions/{name}/ack", post(subs::ack))
        .route("/v1/subscriptions/{name}/nack", post(subs::nack))
        .route("/v1/subscriptions/{name}/extend", post(subs::extend))
        .route("/v1/subscriptions/{name}/dlq", get(subs::dead_letters))
        .route("/v1/subscriptions/{name}/dlq/redrive", post(subs::redrive))
        .route("/v1/subscriptions/{name}/sse", get(push::sse))
        .route("/v1/subscriptions/{name}/ws", get(push::websocket))
        .route("/v1/filters/test", post(filters::test))
        .route("/filters/test", post(filters::test))
}

fn stream_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/streams", get(streams::list))
        .route(
            "/v1/streams/{stream}",
            post(streams::append)
                .get(streams::read)
                .delete(streams::delete),
        )
        .route(
            "/v1/streams/{stream}/metadata",
            get(streams::get_metadata).put(streams::put_metadata),
        )
        .route(
            "/v1/streams/{stream}/snapshot",
            get(streams::get_snapshot).put(streams::put_snapshot),
        )
        .route(
            "/v1/streams/{stream}/subscribe",
            get(streams::subscribe_stream),
        )
        .route(
            "/v1/categories/{category}/subscribe",
            get(streams::subscribe_category),
        )
        .merge(persistent::routes())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.broker.is_shutting_down() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down",
        ));
    }
    Ok(Json(json!({"status": "ready"})))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

/// Serves `router` on `listener` with default limits and no TLS until `shutdown`
/// resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve_with(
        listener,
        router,
        server::ListenerOptions::default(),
        shutdown,
    )
    .await
}
