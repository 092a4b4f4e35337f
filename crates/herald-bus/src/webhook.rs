//! The webhook deliverer: one task per webhook subscription that pulls from the
//! subscription's queue and POSTs each event to the target URL.
//!
//! - Body: structured mode (`application/cloudevents+json`) or binary mode (`ce-*`
//!   headers, the data as the body, `content-type` = `datacontenttype`).
//! - Signature: `X-Herald-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>` when the subscription has a secret (see [`crate::signature`]).
//!   `X-Herald-Delivery: <subscription>/<queue offset>` identifies the message (the
//!   same on every retry, for idempotent receivers); `X-Herald-Delivery-Count` counts.
//!   `traceparent` / `tracestate` carry the event's W3C trace context when it has one.
//! - Success is any 2xx within `timeout_ms`; anything else is a failed attempt.
//! - Retries: exponential backoff with jitter ([`crate::spec::RetryPolicy`]). Unordered
//!   subscriptions nack the message with that delay (its concurrency slot is free
//!   meanwhile); `ordered_by_key` subscriptions retry in place, keeping later messages
//!   of the same partition key waiting, so they arrive in queue order. After
//!   `max_deliveries` attempts the message goes to the dead-letter topic.
//! - Concurrency: at most `max_concurrency` requests in flight; at most
//!   `4 * max_concurrency` messages held waiting for their key (bounded memory).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_core::{CloudEvent, Data};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::queue::{Message, Queue};
use crate::signature::{sign, SIGNATURE_HEADER};
use crate::spec::{WebhookMode, WebhookTarget};

/// Lease of a message held by an ordered deliverer (extended on every attempt).
const ORDERED_LEASE_MS: u64 = 60 * 60 * 1000;
/// Extra lease time beyond the request timeout for unordered deliveries.
const LEASE_MARGIN_MS: u64 = 5_000;

/// Counters of one webhook subscription.
#[derive(Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl WebhookStats {
    pub fn to_json(&self) -> Value {
        json!({
            "delivered": self.delivered.load(Ordering::Relaxed),
            "failed_attempts": self.failed_attempts.load(Ordering::Relaxed),
            "dead_lettered": self.dead_lettered.load(Ordering::Relaxed),
            "last_error": *self.last_error.lock(),
        })
    }

    fn failed(&self, reason: &str) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(reason.to_string());
    }
}

/// Everything one deliverer needs.
#[derive(Clone)]
pub struct Deliverer {
    pub subscription: String,
    pub queue: Arc<Queue>,
    pub target: WebhookTarget,
    pub max_deliveries: u32,
    pub client: reqwest::Client,
    pub stats: Arc<WebhookStats>,
    /// Checked again at delivery: the list may have changed since the subscription
    /// was created (it is server configuration, subscriptions are durable).
    pub hosts: crate::allowlist::HostAllowList,
}

/// Percent-encodes what may not appear in a header value (CloudEvents HTTP binding).
fn header_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'%' && byte != b'"' || byte == b' ' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The request body and its content type, plus binary-mode `ce-*` headers.
pub fn render(event: &CloudEvent, mode: WebhookMode) -> (Vec<u8>, String, Vec<(String, String)>) {
    match mode {
        WebhookMode::Structured => (
            event.to_json_value().to_string().into_bytes(),
            "application/cloudevents+json".into(),
            Vec::new(),
        ),
        WebhookMode::Binary => {
            let mut headers = vec![
                ("ce-specversion".to_string(), event.specversion.clone()),
                ("ce-id".to_string(), header_value(&event.id)),
                ("ce-source".to_string(), header_value(&event.source)),
                ("ce-type".to_string(), header_value(&event.ty)),
            ];
            for (name, value) in [
                ("subject", &event.subject),
                ("time", &event.time),
                ("dataschema", &event.dataschema),
            ] {
                if let Some(v) = value {
                    headers.push((format!("ce-{name}"), header_value(v)));
                }
            }
            for (name, value) in &event.extensions {
                headers.push((
                    format!("ce-{name}"),
                    header_value(&value.to_header_string()),
                ));
            }
            let body = match &event.data {
                None => Vec::new(),
                Some(Data::Json(text)) => text.clone().into_bytes(),
                Some(Data::Binary(bytes)) => bytes.to_vec(),
            };
            let content_type = event.datacontenttype.clone().unwrap_or_else(|| {
                match &event.data {
                    Some(Data::Json(_)) => "application/json",
                    _ => "application/octet-stream",
                }
                .to_string()
            });
            (body, content_type, headers)
        }
    }
}

