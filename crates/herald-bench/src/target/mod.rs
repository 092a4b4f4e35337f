//! The systems under load, behind one shape: a [`Target`] prepares a fresh
//! topic/stream per phase and hands out [`Producer`]s (one connection each),
//! group [`Consumer`]s and replay readers.
//!
//! - [`herald`]: Herald embedded (`Herald::open`) or over HTTP (`Herald::connect`).
//! - [`kafka`]: Herald over its Kafka listener (`rskafka`); topics created over HTTP.
//! - [`nats`]: NATS JetStream, file storage, pull consumers.
//! - [`redis`]: Redis Streams, pipelined XADD, XREADGROUP/XRANGE.
//!
//! Consumers of every system track progress the cheapest comparable way: Herald
//! commits the group's offsets once a second; JetStream consumers use `AckPolicy::None`
//! and Redis reads with `NOACK` (the server tracks the position, nothing is acked per
//! message).

pub mod herald;
pub mod kafka;
pub mod nats;
pub mod redis;

use anyhow::{bail, Result};
use futures::future::BoxFuture;

use crate::args::{RunArgs, Transport};
use crate::message::Batch;
use crate::workload::Delivered;

/// Most messages one consumer poll asks for.
pub const POLL_MESSAGES_MAX: usize = 1000;

/// A connected system.
pub enum Target {
    Herald(herald::HeraldTarget),
    /// Herald (server and HTTP admin) with Kafka-protocol producers and consumers.
    Kafka {
        herald: herald::HeraldTarget,
        bootstrap: String,
        partitions: u32,
    },
    Nats(nats::NatsTarget),
    Redis(redis::RedisTarget),
}

impl Target {
    /// Opens the embedded broker, starts or reaches the server. Once per `herald bench`.
    pub async fn connect(args: &RunArgs) -> Result<Self> {
        Ok(match args.transport {
            Transport::Embedded | Transport::Http => {
                Target::Herald(herald::HeraldTarget::connect(args).await?)
            }
            Transport::Nats => Target::Nats(nats::NatsTarget::connect(args).await?),
            Transport::Redis => Target::Redis(redis::RedisTarget::connect(args).await?),
            Transport::Kafka => {
                let herald = herald::HeraldTarget::connect(args).await?;
                let Some(bootstrap) = herald.kafka_bootstrap(args) else {
                    bail!("no Kafka listener: give --kafka-bootstrap, or let the tool start a server with one");
                };
                Target::Kafka {
                    herald,
                    bootstrap,
                    partitions: args.partitions,
                }
            }
        })
    }

    /// Creates a fresh, empty topic/stream called `name` for one phase.
    pub async fn prepare(&mut self, args: &RunArgs, name: &str) -> Result<()> {
        match self {
            Target::Herald(t) | Target::Kafka { herald: t, .. } => t.prepare(args, name).await,
            Target::Nats(t) => t.prepare(name).await,
            Target::Redis(t) => t.prepare(args, name).await,
        }
    }

    /// A producer with a connection of its own.
    pub async fn producer(&self) -> Result<Producer> {
        Ok(match self {
            Target::Herald(t) => Producer::Herald(t.producer()?),
            Target::Kafka {
                herald,
                bootstrap,
                partitions,
            } => Producer::Kafka(
                kafka::KafkaProducer::connect(bootstrap, herald.topic(), *partitions).await?,
            ),
            Target::Nats(t) => Producer::Nats(t.producer().await?),
            Target::Redis(t) => Producer::Redis(t.producer().await?),
        })
    }

    /// Member `member` of `members` of consumer group `group` (created if new), reading
    /// from the start.
    pub async fn consumer(&self, group: usize, member: usize, members: usize) -> Result<Consumer> {
        Ok(match self {
            Target::Herald(t) => Consumer::Herald(t.consumer(group).await?),
            Target::Kafka {
                herald,
                bootstrap,
                partitions,
            } => Consumer::Kafka(
                kafka::KafkaConsumer::connect(
                    bootstrap,
                    herald.topic(),
                    *partitions,
                    member,
                    members,
                )
                .await?,
            ),
            Target::Nats(t) => Consumer::Nats(Box::new(t.consumer(&format!("g{group}")).await?)),
            Target::Redis(t) => Consumer::Redis(t.consumer(group).await?),
        })
    }

    /// A reader of the whole stream from its first message (replay).
    pub async fn reader(&self) -> Result<Consumer> {
        Ok(match self {
            Target::Herald(t) => Consumer::HeraldReader(t.reader()?),
            Target::Kafka {
                herald,
                bootstrap,
                partitions,
            } => Consumer::Kafka(
                kafka::KafkaConsumer::connect(bootstrap, herald.topic(), *partitions, 0, 1).await?,
            ),
            Target::Nats(t) => Consumer::Nats(Box::new(t.consumer("replay").await?)),
            Target::Redis(t) => Consumer::RedisReader(t.reader().await?),
        })
    }

    /// The broker's process, when it is Herald's and on this machine (for RSS).
    pub fn broker_pid(&self) -> Option<u32> {
        match self {
            Target::Herald(t) | Target::Kafka { herald: t, .. } => t.broker_pid(),
            Target::Nats(_) | Target::Redis(_) => None,
        }
    }

    /// Deletes the phase's topic/stream.
    pub async fn cleanup(&mut self) -> Result<()> {
        match self {
            Target::Herald(t) | Target::Kafka { herald: t, .. } => t.cleanup().await,
            Target::Nats(t) => t.cleanup().await,
            Target::Redis(t) => t.cleanup().await,
        }
    }

    /// Closes the broker / stops the server the tool started.
    pub async fn close(self) {
        if let Target::Herald(t) | Target::Kafka { herald: t, .. } = self {
            t.close().await;
        }
    }
}

/// One producer: sends a batch and resolves once every message of it is acknowledged.
pub enum Producer {
    Herald(herald::HeraldProducer),
    Kafka(kafka::KafkaProducer),
    Nats(nats::NatsProducer),
    Redis(redis::RedisProducer),
}

impl Producer {
    /// The send of `batch`, as a future that owns what it needs.
    pub fn send(&self, batch: Batch) -> BoxFuture<'static, Result<()>> {
        match self {
            Producer::Herald(p) => p.send(batch),
            Producer::Kafka(p) => p.send(batch),
            Producer::Nats(p) => p.send(batch),
            Producer::Redis(p) => p.send(batch),
        }
    }
}

/// One consumer (group member or replay reader).
pub enum Consumer {
    Herald(herald::HeraldConsumer),
    HeraldReader(herald::HeraldReader),
    Kafka(kafka::KafkaConsumer),
    Nats(Box<nats::NatsConsumer>),
    Redis(redis::RedisConsumer),
    RedisReader(redis::RedisReader),
}

impl Consumer {
    /// Waits up to ~100 ms for messages and hands each payload to `sink`.
    pub async fn poll(&mut self, sink: &mut Delivered) -> Result<()> {
        match self {
            Consumer::Herald(c) => c.poll(sink).await,
            Consumer::HeraldReader(c) => c.poll(sink).await,
            Consumer::Kafka(c) => c.poll(sink).await,
            Consumer::Nats(c) => c.poll(sink).await,
            Consumer::Redis(c) => c.poll(sink).await,
            Consumer::RedisReader(c) => c.poll(sink).await,
        }
    }

    /// Commits and leaves where that applies.
    pub async fn finish(self) {
        if let Consumer::Herald(c) = self {
            c.finish().await;
        }
    }
}
