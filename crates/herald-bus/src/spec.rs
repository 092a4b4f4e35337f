//! What a subscription is: [`SubscriptionSpec`] (as given by the user), its
//! [`Target`], the defaults and the validation that names the field at fault.
//!
//! Invariant: a spec that passed [`SubscriptionSpec::validate`] has a valid name (so
//! its queue topic `__sub.<name>` is a valid topic name), a valid source pattern, a
//! filter that compiles, and every limit within its documented range.

use herald_core::name::validate_name;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::BusError;
use crate::matching::{Filter, TopicPattern, INTERNAL_TOPIC_PREFIX};

/// Longest subscription name (its queue topic adds a 6-byte prefix; names max 249).
pub const SUBSCRIPTION_NAME_LENGTH_MAX: usize = 200;
/// Prefix of a subscription's queue topic.
pub const QUEUE_TOPIC_PREFIX: &str = "__sub.";
/// Longest visibility timeout (12 h, like SQS).
pub const VISIBILITY_TIMEOUT_MS_MAX: u64 = 12 * 60 * 60 * 1000;
/// Most deliveries a policy may allow.
pub const MAX_DELIVERIES_MAX: u32 = 1000;
/// Most messages a queue tracks past its ack floor (see `queue::state`).
pub const TRACKED_MESSAGES_MAX: usize = 1_000_000;

/// A subscription as created over the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    pub name: String,
    /// Source topic pattern: `orders`, `orders.*`, `orders.>`.
    pub topic: String,
    /// Content filter (the filter language); none matches every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    pub target: Target,
    /// Lease length of a pulled message before it is redelivered.
    #[serde(default = "default_visibility_timeout_ms")]
    pub visibility_timeout_ms: u64,
    /// Deliveries before a message moves to the dead-letter topic.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
    /// Dead-letter topic; default `<name>.dlq`, created when needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Most messages the queue tracks past its oldest unacknowledged one; pulls stop
    /// handing out newer messages until older ones are acknowledged.
    #[serde(default = "default_tracked_messages_max")]
    pub max_tracked_messages: usize,
}

/// Where matching events go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// A durable queue consumers pull from.
    Queue,
    /// POSTed to a URL by the server.
    Webhook(WebhookTarget),
    /// Appended to another topic.
    Topic { topic: String },
    /// Pushed live to SSE / WebSocket clients; nothing is stored.
    Stream(StreamTarget),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Queue => "queue",
            Target::Webhook(_) => "webhook",
            Target::Topic { .. } => "topic",
            Target::Stream(_) => "stream",
        }
    }

    /// Queue and webhook subscriptions store matches in a queue.
    pub fn has_queue(&self) -> bool {
        matches!(self, Target::Queue | Target::Webhook(_))
    }
}

/// How a webhook body carries the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookMode {
    /// `application/cloudevents+json` body.
    #[default]
    Structured,
    /// `ce-*` headers, the data as the body.
    Binary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    pub url: String,
    #[serde(default)]
    pub mode: WebhookMode,
    /// HMAC-SHA256 key for the `X-Herald-Signature` header; none sends no signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// One request in flight per partition key, in queue order.
    #[serde(default)]
    pub ordered_by_key: bool,
    /// Timeout of one request.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// Backoff between attempts: `min(max, initial * multiplier^(n-1))`, with full jitter
/// on the upper half. The number of attempts is the subscription's `max_deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            multiplier: default_multiplier(),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` after `attempt` failures (`attempt >= 1`),
    /// jittered into `[d/2, d]` with `jitter` in `[0, 1)`.
    pub fn backoff_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let exponent = attempt.saturating_sub(1).min(62) as i32;
        let raw = self.initial_backoff_ms as f64 * self.multiplier.powi(exponent);
        let capped = raw.min(self.max_backoff_ms as f64).max(1.0);
        let jittered = capped / 2.0 + capped / 2.0 * jitter.clamp(0.0, 1.0);
        jittered.round() as u64
    }
}