impl Deliverer {
    /// One POST of `message`; `Err` carries the failure reason.
    async fn attempt(&self, message: &Message, delivery_count: u32) -> Result<(), String> {
        let allowed =
            reqwest::Url::parse(&self.target.url).is_ok_and(|url| self.hosts.allows_url(&url));
        if !allowed {
            return Err(format!(
                "the host of {} is not in the webhook allow-list",
                self.target.url
            ));
        }
        let (body, content_type, headers) = render(&message.event, self.target.mode);
        let mut request = self
            .client
            .post(&self.target.url)
            .timeout(Duration::from_millis(self.target.timeout_ms))
            .header("content-type", content_type)
            .header(
                "x-herald-delivery",
                format!("{}/{}", self.subscription, message.queue_offset),
            )
            .header("x-herald-delivery-count", delivery_count.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        // W3C trace context of the event (validated at publish), in both modes.
        for (name, value) in [
            ("traceparent", message.event.traceparent()),
            ("tracestate", message.event.tracestate()),
        ] {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        if let Some(secret) = &self.target.secret {
            let now = chrono::Utc::now().timestamp();
            request = request.header(SIGNATURE_HEADER, sign(secret, now, &body));
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!(
                "HTTP {} from {}",
                response.status().as_u16(),
                self.target.url
            )),
            Err(e) if e.is_timeout() => Err(format!(
                "no response from {} within {} ms",
                self.target.url, self.target.timeout_ms
            )),
            Err(e) => Err(format!("request to {} failed: {e}", self.target.url)),
        }
    }

    fn backoff(&self, attempt: u32) -> u64 {
        self.target.retry.backoff_ms(attempt, rand::random::<f64>())
    }

    /// Unordered: one attempt, then ack, or nack with backoff (dead letter when spent).
    async fn deliver_once(&self, message: Message) {
        let receipts = [message.receipt.clone()];
        let result = match self.attempt(&message, message.delivery_count).await {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                self.queue.ack(&receipts).await.map(|_| ())
            }
            Err(reason) => {
                self.stats.failed(&reason);
                if message.delivery_count >= self.max_deliveries {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                let delay = self.backoff(message.delivery_count);
                self.queue
                    .nack(&receipts, delay, Some(&reason))
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::warn!(subscription = %self.subscription, error = %e, "recording a webhook outcome failed; the lease will expire");
        }
    }

    /// Ordered: retries in place until success or the policy is spent.
    async fn deliver_in_order(&self, message: Message, mut stop: watch::Receiver<bool>) {
        let mut count = message.delivery_count;
        loop {
            match self.attempt(&message, count).await {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.queue.ack(std::slice::from_ref(&message.receipt)).await {
                        tracing::warn!(subscription = %self.subscription, error = %e, "ack after delivery failed");
                    }
                    return;
                }
                Err(reason) => {
                    self.stats.failed(&reason);
                    if count >= self.max_deliveries {
                        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = self.queue.give_up(&message.receipt, &reason).await {
                            tracing::warn!(subscription = %self.subscription, error = %e, "dead-lettering failed; will retry");
                        }
                        return;
                    }
                    let delay = Duration::from_millis(self.backoff(count));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    match self
                        .queue
                        .redeliver_in_place(&message.receipt, ORDERED_LEASE_MS)
                        .await
                    {
                        Ok(Some(next)) => count = next,
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(subscription = %self.subscription, error = %e, "recording a retry failed");
                            return;
                        }
                    }
                }
            }
        }
    }

