//! Event sources: an ordered feed of events with positions, read in batches after a
//! checkpoint. Invariant: positions of one source strictly increase in read order, and
//! reading after position `p` never returns an event at or before `p`.
//!
//! [`TopicSource`] reads one partition of a topic (position = offset); [`StoreSource`]
//! reads the event store's `$all` order, optionally keeping one category of streams.

use std::future::Future;
use std::time::Duration;

use herald_client::{CloudEvent, Herald, SeekPosition};

use crate::FlowError;

/// One event with its position in its source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedEvent {
    /// The position in the source (`$all` position or partition offset).
    pub position: u64,
    /// The event-store stream the event belongs to (`None` for topics).
    pub stream: Option<String>,
    /// The version of the event in its stream (`None` for topics).
    pub version: Option<u64>,
    /// Append time, milliseconds since the Unix epoch.
    pub recorded_at_ms: i64,
    pub event: CloudEvent,
}

/// One read: the events kept, and the last position looked at (filtered sources may look
/// at events they do not return; the checkpoint moves past them too).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub events: Vec<SourcedEvent>,
    pub scanned_to: Option<u64>,
}

/// An ordered, positioned feed of events.
pub trait EventSource: Send + Sync {
    /// Up to `max` events after position `after` (`None`: from the beginning), oldest first.
    fn read_after(
        &self,
        after: Option<u64>,
        max: usize,
    ) -> impl Future<Output = Result<Batch, FlowError>> + Send;

    /// The position of the newest event, `None` when the source is empty.
    fn head(&self) -> impl Future<Output = Result<Option<u64>, FlowError>> + Send;

    /// A short human description (`topic orders/0`, `$all`, `category order-`).
    fn describe(&self) -> String;
}

/// One partition of a topic: positions are offsets. Projections that need a total order
/// over a multi-partition topic should read the event store instead; several partitions
/// are several sources (one projection runner each, named per partition).
#[derive(Clone)]
pub struct TopicSource {
    herald: Herald,
    topic: String,
    partition: u32,
}

impl TopicSource {
    pub fn new(herald: Herald, topic: impl Into<String>, partition: u32) -> Self {
        Self {
            herald,
            topic: topic.into(),
            partition,
        }
    }
}

impl EventSource for TopicSource {
    async fn read_after(&self, after: Option<u64>, max: usize) -> Result<Batch, FlowError> {
        let position = match after {
            None => SeekPosition::Earliest,
            Some(offset) => SeekPosition::Offset(offset.saturating_add(1)),
        };
        let page = self
            .herald
            .fetch(&self.topic, self.partition, position, max, Duration::ZERO)
            .await?;
        let events: Vec<SourcedEvent> = page
            .events
            .into_iter()
            .filter(|r| after.is_none_or(|a| r.offset > a))
            .map(|r| SourcedEvent {
                position: r.offset,
                stream: None,
                version: None,
                recorded_at_ms: r.timestamp_ms,
                event: r.event,
            })
            .collect();
        let scanned_to = events.last().map(|e| e.position).or(after);
        Ok(Batch { events, scanned_to })
    }

    async fn head(&self) -> Result<Option<u64>, FlowError> {
        let info = self.herald.describe_topic(&self.topic).await?;
        let stats = info
            .partition_stats
            .iter()
            .find(|p| p.partition == self.partition)
            .ok_or_else(|| FlowError::Invalid {
                what: "source",
                message: format!("topic {} has no partition {}", self.topic, self.partition),
            })?;
        Ok(stats.end_offset.checked_sub(1))
    }

    fn describe(&self) -> String {
        format!("topic {}/{}", self.topic, self.partition)
    }
}