/// What happens when a push-stream client cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SlowSubscriberPolicy {
    /// Close the connection (the client reconnects; it missed what was not sent).
    #[default]
    Disconnect,
    /// Keep the connection, drop events that do not fit, count them.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamTarget {
    /// Events buffered per connection.
    #[serde(default = "default_buffer_events")]
    pub buffer_events: usize,
    #[serde(default)]
    pub slow_subscriber: SlowSubscriberPolicy,
}

impl Default for StreamTarget {
    fn default() -> Self {
        Self {
            buffer_events: default_buffer_events(),
            slow_subscriber: SlowSubscriberPolicy::default(),
        }
    }
}

fn default_visibility_timeout_ms() -> u64 {
    30_000
}
fn default_max_deliveries() -> u32 {
    5
}
fn default_tracked_messages_max() -> usize {
    100_000
}
fn default_max_concurrency() -> u32 {
    4
}
fn default_webhook_timeout_ms() -> u64 {
    10_000
}
fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    60_000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_buffer_events() -> usize {
    1024
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), BusError> {
    if value < min || value > max {
        return Err(BusError::invalid(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// Checks a subscription name (it becomes part of a topic and file names).
pub fn validate_subscription_name(name: &str) -> Result<(), BusError> {
    validate_name("name", name)?;
    if name.len() > SUBSCRIPTION_NAME_LENGTH_MAX {
        return Err(BusError::invalid(
            "name",
            format!(
                "is {} bytes long; the maximum is {SUBSCRIPTION_NAME_LENGTH_MAX}",
                name.len()
            ),
        ));
    }
    Ok(())
}

fn validate_user_topic(field: &str, topic: &str) -> Result<(), BusError> {
    validate_name(field, topic)?;
    if topic.starts_with(INTERNAL_TOPIC_PREFIX) {
        return Err(BusError::invalid(
            field,
            format!("topics starting with `{INTERNAL_TOPIC_PREFIX}` are internal"),
        ));
    }
    Ok(())
}

impl SubscriptionSpec {
    /// Parses the JSON body of a create request.
    pub fn from_json(value: Value) -> Result<Self, BusError> {
        if !value.is_object() {
            return Err(BusError::invalid("body", "must be a JSON object"));
        }
        serde_json::from_value(value).map_err(|e| BusError::invalid("body", e.to_string()))
    }

    /// The queue topic of a queue or webhook subscription.
    pub fn queue_topic(&self) -> String {
        format!("{QUEUE_TOPIC_PREFIX}{}", self.name)
    }

    /// The dead-letter topic (explicit or `<name>.dlq`).
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.name))
    }

    /// Checks every field and compiles the filter (returned, so it is compiled once).
    pub fn validate(&self) -> Result<(TopicPattern, Option<Filter>), BusError> {
        validate_subscription_name(&self.name)?;
        let pattern =
            TopicPattern::parse(&self.topic).map_err(|m| BusError::invalid("topic", m))?;
        let filter = match &self.filter {
            None | Some(Value::Null) => None,
            Some(f) => Some(Filter::compile(f).map_err(|e| {
                let field = match e.path() {
                    "" => "filter".to_string(),
                    path => format!("filter.{path}"),
                };
                BusError::invalid(field, e.to_string())
            })?),
        };
        in_range(
            "visibility_timeout_ms",
            self.visibility_timeout_ms,
            1,
            VISIBILITY_TIMEOUT_MS_MAX,
        )?;
        in_range("max_deliveries", self.max_deliveries, 1, MAX_DELIVERIES_MAX)?;
        in_range(
            "max_tracked_messages",
            self.max_tracked_messages,
            1,
            TRACKED_MESSAGES_MAX,
        )?;
        if let Some(dlq) = &self.dead_letter_topic {
            validate_user_topic("dead_letter_topic", dlq)?;
        }
        match &self.target {
            Target::Queue => {}
            Target::Webhook(w) => w.validate()?,
            Target::Topic { topic } => {
                validate_user_topic("target.topic", topic)?;
                if pattern.matches(topic) {
                    return Err(BusError::invalid(
                        "target.topic",
                        format!(
                            "`{topic}` matches the subscription's own pattern `{}` (events would loop)",
                            self.topic
                        ),
                    ));
                }
            }
            Target::Stream(s) => in_range("target.buffer_events", s.buffer_events, 1, 65_536)?,
        }
        Ok((pattern, filter))
    }

    /// The spec as shown to users: the webhook secret is redacted.
    pub fn redacted(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(secret) = v.pointer_mut("/target/secret") {
            *secret = Value::String("***".into());
        }
        v
    }
}

impl WebhookTarget {
    fn validate(&self) -> Result<(), BusError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| BusError::invalid("target.url", format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BusError::invalid(
                "target.url",
                format!("scheme must be http or https, got {:?}", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(BusError::invalid("target.url", "needs a host"));
        }
        if let Some(secret) = &self.secret {
            if secret.is_empty() {
                return Err(BusError::invalid("target.secret", "must not be empty"));
            }
        }
        in_range("target.max_concurrency", self.max_concurrency, 1, 256)?;
        in_range("target.timeout_ms", self.timeout_ms, 1, 300_000)?;
        let r = &self.retry;
        in_range(
            "target.retry.initial_backoff_ms",
            r.initial_backoff_ms,
            1,
            3_600_000,
        )?;
        in_range(
            "target.retry.max_backoff_ms",
            r.max_backoff_ms,
            r.initial_backoff_ms,
            3_600_000,
        )?;
        if !(1.0..=10.0).contains(&r.multiplier) {
            return Err(BusError::invalid(
                "target.retry.multiplier",
                format!("must be between 1 and 10, got {}", r.multiplier),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(v: Value) -> Result<SubscriptionSpec, BusError> {
        let s = SubscriptionSpec::from_json(v)?;
        s.validate()?;
        Ok(s)
    }

    fn field_of(r: Result<SubscriptionSpec, BusError>) -> String {
        r.err().and_then(|e| e.field()).unwrap_or_default()
    }

    #[test]
    fn defaults_apply() {
        let s = spec(json!({"name": "billing", "topic": "orders.*", "target": {"type": "queue"}}))
            .expect("valid");
        assert_eq!(s.visibility_timeout_ms, 30_000);
        assert_eq!(s.max_deliveries, 5);
        assert_eq!(s.dead_letter_topic(), "billing.dlq");
        assert_eq!(s.queue_topic(), "__sub.billing");
    }

    #[test]
    fn errors_name_the_field() {
        let base = |target: Value| json!({"name": "s", "topic": "orders", "target": target});
        assert_eq!(
            field_of(spec(
                json!({"name": "a/b", "topic": "t", "target": {"type": "queue"}})
            )),
            "name"
        );
        assert_eq!(
            field_of(spec(
                json!({"name": "s", "topic": "a..b", "target": {"type": "queue"}})
            )),
            "topic"
        );
        assert_eq!(
            field_of(spec(base(json!({"type": "webhook", "url": "ftp://x"})))),
            "target.url"
        );
        assert_eq!(
            field_of(spec(base(
                json!({"type": "webhook", "url": "http://x", "max_concurrency": 0})
            ))),
            "target.max_concurrency"
        );
        assert_eq!(
            field_of(spec(base(json!({"type": "topic", "topic": "orders"})))),
            "target.topic"
        );
        assert_eq!(field_of(spec(base(json!({"type": "nope"})))), "body");
        assert_eq!(
            field_of(spec(
                json!({"name": "s", "topic": "t", "target": {"type": "queue"}, "filter": 7})
            )),
            "filter"
        );
        assert_eq!(
            field_of(spec(
                json!({"name": "s", "topic": "t", "target": {"type": "queue"}, "filter": {"data": {"amount": [{"numeric": ["~", 1]}]}}})
            )),
            "filter.data.amount[0].numeric"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            multiplier: 2.0,
        };
        assert_eq!(r.backoff_ms(1, 1.0), 100);
        assert_eq!(r.backoff_ms(2, 1.0), 200);
        assert_eq!(r.backoff_ms(2, 0.0), 100);
        assert_eq!(r.backoff_ms(30, 1.0), 1000);
    }

    #[test]
    fn secrets_are_redacted() {
        let s = spec(json!({"name": "s", "topic": "t", "target": {"type": "webhook", "url": "http://h/x", "secret": "k"}}))
            .expect("valid");
        assert_eq!(s.redacted()["target"]["secret"], "***");
    }
}