    fn spawn(
        &self,
        tasks: &mut JoinSet<Option<String>>,
        message: Message,
        stop: &watch::Receiver<bool>,
    ) {
        let this = self.clone();
        let stop = stop.clone();
        let key = message.event.partition_key();
        let ordered = self.target.ordered_by_key;
        tasks.spawn(async move {
            if ordered {
                this.deliver_in_order(message, stop).await;
            } else {
                this.deliver_once(message).await;
            }
            key
        });
    }

    /// The deliverer loop; returns when `stop` flips (in-flight requests finish).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let concurrency = self.target.max_concurrency.max(1) as usize;
        let ordered = self.target.ordered_by_key;
        let lease_ms = if ordered {
            ORDERED_LEASE_MS
        } else {
            self.target.timeout_ms + LEASE_MARGIN_MS
        };
        let mut tasks: JoinSet<Option<String>> = JoinSet::new();
        let mut busy_keys: HashSet<String> = HashSet::new();
        let mut waiting: HashMap<String, VecDeque<Message>> = HashMap::new();
        let mut waiting_count = 0usize;
        loop {
            if *stop.borrow() {
                break;
            }
            while let Some(done) = tasks.try_join_next() {
                if let Ok(Some(key)) = done {
                    self.key_done(
                        key,
                        &mut tasks,
                        &mut busy_keys,
                        &mut waiting,
                        &mut waiting_count,
                        &stop,
                    );
                }
            }
            let free = concurrency.saturating_sub(tasks.len());
            if free == 0 || waiting_count >= 4 * concurrency {
                tokio::select! {
                    done = tasks.join_next() => {
                        if let Some(Ok(Some(key))) = done {
                            self.key_done(key, &mut tasks, &mut busy_keys, &mut waiting, &mut waiting_count, &stop);
                        }
                    }
                    _ = stop.changed() => {}
                }
                continue;
            }
            let wait = if tasks.is_empty() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(50)
            };
            let messages = match self.queue.pull(free, Some(lease_ms), wait).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(subscription = %self.subscription, error = %e, "webhook pull failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            for message in messages {
                match message.event.partition_key() {
                    Some(key) if ordered && busy_keys.contains(&key) => {
                        waiting.entry(key).or_default().push_back(message);
                        waiting_count += 1;
                    }
                    Some(key) if ordered => {
                        busy_keys.insert(key);
                        self.spawn(&mut tasks, message, &stop);
                    }
                    _ => self.spawn(&mut tasks, message, &stop),
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    fn key_done(
        &self,
        key: String,
        tasks: &mut JoinSet<Option<String>>,
        busy_keys: &mut HashSet<String>,
        waiting: &mut HashMap<String, VecDeque<Message>>,
        waiting_count: &mut usize,
        stop: &watch::Receiver<bool>,
    ) {
        if !self.target.ordered_by_key {
            return;
        }
        let next = waiting.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(message) => {
                *waiting_count -= 1;
                self.spawn(tasks, message, stop);
            }
            None => {
                waiting.remove(&key);
                busy_keys.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_targets_fail_cleanly_against_a_non_tls_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let client = reqwest::Client::builder().build().expect("client with TLS");
        let result = client.post(format!("https://{addr}/hook")).send().await;
        assert!(result.is_err());
    }

    #[test]
    fn binary_mode_puts_attributes_in_headers() {
        let event = CloudEvent::new("e-1", "/src", "t.x")
            .with_json_data(&json!({"a": 1}))
            .with_extension("partitionkey", "k é");
        let (body, content_type, headers) = render(&event, WebhookMode::Binary);
        assert_eq!(body, b"{\"a\":1}");
        assert_eq!(content_type, "application/json");
        assert!(headers.contains(&("ce-id".into(), "e-1".into())));
        assert!(headers.contains(&("ce-partitionkey".into(), "k %C3%A9".into())));
        let (body, content_type, headers) = render(&event, WebhookMode::Structured);
        assert_eq!(content_type, "application/cloudevents+json");
        assert!(headers.is_empty());
        let parsed: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(parsed["id"], "e-1");
    }
}
