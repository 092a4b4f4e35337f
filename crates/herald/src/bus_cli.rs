//! Event-bus commands of the CLI over the HTTP API: `subscriptions`, `queue`, `dlq`,
//! `filters`. Human output by default, one JSON object per line with `--json`.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

/// A JSON client for the bus routes.
pub struct BusClient {
    http: reqwest::Client,
    base: String,
    json: bool,
}

impl BusClient {
    pub fn new(
        url: &str,
        connect: &herald_client::ConnectOptions,
        json: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: herald_client::http_client(connect)?,
            base: url.trim_end_matches('/').to_string(),
            json,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        };
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().unwrap_or(text.as_str());
            bail!("{code}: {message} (HTTP {})", status.as_u16());
        }
        Ok(value)
    }

    fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human(value));
        }
    }
}

/// Reads `@file` or `-` (stdin) or takes the text itself, as JSON.
fn json_arg(what: &str, text: &str) -> anyhow::Result<Value> {
    let raw = if text == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else if let Some(path) = text.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    } else {
        text.to_string()
    };
    serde_json::from_str(&raw).with_context(|| format!("{what} is not valid JSON"))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    Structured,
    Binary,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SlowPolicy {
    Disconnect,
    Drop,
}

#[derive(Args)]
pub struct CreateArgs {
    name: String,
    /// Source topic pattern: `orders`, `orders.*`, `orders.>`.
    #[arg(long)]
    topic: Option<String>,
    /// Content filter (JSON, `@file` or `-`).
    #[arg(long)]
    filter: Option<String>,
    /// Deliver to a queue consumers pull from (the default target).
    #[arg(long, conflicts_with_all = ["webhook", "forward", "stream"])]
    queue: bool,
    /// POST each event to this URL.
    #[arg(long)]
    webhook: Option<String>,
    /// Append each event to this topic.
    #[arg(long, conflicts_with = "webhook")]
    forward: Option<String>,
    /// Push live to SSE / WebSocket clients.
    #[arg(long, conflicts_with_all = ["webhook", "forward"])]
    stream: bool,
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// HMAC secret for the webhook signature header.
    #[arg(long)]
    secret: Option<String>,
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// One webhook request in flight per partition key, in order.
    #[arg(long)]
    ordered_by_key: bool,
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[arg(long)]
    visibility_timeout_ms: Option<u64>,
    #[arg(long)]
    max_deliveries: Option<u32>,
    #[arg(long)]
    dead_letter_topic: Option<String>,
    #[arg(long)]
    buffer_events: Option<usize>,
    #[arg(long, value_enum)]
    slow_subscriber: Option<SlowPolicy>,
    /// The whole definition as JSON (`@file`, `-`); other flags are then ignored.
    #[arg(long)]
    definition: Option<String>,
}

impl CreateArgs {
    fn definition(&self) -> anyhow::Result<Value> {
        if let Some(d) = &self.definition {
            let mut v = json_arg("--definition", d)?;
            v["name"] = json!(self.name);
            return Ok(v);
        }
        let Some(topic) = &self.topic else {
            bail!("--topic is required (or give --definition)");
        };
        let target = if let Some(url) = &self.webhook {
            let mut t =
                json!({"type": "webhook", "url": url, "ordered_by_key": self.ordered_by_key});
            if let Some(m) = self.mode {
                t["mode"] = json!(match m {
                    Mode::Structured => "structured",
                    Mode::Binary => "binary",
                });
            }
            if let Some(s) = &self.secret {
                t["secret"] = json!(s);
            }
            if let Some(c) = self.max_concurrency {
                t["max_concurrency"] = json!(c);
            }
            if let Some(ms) = self.timeout_ms {
                t["timeout_ms"] = json!(ms);
            }
            t
        } else if let Some(forward) = &self.forward {
            json!({"type": "topic", "topic": forward})
        } else if self.stream {
            let mut t = json!({"type": "stream"});
            if let Some(b) = self.buffer_events {
                t["buffer_events"] = json!(b);
            }
            if let Some(p) = self.slow_subscriber {
                t["slow_subscriber"] = json!(match p {
                    SlowPolicy::Disconnect => "disconnect",
                    SlowPolicy::Drop => "drop",
                });
            }
            t
        } else {
            json!({"type": "queue"})
        };
        let mut v = json!({"name": self.name, "topic": topic, "target": target});
        if let Some(f) = &self.filter {
            v["filter"] = json_arg("--filter", f)?;
        }
        if let Some(ms) = self.visibility_timeout_ms {
            v["visibility_timeout_ms"] = json!(ms);
        }
        if let Some(n) = self.max_deliveries {
            v["max_deliveries"] = json!(n);
        }
        if let Some(t) = &self.dead_letter_topic {
            v["dead_letter_topic"] = json!(t);
        }
        Ok(v)
    }
}

