//! Authentication and authorization of HTTP requests when an auth store is configured.
//!
//! Owns the credential extraction (`Authorization: Bearer <token>`, `Basic` user and
//! password, or `?access_token=` for browsers' EventSource/WebSocket), the route table
//! mapping every route template to the resource and operation it needs, and [`Access`],
//! the extractor handlers use for checks that depend on the body.
//! Invariants: with auth on, only `/healthz`, `/readyz` and the console's static assets
//! are public; a route missing from the table needs `cluster` `admin` (default deny);
//! a credential never reaches a log line or an error message.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use herald_auth::{AuthStore, Operation, Principal, ResourceKind};

use crate::error::ApiError;

/// The name of the one `cluster` resource.
pub const CLUSTER: &str = herald_auth::acl::CLUSTER_RESOURCE;

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Needs {
    /// Nothing: health checks and static console assets.
    Public,
    /// An authenticated principal; the handler checks the body-dependent rights.
    Authenticated,
    /// A right on a resource.
    Right(ResourceKind, String, Operation),
}

/// The authenticated caller, in the request's extensions.
#[derive(Clone)]
pub struct Caller {
    pub principal: Principal,
    store: Arc<AuthStore>,
}

/// Handler-side checks: `Access(None)` when auth is off (everything allowed).
pub struct Access(pub Option<Caller>);

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Access(parts.extensions.get::<Caller>().cloned()))
    }
}

impl Access {
    /// `Ok` if the caller may do `operation` on `kind`/`name` (always when auth is off).
    pub fn require(
        &self,
        kind: ResourceKind,
        name: &str,
        operation: Operation,
    ) -> Result<(), ApiError> {
        match &self.0 {
            None => Ok(()),
            Some(caller)
                if caller
                    .store
                    .allows(&caller.principal, kind, name, operation) =>
            {
                Ok(())
            }
            Some(caller) => Err(forbidden(&caller.principal, kind, name, operation)),
        }
    }

    /// Whether the caller may see `kind`/`name` at all (filters listings).
    pub fn can_see(&self, kind: ResourceKind, name: &str) -> bool {
        match &self.0 {
            None => true,
            Some(caller) => caller.store.allows_any(&caller.principal, kind, name),
        }
    }
}

fn forbidden(
    principal: &Principal,
    kind: ResourceKind,
    name: &str,
    operation: Operation,
) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "principal `{}` may not {operation} {kind} `{name}`",
            principal.name
        ),
    )
}

fn unauthenticated(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"herald\""),
    );
    response
}

/// Middleware: authenticates the request and enforces the route table.
pub async fn enforce(
    axum::extract::State(store): axum::extract::State<Arc<AuthStore>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let template = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let params: HashMap<String, String> =
        match RawPathParams::from_request_parts(&mut parts, &()).await {
            Ok(raw) => raw
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Err(_) => HashMap::new(),
        };
    let needs = route_needs(&parts.method, template.as_deref(), &params);
    if needs == Needs::Public {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let principal = match credentials(&parts) {
        Credentials::None => {
            return unauthenticated("credentials required: send `Authorization: Bearer <token>`")
        }
        Credentials::Malformed(why) => return unauthenticated(why),
        Credentials::Token(token) => store.authenticate_token(&token),
        Credentials::Password(user, password) => {
            // PBKDF2 costs a few milliseconds of CPU: keep it off the async workers.
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || store.authenticate_password(&user, &password))
                .await
                .ok()
                .flatten()
        }
    };
    let Some(principal) = principal else {
        return unauthenticated("invalid credentials");
    };
    if let Needs::Right(kind, name, operation) = &needs {
        if !store.allows(&principal, *kind, name, *operation) {
            return forbidden(&principal, *kind, name, *operation).into_response();
        }
    }
    parts.extensions.insert(Caller {
        principal,
        store: Arc::clone(&store),
    });
    next.run(Request::from_parts(parts, body)).await
}

enum Credentials {
    None,
    Malformed(&'static str),
    Token(String),
    Password(String, String),
}

fn credentials(parts: &Parts) -> Credentials {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else {
            return Credentials::Malformed("the Authorization header is not ASCII");
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Credentials::Token(rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            return match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((user, password)) => {
                    Credentials::Password(user.to_string(), password.to_string())
                }
                None => Credentials::Malformed("malformed Basic credentials"),
            };
        }
        return Credentials::Malformed("unsupported Authorization scheme: use Bearer or Basic");
    }
    // Browsers cannot set headers on EventSource/WebSocket: accept the token in the query.
    let token = parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
            .map(str::to_string)
    });
    match token {
        Some(t) if !t.is_empty() => Credentials::Token(t),
        _ => Credentials::None,
    }
}

