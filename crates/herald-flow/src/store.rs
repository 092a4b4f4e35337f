//! The event store side of the flow runtime: [`StoreSource`] reads `$all` (optionally one
//! category), [`StoreSubscriptionSource`] follows them with a catch-up subscription
//! (no polling), [`StreamSink`] appends saga commands to streams, [`Repository`] loads an
//! aggregate from its stream and appends its decisions with an expected version.
//!
//! Invariant of the repository: an append is made with the exact version the decision was
//! taken against (or `no_stream`), so two concurrent deciders never both win; the loser
//! reloads and decides again (bounded retries). With snapshots on, a load starts from the
//! latest snapshot and reads only the later events; a snapshot is the state after every
//! event up to its version, saved after the append that made it due.

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

/// How long [`SubscriptionSource::read_after`] waits for a first event when caught up.
pub const SUBSCRIPTION_WAIT_DEFAULT: std::time::Duration = std::time::Duration::from_millis(500);

/// `$all` or a category through a catch-up subscription: instead of polling `$all`, a
/// read after the subscription's position waits (up to `wait`) for the next events,
/// which arrive as soon as they are appended. A read after any other position (a
/// restart, a rebuild) resubscribes from there. Positions are `$all` positions;
/// events hidden by stream metadata or deletes when they are read are skipped.
pub struct StoreSubscriptionSource {
    herald: Herald,
    target: herald_client::SubscriptionTarget,
    wait: std::time::Duration,
    subscription: tokio::sync::Mutex<Option<herald_client::CatchUpSubscription>>,
}

impl StoreSubscriptionSource {
    /// Every event of every stream.
    pub fn all(herald: Herald) -> Self {
        Self::new(herald, herald_client::SubscriptionTarget::All)
    }

    /// Events of the streams `<category>-...` (`order` or `order-`).
    pub fn category(herald: Herald, category: impl Into<String>) -> Self {
        Self::new(
            herald,
            herald_client::SubscriptionTarget::Category(category.into()),
        )
    }

    fn new(herald: Herald, target: herald_client::SubscriptionTarget) -> Self {
        Self {
            herald,
            target,
            wait: SUBSCRIPTION_WAIT_DEFAULT,
            subscription: tokio::sync::Mutex::new(None),
        }
    }

    /// Sets how long a caught-up read waits for an event before returning none.
    pub fn with_wait(mut self, wait: std::time::Duration) -> Self {
        self.wait = wait;
        self
    }
}

impl EventSource for StoreSubscriptionSource {
    async fn read_after(&self, after: Option<u64>, max: usize) -> Result<Batch, FlowError> {
        let mut guard = self.subscription.lock().await;
        let reusable = guard.as_ref().is_some_and(|s| s.last_position() == after);
        if !reusable {
            *guard = None;
            let fresh = self
                .herald
                .subscribe_from(self.target.clone(), after)
                .await?;
            *guard = Some(fresh);
        }
        let Some(subscription) = guard.as_mut() else {
            return Ok(Batch::default());
        };
        let mut events = Vec::new();
        // The first event may be waited for; the rest only if already there. A
        // subscription's `next` is cancel-safe: a timeout loses no event.
        let mut wait = self.wait;
        while events.len() < max.max(1) {
            let next = match tokio::time::timeout(wait, subscription.next()).await {
                Err(_elapsed) => break,
                Ok(Ok(record)) => record,
                Ok(Err(error)) => {
                    *guard = None;
                    return Err(error.into());
                }
            };
            wait = std::time::Duration::ZERO;
            events.push(SourcedEvent {
                position: next.position,
                stream: Some(next.stream),
                version: Some(next.version),
                recorded_at_ms: next.recorded_at_ms,
                event: next.event,
            });
        }
        let scanned_to = events.last().map(|e| e.position).or(after);
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
        match &self.target {
            herald_client::SubscriptionTarget::All => "$all (subscription)".to_string(),
            other => format!("{} (subscription)", other.name()),
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
    snapshots: Option<SnapshotPolicy<A>>,
    aggregate: PhantomData<fn() -> A>,
}

/// When and how a repository snapshots its aggregates (see [`Repository::with_snapshots`]).
struct SnapshotPolicy<A> {
    /// Save a snapshot once this many events were appended after the last one.
    every: u64,
    to_json: fn(&A) -> Result<serde_json::Value, serde_json::Error>,
    from_json: fn(serde_json::Value) -> Result<A, serde_json::Error>,
}

impl<A> Clone for SnapshotPolicy<A> {
    fn clone(&self) -> Self {
        Self {
            every: self.every,
            to_json: self.to_json,
            from_json: self.from_json,
        }
    }
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            herald: self.herald.clone(),
            source: self.source.clone(),
            snapshots: self.snapshots.clone(),
            aggregate: PhantomData,
        }
    }
}

