//! Redis Streams through `redis`: one stream key per phase, `XADD key * [k <key>] d
//! <payload>` pipelined per batch (one round trip, no MULTI), consumer groups read with
//! `XREADGROUP ... NOACK`, replay with `XRANGE`.
//!
//! The fsync policy is applied with `CONFIG SET appendonly yes` and `appendfsync
//! always` (for `--fsync always`) or `everysec` (otherwise).

use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};

use crate::args::{Fsync, RunArgs};
use crate::message::Batch;
use crate::target::POLL_MESSAGES_MAX;
use crate::workload::Delivered;

/// XREADGROUP BLOCK, ms.
const POLL_BLOCK_MS: u64 = 100;

pub struct RedisTarget {
    client: redis::Client,
    admin: MultiplexedConnection,
    key: String,
}

async fn connection(client: &redis::Client) -> Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(Duration::from_secs(60));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting to Redis")
}

impl RedisTarget {
    pub async fn connect(args: &RunArgs) -> Result<Self> {
        let client = redis::Client::open(args.redis_url.as_str())?;
        let admin = connection(&client).await?;
        Ok(Self {
            client,
            admin,
            key: String::new(),
        })
    }

    pub async fn prepare(&mut self, args: &RunArgs, name: &str) -> Result<()> {
        let appendfsync = match args.fsync {
            Fsync::Always => "always",
            Fsync::Interval | Fsync::Never => "everysec",
        };
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendonly")
            .arg("yes")
            .exec_async(&mut self.admin)
            .await?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg(appendfsync)
            .exec_async(&mut self.admin)
            .await?;
        redis::cmd("DEL")
            .arg(name)
            .exec_async(&mut self.admin)
            .await?;
        self.key = name.to_string();
        Ok(())
    }

    pub async fn producer(&self) -> Result<RedisProducer> {
        Ok(RedisProducer {
            connection: connection(&self.client).await?,
            key: self.key.clone(),
        })
    }

    pub async fn consumer(&self, group: usize) -> Result<RedisConsumer> {
        let mut connection = connection(&self.client).await?;
        let group = format!("g{group}");
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(&group)
            .arg("0")
            .arg("MKSTREAM")
            .exec_async(&mut connection)
            .await;
        if let Err(e) = created {
            // Another member created it first.
            if e.code() != Some("BUSYGROUP") {
                return Err(e.into());
            }
        }
        let member = format!("c{}", next_member_number());
        Ok(RedisConsumer {
            connection,
            key: self.key.clone(),
            group,
            member,
        })
    }

    pub async fn reader(&self) -> Result<RedisReader> {
        Ok(RedisReader {
            connection: connection(&self.client).await?,
            key: self.key.clone(),
            start: "-".to_string(),
        })
    }

    pub async fn cleanup(&mut self) -> Result<()> {
        if !self.key.is_empty() {
            redis::cmd("DEL")
                .arg(&self.key)
                .exec_async(&mut self.admin)
                .await?;
        }
        Ok(())
    }
}

/// A process-unique number for member names.
fn next_member_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub struct RedisProducer {
    connection: MultiplexedConnection,
    key: String,
}

impl RedisProducer {
    pub fn send(&self, batch: Batch) -> BoxFuture<'static, Result<()>> {
        let mut connection = self.connection.clone();
        let key = self.key.clone();
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for i in 0..batch.count {
                pipe.cmd("XADD").arg(&key).arg("*");
                if let Some(k) = batch.key(i) {
                    pipe.arg("k").arg(k);
                }
                pipe.arg("d").arg(batch.payload.as_ref()).ignore();
            }
            pipe.exec_async(&mut connection).await?;
            Ok(())
        })
    }
}

fn deliver(sink: &mut Delivered, id: &redis::streams::StreamId) {
    match id.map.get("d") {
        Some(Value::BulkString(bytes)) => sink.message(bytes),
        _ => sink.message(&[]),
    }
}

pub struct RedisConsumer {
    connection: MultiplexedConnection,
    key: String,
    group: String,
    member: String,
}

impl RedisConsumer {
    pub async fn poll(&mut self, sink: &mut Delivered) -> Result<()> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.member)
            .arg("COUNT")
            .arg(POLL_MESSAGES_MAX)
            .arg("BLOCK")
            .arg(POLL_BLOCK_MS)
            .arg("NOACK")
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(&mut self.connection)
            .await?;
        for stream in reply.iter().flat_map(|r| &r.keys) {
            for id in &stream.ids {
                deliver(sink, id);
            }
        }
        Ok(())
    }
}

pub struct RedisReader {
    connection: MultiplexedConnection,
    key: String,
    /// Next XRANGE start: `-`, then `(<last id>` (exclusive).
    start: String,
}

impl RedisReader {
    pub async fn poll(&mut self, sink: &mut Delivered) -> Result<()> {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(&self.start)
            .arg("+")
            .arg("COUNT")
            .arg(POLL_MESSAGES_MAX)
            .query_async(&mut self.connection)
            .await?;
        for id in &reply.ids {
            deliver(sink, id);
        }
        if let Some(last) = reply.ids.last() {
            self.start = format!("({}", last.id);
        }
        Ok(())
    }
}