/// The right each route needs. `template` is the matched route (`None` = no route).
fn route_needs(method: &Method, template: Option<&str>, params: &HashMap<String, String>) -> Needs {
    use Operation::{Admin, Consume, Delete, Produce};
    use ResourceKind::{Cluster, Group, Stream, Subscription, Topic};
    let Some(template) = template else {
        // Unknown path: the 404 is for authenticated callers only.
        return Needs::Authenticated;
    };
    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
    let right = |kind, name: String, operation| Needs::Right(kind, name, operation);
    let cluster = |operation| Needs::Right(Cluster, CLUSTER.to_string(), operation);
    let is_get = method == Method::GET || method == Method::HEAD;
    match template {
        "/healthz" | "/readyz" | "/ui" | "/ui/" | "/ui/{asset}" => Needs::Public,
        "/metrics" => cluster(Admin),
        // Topics. Create and list depend on the body / filter by right in the handler.
        "/v1/topics" => Needs::Authenticated,
        "/v1/topics/{topic}" if is_get => right(Topic, param("topic"), Consume),
        "/v1/topics/{topic}" => right(Topic, param("topic"), Delete),
        "/v1/topics/{topic}/events" if is_get => right(Topic, param("topic"), Consume),
        "/v1/topics/{topic}/events" => right(Topic, param("topic"), Produce),
        "/v1/topics/{topic}/sse" => right(Topic, param("topic"), Consume),
        // Schemas: anyone authenticated reads them; changing them is administration.
        "/v1/schemas" | "/v1/schemas/{ty}/versions/{version}" => Needs::Authenticated,
        "/v1/schemas/{ty}" if is_get => Needs::Authenticated,
        "/v1/schemas/{ty}" => cluster(Admin),
        // Consumer groups. Joining also checks each topic in the handler.
        "/v1/groups" => cluster(Admin),
        "/v1/groups/{group}" if is_get => right(Group, param("group"), Consume),
        "/v1/groups/{group}" => right(Group, param("group"), Delete),
        "/v1/groups/{group}/reset" => right(Group, param("group"), Admin),
        "/v1/groups/{group}/members"
        | "/v1/groups/{group}/members/{member}"
        | "/v1/groups/{group}/members/{member}/events"
        | "/v1/groups/{group}/members/{member}/heartbeat"
        | "/v1/groups/{group}/members/{member}/commit" => right(Group, param("group"), Consume),
        // Bus subscriptions. Create checks name, source and target in the handler.
        "/v1/subscriptions" if is_get => cluster(Admin),
        "/v1/subscriptions" => Needs::Authenticated,
        "/v1/subscriptions/{name}" if is_get => right(Subscription, param("name"), Consume),
        "/v1/subscriptions/{name}" => right(Subscription, param("name"), Delete),
        "/v1/subscriptions/{name}/dlq/redrive" => right(Subscription, param("name"), Admin),
        "/v1/subscriptions/{name}/pull"
        | "/v1/subscriptions/{name}/ack"
        | "/v1/subscriptions/{name}/nack"
        | "/v1/subscriptions/{name}/extend"
        | "/v1/subscriptions/{name}/dlq"
        | "/v1/subscriptions/{name}/sse"
        | "/v1/subscriptions/{name}/ws" => right(Subscription, param("name"), Consume),
        "/v1/filters/test" | "/filters/test" => Needs::Authenticated,
        // Event-store streams (`$all` is the stream named `$all`).
        "/v1/streams" => cluster(Admin),
        "/v1/streams/{stream}" if is_get => right(Stream, param("stream"), Consume),
        "/v1/streams/{stream}" if method == Method::DELETE => {
            right(Stream, param("stream"), Delete)
        }
        "/v1/streams/{stream}" => right(Stream, param("stream"), Produce),
        "/v1/streams/{stream}/metadata" if is_get => right(Stream, param("stream"), Consume),
        "/v1/streams/{stream}/metadata" => right(Stream, param("stream"), Admin),
        "/v1/streams/{stream}/snapshot" if is_get => right(Stream, param("stream"), Consume),
        "/v1/streams/{stream}/snapshot" => right(Stream, param("stream"), Produce),
        "/v1/streams/{stream}/subscribe" => right(Stream, param("stream"), Consume),
        "/v1/categories/{category}/subscribe" => {
            right(Stream, format!("{}-*", param("category")), Consume)
        }
        // Persistent subscriptions are groups over a stream target. Create checks the
        // group and the target in the handler; members need `consume` on the group.
        "/v1/persistent" if is_get => cluster(Admin),
        "/v1/persistent" => Needs::Authenticated,
        "/v1/persistent/{group}" if is_get => right(Group, param("group"), Consume),
        "/v1/persistent/{group}" => right(Group, param("group"), Delete),
        "/v1/persistent/{group}/parked/replay" => right(Group, param("group"), Admin),
        "/v1/persistent/{group}/read"
        | "/v1/persistent/{group}/ack"
        | "/v1/persistent/{group}/nack"
        | "/v1/persistent/{group}/parked" => right(Group, param("group"), Consume),
        // The console's views: topic browsing is a read of that topic; the topology and
        // chains span every topic, so they are administration.
        "/v1/console/topics/{topic}/events" => right(Topic, param("topic"), Consume),
        "/v1/console/topology" | "/v1/console/chains/{correlation_id}" => cluster(Admin),
        // Default deny: a route nobody classified needs cluster administration.
        _ => cluster(Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(method: Method, template: &str, params: &[(&str, &str)]) -> Needs {
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        route_needs(&method, Some(template), &params)
    }

    #[test]
    fn table_samples() {
        assert_eq!(needs(Method::GET, "/healthz", &[]), Needs::Public);
        assert_eq!(
            needs(
                Method::POST,
                "/v1/topics/{topic}/events",
                &[("topic", "orders")]
            ),
            Needs::Right(ResourceKind::Topic, "orders".into(), Operation::Produce)
        );
        assert_eq!(
            needs(
                Method::GET,
                "/v1/categories/{category}/subscribe",
                &[("category", "order")]
            ),
            Needs::Right(ResourceKind::Stream, "order-*".into(), Operation::Consume)
        );
        assert_eq!(
            needs(Method::POST, "/v1/some/new/{route}", &[]),
            Needs::Right(ResourceKind::Cluster, CLUSTER.into(), Operation::Admin)
        );
        assert_eq!(
            route_needs(&Method::GET, None, &HashMap::new()),
            Needs::Authenticated
        );
    }
}