#[derive(Subcommand)]
pub enum SubscriptionsCommand {
    /// Create a subscription (it receives events appended from now on).
    Create(Box<CreateArgs>),
    /// List subscriptions.
    List,
    /// Show a subscription's definition and stats.
    Describe { name: String },
    /// Delete a subscription and its queue (its dead-letter topic stays).
    Delete { name: String },
}

fn subscription_line(s: &Value) -> String {
    let stats = &s["stats"];
    let backlog = stats["queue"]["backlog"]
        .as_u64()
        .map(|b| format!(" backlog={b}"))
        .unwrap_or_default();
    format!(
        "{:<30} topic={:<20} target={:<8} matched={}{}",
        s["name"].as_str().unwrap_or("?"),
        s["topic"].as_str().unwrap_or("?"),
        s["target"]["type"].as_str().unwrap_or("?"),
        stats["matched"],
        backlog
    )
}

pub async fn subscriptions(
    client: &BusClient,
    command: SubscriptionsCommand,
) -> anyhow::Result<()> {
    match command {
        SubscriptionsCommand::Create(args) => {
            let v = client
                .call(
                    reqwest::Method::POST,
                    "/v1/subscriptions",
                    Some(args.definition()?),
                )
                .await?;
            client.print(&v, |v| {
                format!("created subscription {}", subscription_line(v))
            });
        }
        SubscriptionsCommand::List => {
            let v = client
                .call(reqwest::Method::GET, "/v1/subscriptions", None)
                .await?;
            for s in v["subscriptions"].as_array().into_iter().flatten() {
                client.print(s, subscription_line);
            }
        }
        SubscriptionsCommand::Describe { name } => {
            let v = client
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/subscriptions/{name}"),
                    None,
                )
                .await?;
            client.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default());
        }
        SubscriptionsCommand::Delete { name } => {
            client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/subscriptions/{name}"),
                    None,
                )
                .await?;
            client.print(&json!({"deleted": name}), |_| {
                format!("deleted subscription {name}")
            });
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Lease messages (print receipts to ack or nack them).
    Pull {
        subscription: String,
        #[arg(long, default_value_t = 10)]
        max: usize,
        /// Wait up to this long for a message.
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        #[arg(long)]
        visibility_timeout_ms: Option<u64>,
        /// Acknowledge what was printed.
        #[arg(long)]
        ack: bool,
    },
    /// Acknowledge messages by receipt.
    Ack {
        subscription: String,
        #[arg(required = true)]
        receipts: Vec<String>,
    },
    /// Give messages back (redelivered after --delay-ms).
    Nack {
        subscription: String,
        #[arg(required = true)]
        receipts: Vec<String>,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long)]
        reason: Option<String>,
    },
}

fn outcome_lines(client: &BusClient, v: &Value) {
    for r in v["results"].as_array().into_iter().flatten() {
        client.print(r, |r| {
            format!(
                "{} {}",
                r["receipt"].as_str().unwrap_or("?"),
                r["outcome"].as_str().unwrap_or("?")
            )
        });
    }
}

