//! The event store side of the flow runtime: [`StoreSource`] reads `$all` (optionally one
//! category), [`StreamSink`] appends saga commands to streams, [`Repository`] loads an
//! aggregate from its stream and appends its decisions with an expected version.
//!
//! Invariant of the repository: an append is made with the exact version the decision was
//! taken against (or `no_stream`), so two concurrent deciders never both win; the loser
//! reloads and decides again (bounded retries).

use std::marker::PhantomData;

use herald_client::{ClientError, CloudEvent, Direction, ExpectedVersion, Herald};

use crate::aggregate::{decode, encode, Aggregate};
use crate::causation::{correlation_of, follow};
use crate::saga::CommandSink;
use crate::source::{Batch, EventSource, SourcedEvent};
use crate::FlowError;

/// Events read per request when loading a stream.
const STREAM_PAGE: usize = 512;
/// How often a decision is retried after losing an append race.
pub const CONFLICT_RETRIES_MAX: u32 = 16;

/// `$all` in global order, or only the streams of one category (`order-` keeps
/// `order-1`, `order-2`, ...). Positions are `$all` positions in both cases.
#[derive(Clone)]
pub struct StoreSource {
    herald: Herald,
    category: Option<String>,
}

impl StoreSource {
    /// Every event of every stream.
    pub fn all(herald: Herald) -> Self {
        Self {
            herald,
            category: None,
        }
    }

    /// Events of streams whose name starts with `prefix` (e.g. `order-`).
    pub fn category(herald: Herald, prefix: impl Into<String>) -> Self {
        Self {
            herald,
            category: Some(prefix.into()),
        }
    }
}

impl EventSource for StoreSource {
    async fn read_after(&self, after: Option<u64>, max: usize) -> Result<Batch, FlowError> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let records = self.herald.read_all(from, max, Direction::Forwards).await?;
        let scanned_to = records.last().map(|r| r.position).or(after);
        let events = records
            .into_iter()
            .filter(|r| after.is_none_or(|a| r.position > a))
            .filter(|r| {
                self.category
                    .as_ref()
                    .is_none_or(|prefix| r.stream.starts_with(prefix.as_str()))
            })
            .map(|r| SourcedEvent {
                position: r.position,
                stream: Some(r.stream),
                version: Some(r.version),
                recorded_at_ms: r.recorded_at_ms,
                event: r.event,
            })
            .collect();
        Ok(Batch { events, scanned_to })
    }

    async fn head(&self) -> Result<Option<u64>, FlowError> {
        let last = self
            .herald
            .read_all(u64::MAX, 1, Direction::Backwards)
            .await?;
        Ok(last.first().map(|r| r.position))
    }

    fn describe(&self) -> String {
        match &self.category {
            None => "$all".to_string(),
            Some(prefix) => format!("category {prefix}"),
        }
    }
}

/// Appends each command to the event-store stream `<prefix><saga id>`.
#[derive(Clone)]
pub struct StreamSink {
    herald: Herald,
    prefix: String,
}

impl StreamSink {
    pub fn new(herald: Herald, prefix: impl Into<String>) -> Self {
        Self {
            herald,
            prefix: prefix.into(),
        }
    }
}

impl CommandSink for StreamSink {
    async fn send(&self, command: CloudEvent) -> Result<(), FlowError> {
        let stream = format!("{}{}", self.prefix, correlation_of(&command));
        self.herald
            .append_to_stream(&stream, ExpectedVersion::Any, vec![command])
            .await?;
        Ok(())
    }
}

/// Why a command was not executed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::fmt::Debug + std::fmt::Display> {
    /// The aggregate refused the command (a domain error).
    #[error("rejected: {0}")]
    Rejected(E),
    #[error(transparent)]
    Flow(#[from] FlowError),
}

impl<E: std::fmt::Debug + std::fmt::Display> From<ClientError> for ExecuteError<E> {
    fn from(e: ClientError) -> Self {
        ExecuteError::Flow(FlowError::Client(e))
    }
}

/// Loads aggregates of type `A` from their streams and appends their decisions.
pub struct Repository<A> {
    herald: Herald,
    /// The CloudEvents `source` of the events written.
    source: String,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            herald: self.herald.clone(),
            source: self.source.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    pub fn new(herald: Herald, source: impl Into<String>) -> Self {
        Self {
            herald,
            source: source.into(),
            aggregate: PhantomData,
        }
    }

    /// The state of `stream` and its last version (`None`: the stream does not exist).
    pub async fn load(&self, stream: &str) -> Result<(A, Option<u64>), FlowError> {
        let mut state = A::default();
        let mut version = None;
        let mut from = 0u64;
        loop {
            let page = match self
                .herald
                .read_stream(stream, from, STREAM_PAGE, Direction::Forwards)
                .await
            {
                Ok(page) => page,
                Err(ClientError::StreamNotFound { .. }) => return Ok((state, None)),
                Err(e) => return Err(e.into()),
            };
            for record in &page {
                let event = decode::<A>(&record.event).map_err(|e| FlowError::Corrupt {
                    what: "aggregate event",
                    message: format!("{stream}@{}: {e}", record.version),
                })?;
                state.apply(&event);
                version = Some(record.version);
                from = record.version + 1;
            }
            // A server may cap pages below STREAM_PAGE: only an empty page is the end.
            if page.is_empty() {
                return Ok((state, version));
            }
        }
    }

    /// Executes a command caused by `cause`: the new events carry its correlation id and
    /// name it as their causation. Returns the events appended (none when the aggregate
    /// had already decided).
    pub async fn execute_caused_by(
        &self,
        stream: &str,
        command: &A::Command,
        cause: &CloudEvent,
    ) -> Result<Vec<A::Event>, ExecuteError<A::Error>> {
        self.execute_with(stream, command, |event| follow(event, cause))
            .await
    }

    /// Executes a command that starts a chain: the events get `correlation_id`.
    pub async fn execute_root(
        &self,
        stream: &str,
        command: &A::Command,
        correlation_id: &str,
    ) -> Result<Vec<A::Event>, ExecuteError<A::Error>> {
        self.execute_with(stream, command, |event| {
            event.with_extension("correlationid", correlation_id.to_string())
        })
        .await
    }

    async fn execute_with(
        &self,
        stream: &str,
        command: &A::Command,
        decorate: impl Fn(CloudEvent) -> CloudEvent,
    ) -> Result<Vec<A::Event>, ExecuteError<A::Error>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (state, version) = self.load(stream).await?;
            let events = state.handle(command).map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                return Ok(events);
            }
            let first = version.map_or(0, |v| v + 1);
            let mut cloud = Vec::with_capacity(events.len());
            for (offset, event) in events.iter().enumerate() {
                // Stream + version is unique, so the id is too (and stable across retries).
                let id = format!("{stream}@{}", first + offset as u64);
                let encoded =
                    encode::<A>(event, id, &self.source).map_err(|e| FlowError::Invalid {
                        what: "aggregate event",
                        message: e.to_string(),
                    })?;
                cloud.push(decorate(encoded));
            }
            let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            match self.herald.append_to_stream(stream, expected, cloud).await {
                Ok(_) => return Ok(events),
                Err(ClientError::WrongExpectedVersion { .. }) if attempt < CONFLICT_RETRIES_MAX => {
                    tracing::debug!(stream, attempt, "append race lost; deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