/// An aggregate as loaded: its state, its stream's last version, and where the load began.
#[derive(Debug)]
pub struct Loaded<A> {
    pub state: A,
    /// The stream's last version (`None`: the stream does not exist).
    pub version: Option<u64>,
    /// The version of the snapshot the load started from (`None`: from the first event).
    pub snapshot_version: Option<u64>,
    /// Events read and folded after the snapshot.
    pub events_read: u64,
}

impl<A: Aggregate + serde::Serialize + serde::de::DeserializeOwned> Repository<A> {
    /// Loads from the latest snapshot plus the events after it, and saves a snapshot
    /// (the serde JSON of the state) after an append once `every` events (at least 1)
    /// were written since the last one. A snapshot that no longer deserializes (the
    /// state's shape changed) is ignored: the load falls back to every event.
    pub fn with_snapshots(mut self, every: u64) -> Self {
        self.snapshots = Some(SnapshotPolicy {
            every: every.max(1),
            to_json: |state| serde_json::to_value(state),
            from_json: serde_json::from_value,
        });
        self
    }
}

impl<A: Aggregate> Repository<A> {
    pub fn new(herald: Herald, source: impl Into<String>) -> Self {
        Self {
            herald,
            source: source.into(),
            snapshots: None,
            aggregate: PhantomData,
        }
    }

    /// The state of `stream` and its last version (`None`: the stream does not exist).
    pub async fn load(&self, stream: &str) -> Result<(A, Option<u64>), FlowError> {
        let loaded = self.load_from_snapshot(stream).await?;
        Ok((loaded.state, loaded.version))
    }

    /// The starting point of a load: the latest usable snapshot, if snapshots are on.
    async fn snapshot_start(&self, stream: &str) -> Result<Option<(A, u64)>, FlowError> {
        let Some(policy) = &self.snapshots else {
            return Ok(None);
        };
        let snapshot = match self.herald.load_snapshot(stream).await {
            Ok(snapshot) => snapshot,
            Err(ClientError::StreamNotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(snapshot) = snapshot else {
            return Ok(None);
        };
        match (policy.from_json)(snapshot.data) {
            Ok(state) => Ok(Some((state, snapshot.version))),
            Err(error) => {
                tracing::warn!(stream, %error, "snapshot does not deserialize; loading every event");
                Ok(None)
            }
        }
    }

    /// Loads `stream` (from its snapshot when snapshots are on) and says how.
    pub async fn load_from_snapshot(&self, stream: &str) -> Result<Loaded<A>, FlowError> {
        let (mut state, snapshot_version) = match self.snapshot_start(stream).await? {
            Some((state, version)) => (state, Some(version)),
            None => (A::default(), None),
        };
        let mut version = snapshot_version;
        let mut from = snapshot_version.map_or(0, |v| v + 1);
        let mut events_read = 0u64;
        let loaded = |state, version, events_read| Loaded {
            state,
            version,
            snapshot_version,
            events_read,
        };
        loop {
            let page = match self
                .herald
                .read_stream(stream, from, STREAM_PAGE, Direction::Forwards)
                .await
            {
                Ok(page) => page,
                Err(ClientError::StreamNotFound { .. }) => {
                    return Ok(loaded(A::default(), None, events_read))
                }
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
                events_read += 1;
            }
            // A server may cap pages below STREAM_PAGE: only an empty page is the end.
            if page.is_empty() {
                return Ok(loaded(state, version, events_read));
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
            let loaded = self.load_from_snapshot(stream).await?;
            let (mut state, version) = (loaded.state, loaded.version);
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
                Ok(appended) => {
                    for event in &events {
                        state.apply(event);
                    }
                    self.maybe_snapshot(
                        stream,
                        &state,
                        loaded.snapshot_version,
                        appended.next_expected_version,
                    )
                    .await;
                    return Ok(events);
                }
                Err(ClientError::WrongExpectedVersion { .. }) if attempt < CONFLICT_RETRIES_MAX => {
                    tracing::debug!(stream, attempt, "append race lost; deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Saves a snapshot of `state` at `version` when `every` events were written since
    /// `snapshot_version`. A failed save only costs a longer load later: it is logged.
    async fn maybe_snapshot(
        &self,
        stream: &str,
        state: &A,
        snapshot_version: Option<u64>,
        version: u64,
    ) {
        let Some(policy) = &self.snapshots else {
            return;
        };
        let since = snapshot_version.map_or(version + 1, |s| version.saturating_sub(s));
        if since < policy.every {
            return;
        }
        let data = match (policy.to_json)(state) {
            Ok(data) => data,
            Err(error) => {
                tracing::warn!(stream, %error, "aggregate state does not serialize; no snapshot");
                return;
            }
        };
        if let Err(error) = self.herald.save_snapshot(stream, version, data).await {
            tracing::warn!(stream, version, %error, "saving a snapshot failed");
        }
    }
}