pub async fn queue(client: &BusClient, command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::Pull {
            subscription,
            max,
            wait_ms,
            visibility_timeout_ms,
            ack,
        } => {
            let mut body = json!({"max": max, "wait_ms": wait_ms});
            if let Some(v) = visibility_timeout_ms {
                body["visibility_timeout_ms"] = json!(v);
            }
            let v = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/subscriptions/{subscription}/pull"),
                    Some(body),
                )
                .await?;
            let messages = v["messages"].as_array().cloned().unwrap_or_default();
            for m in &messages {
                client.print(m, |m| {
                    format!(
                        "receipt={} deliveries={} {} id={} {}",
                        m["receipt"].as_str().unwrap_or("?"),
                        m["delivery_count"],
                        m["event"]["type"].as_str().unwrap_or("?"),
                        m["event"]["id"].as_str().unwrap_or("?"),
                        m["event"]
                            .get("data")
                            .map(Value::to_string)
                            .unwrap_or_default()
                    )
                });
            }
            if ack && !messages.is_empty() {
                let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
                client
                    .call(
                        reqwest::Method::POST,
                        &format!("/v1/subscriptions/{subscription}/ack"),
                        Some(json!({"receipts": receipts})),
                    )
                    .await?;
            }
        }
        QueueCommand::Ack {
            subscription,
            receipts,
        } => {
            let v = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/subscriptions/{subscription}/ack"),
                    Some(json!({"receipts": receipts})),
                )
                .await?;
            outcome_lines(client, &v);
        }
        QueueCommand::Nack {
            subscription,
            receipts,
            delay_ms,
            reason,
        } => {
            let v = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/subscriptions/{subscription}/nack"),
                    Some(json!({"receipts": receipts, "delay_ms": delay_ms, "reason": reason})),
                )
                .await?;
            outcome_lines(client, &v);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Dead-lettered events of a subscription, with reasons.
    List {
        subscription: String,
        #[arg(long)]
        offset: Option<u64>,
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Copy dead-lettered events back to the subscription's queue (or --to-topic).
    Redrive {
        subscription: String,
        /// Every dead letter of the subscription.
        #[arg(long, conflicts_with = "offset")]
        all: bool,
        /// Dead-letter topic offsets to redrive (repeatable).
        #[arg(long)]
        offset: Vec<u64>,
        #[arg(long)]
        to_topic: Option<String>,
    },
}

pub async fn dlq(client: &BusClient, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            subscription,
            offset,
            max,
        } => {
            let mut path = format!("/v1/subscriptions/{subscription}/dlq?max={max}");
            if let Some(o) = offset {
                path.push_str(&format!("&offset={o}"));
            }
            let v = client.call(reqwest::Method::GET, &path, None).await?;
            for e in v["events"].as_array().into_iter().flatten() {
                client.print(e, |e| {
                    format!(
                        "offset={} id={} deliveries={} reason={}",
                        e["offset"],
                        e["event"]["id"].as_str().unwrap_or("?"),
                        e["delivery_count"],
                        e["reason"].as_str().unwrap_or("?")
                    )
                });
            }
        }
        DlqCommand::Redrive {
            subscription,
            all,
            offset,
            to_topic,
        } => {
            if !all && offset.is_empty() {
                bail!("give --all or at least one --offset");
            }
            let mut body = if all {
                json!({"all": true})
            } else {
                json!({"offsets": offset})
            };
            if let Some(t) = to_topic {
                body["to_topic"] = json!(t);
            }
            let v = client
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/subscriptions/{subscription}/dlq/redrive"),
                    Some(body),
                )
                .await?;
            client.print(&v, |v| format!("redrove {} event(s)", v["redriven"]));
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum FiltersCommand {
    /// Does a sample event match a filter pattern? (JSON, `@file` or `-`)
    Test {
        #[arg(long)]
        pattern: String,
        #[arg(long)]
        event: String,
    },
}

pub async fn filters(client: &BusClient, command: FiltersCommand) -> anyhow::Result<()> {
    match command {
        FiltersCommand::Test { pattern, event } => {
            let body = json!({"pattern": json_arg("--pattern", &pattern)?, "event": json_arg("--event", &event)?});
            let v = client
                .call(reqwest::Method::POST, "/v1/filters/test", Some(body))
                .await?;
            client.print(&v, |v| {
                let summary = v["explanation"]["summary"].as_str().unwrap_or("");
                if v["matches"].as_bool() == Some(true) {
                    format!("matches: {summary}")
                } else {
                    format!("no match: {summary}")
                }
            });
        }
    }
    Ok(())
}
