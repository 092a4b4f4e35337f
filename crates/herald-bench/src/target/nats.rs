//! NATS JetStream through `async-nats`: one stream with file storage per phase
//! (subjects `<name>` and `<name>.>`, a key becomes the subject `<name>.k<n>`),
//! publishes awaited for their JetStream acks, pull consumers with `AckPolicy::None`.
//!
//! Durability is a server setting (`jetstream { sync_interval }`, NATS 2.10+), not a
//! stream one: nats-server 2.9 (Debian 12) acknowledges after writing to the OS and
//! syncs in the background, so its runs are "no fsync before ack".

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use crate::args::RunArgs;
use crate::message::Batch;
use crate::target::POLL_MESSAGES_MAX;
use crate::workload::Delivered;

const POLL_WAIT: Duration = Duration::from_millis(100);

pub struct NatsTarget {
    url: String,
    js: jetstream::Context,
    stream: String,
}

async fn context(url: &str) -> Result<jetstream::Context> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    Ok(jetstream::new(client))
}

impl NatsTarget {
    pub async fn connect(args: &RunArgs) -> Result<Self> {
        Ok(Self {
            url: args.nats_url.clone(),
            js: context(&args.nats_url).await?,
            stream: String::new(),
        })
    }

    pub async fn prepare(&mut self, name: &str) -> Result<()> {
        // Stream names may not contain '.'; subjects are the same name.
        let name = name.replace('.', "_");
        let _ = self.js.delete_stream(&name).await;
        self.js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![name.clone(), format!("{name}.>")],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating JetStream stream {name}"))?;
        self.stream = name;
        Ok(())
    }

    pub async fn producer(&self) -> Result<NatsProducer> {
        Ok(NatsProducer {
            js: context(&self.url).await?,
            subject: self.stream.clone(),
        })
    }

    /// A member of durable pull consumer `durable` (created on first use).
    pub async fn consumer(&self, durable: &str) -> Result<NatsConsumer> {
        let js = context(&self.url).await?;
        let stream = js.get_stream(&self.stream).await?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                durable,
                consumer::pull::Config {
                    durable_name: Some(durable.to_string()),
                    ack_policy: consumer::AckPolicy::None,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating consumer {durable}"))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(POLL_MESSAGES_MAX)
            .messages()
            .await?;
        Ok(NatsConsumer { messages })
    }

    pub async fn cleanup(&mut self) -> Result<()> {
        if !self.stream.is_empty() {
            self.js.delete_stream(&self.stream).await?;
        }
        Ok(())
    }
}

pub struct NatsProducer {
    js: jetstream::Context,
    subject: String,
}

impl NatsProducer {
    pub fn send(&self, batch: Batch) -> BoxFuture<'static, Result<()>> {
        let js = self.js.clone();
        let subject = self.subject.clone();
        Box::pin(async move {
            let mut acks = Vec::with_capacity(batch.count);
            for i in 0..batch.count {
                let subject = match batch.key(i) {
                    Some(key) => format!("{subject}.{key}"),
                    None => subject.clone(),
                };
                acks.push(js.publish(subject, batch.payload.clone()).await?);
            }
            for ack in acks {
                ack.await?;
            }
            Ok(())
        })
    }
}

pub struct NatsConsumer {
    messages: consumer::pull::Stream,
}

impl NatsConsumer {
    pub async fn poll(&mut self, sink: &mut Delivered) -> Result<()> {
        let first = match tokio::time::timeout(POLL_WAIT, self.messages.next()).await {
            Ok(Some(m)) => m?,
            Ok(None) => anyhow::bail!("JetStream consumer stream ended"),
            Err(_) => return Ok(()),
        };
        sink.message(&first.payload);
        for _ in 1..POLL_MESSAGES_MAX {
            match self.messages.next().now_or_never() {
                Some(Some(m)) => sink.message(&m?.payload),
                _ => break,
            }
        }
        Ok(())
    }
}
