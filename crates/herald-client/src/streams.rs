//! Event sourcing in the SDK: streams, `$all`, snapshots and catch-up subscriptions,
//! embedded (the in-process [`herald_eventstore::EventStore`]) or over HTTP
//! (`/v1/streams...`, see `docs/http-api.md`).
//!
//! Owns: the mapping of each call to the two transports and the remote catch-up
//! subscription (an SSE reader that reconnects from the last delivered position, so
//! a dropped connection neither skips nor repeats events).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use herald_core::CloudEvent;
use herald_eventstore::{
    AppendResult, Direction, EventStore, EventStoreConfig, ExpectedVersion, RecordedEvent,
    Snapshot, StreamDescription, StreamInfo, StreamMetadata, SubscriptionTarget,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::remote::{api_error, Remote};
use crate::{ClientError, Herald, Transport};

/// Streams listed per request when paging through `GET /v1/streams`.
const LIST_PAGE: usize = 1000;
/// Longest wait before reconnecting a remote subscription.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);
/// Longest SSE line accepted from the server.
const SSE_LINE_BYTES_MAX: usize = 64 * 1024 * 1024;

pub(crate) async fn open_embedded(dir: PathBuf) -> Result<EventStore, ClientError> {
    tokio::task::spawn_blocking(move || EventStore::open(dir, EventStoreConfig::default()))
        .await
        .map_err(|e| ClientError::Transport(format!("opening the event store: {e}")))?
        .map_err(ClientError::from)
}

impl Herald {
    pub(crate) fn store(&self) -> Result<Option<&EventStore>, ClientError> {
        match (&self.transport, &self.eventstore) {
            (Transport::Remote(_), _) => Ok(None),
            (Transport::Embedded(_), Some(store)) => Ok(Some(store)),
            (Transport::Embedded(_), None) => Err(ClientError::Protocol(
                "this embedded handle has no event store".into(),
            )),
        }
    }

    pub(crate) fn remote(&self) -> Result<&Remote, ClientError> {
        match &self.transport {
            Transport::Remote(r) => Ok(r),
            Transport::Embedded(_) => Err(ClientError::Protocol("not a remote handle".into())),
        }
    }

    /// The embedded event store, in embedded mode.
    pub fn embedded_event_store(&self) -> Option<&EventStore> {
        self.eventstore.as_ref()
    }

    /// Appends `events` to `stream` atomically if `expected` holds; resolves once they
    /// are durable. A failed check is [`ClientError::WrongExpectedVersion`].
    pub async fn append_to_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<CloudEvent>,
    ) -> Result<AppendResult, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.append(stream, expected, events).await?);
        }
        let body = json!({
            "expected_version": expected.to_json(),
            "events": events.iter().map(CloudEvent::to_json_value).collect::<Vec<_>>(),
        });
        let request = self
            .remote()?
            .request(Method::POST, &stream_path(stream))
            .json(&body);
        send(request, Some(stream)).await
    }

    /// Up to `max` events of `stream` from version `from_version` (inclusive;
    /// backwards, `u64::MAX` starts at the last event). Unknown stream:
    /// [`ClientError::StreamNotFound`].
    pub async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.read_stream(stream, from_version, max, direction)?);
        }
        let request = self
            .remote()?
            .request(Method::GET, &stream_path(stream))
            .query(&read_query(from_version, max, direction));
        let page: Value = send(request, Some(stream)).await?;
        events_from_page(&page)
    }

    /// Up to `max` events of `$all` from `from_position` (inclusive; backwards,
    /// `u64::MAX` starts at the last event).
    pub async fn read_all(
        &self,
        from_position: u64,
        max: usize,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.read_all(from_position, max, direction)?);
        }
        let request = self
            .remote()?
            .request(Method::GET, "/v1/streams/$all")
            .query(&read_query(from_position, max, direction));
        let page: Value = send(request, None).await?;
        events_from_page(&page)
    }

    /// Every existing (not deleted) stream, sorted by name.
    pub async fn list_streams(&self) -> Result<Vec<StreamInfo>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.list_streams(None, usize::MAX));
        }
        let mut streams: Vec<StreamInfo> = Vec::new();
        loop {
            let mut query = vec![("max", LIST_PAGE.to_string())];
            if let Some(last) = streams.last() {
                query.push(("after", last.stream.clone()));
            }
            let request = self
                .remote()?
                .request(Method::GET, "/v1/streams")
                .query(&query);
            let page: Value = send(request, None).await?;
            let batch: Vec<StreamInfo> = serde_json::from_value(page["streams"].clone())
                .map_err(|e| ClientError::Protocol(format!("stream list: {e}")))?;
            let done = batch.len() < LIST_PAGE;
            streams.extend(batch);
            if done {
                return Ok(streams);
            }
        }
    }

    /// A stream's metadata and lifecycle state.
    pub async fn stream_metadata(&self, stream: &str) -> Result<StreamDescription, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.describe_stream(stream)?);
        }
        let path = format!("{}/metadata", stream_path(stream));
        send(self.remote()?.request(Method::GET, &path), Some(stream)).await
    }

    /// Sets a stream's metadata (max age, max count).
    pub async fn set_stream_metadata(
        &self,
        stream: &str,
        metadata: StreamMetadata,
    ) -> Result<StreamDescription, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.set_metadata(stream, metadata).await?);
        }
        let path = format!("{}/metadata", stream_path(stream));
        send(
            self.remote()?.request(Method::PUT, &path).json(&metadata),
            Some(stream),
        )
        .await
    }

    /// Soft-deletes a stream (`hard == false`: it can be recreated, versions continue)
    /// or tombstones it (`hard == true`: no further appends).
    pub async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        hard: bool,
    ) -> Result<(), ClientError> {
        if let Some(store) = self.store()? {
            store.delete_stream(stream, expected, hard).await?;
            return Ok(());
        }
        let request = self
            .remote()?
            .request(Method::DELETE, &stream_path(stream))
            .query(&[
                ("hard", hard.to_string()),
                ("expected_version", expected.to_string()),
            ]);
        send::<Value>(request, Some(stream)).await.map(|_| ())
    }

    /// Saves the snapshot of `stream` at `version` (a version the stream has). An older
    /// snapshot than the stored one is ignored.
    pub async fn save_snapshot(
        &self,
        stream: &str,
        version: u64,
        data: Value,
    ) -> Result<(), ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.save_snapshot(stream, version, data).await?);
        }
        let path = format!("{}/snapshot", stream_path(stream));
        let request = self
            .remote()?
            .request(Method::PUT, &path)
            .json(&json!({"version": version, "data": data}));
        send::<Value>(request, Some(stream)).await.map(|_| ())
    }

    /// The latest snapshot of `stream`, if any. Load an aggregate with it plus
    /// `read_stream(stream, snapshot.version + 1, ..)`.
    pub async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.load_snapshot(stream).await?);
        }
        let path = format!("{}/snapshot", stream_path(stream));
        let answer: Value = send(self.remote()?.request(Method::GET, &path), Some(stream)).await?;
        if answer["snapshot"].is_null() {
            return Ok(None);
        }
        serde_json::from_value(answer["snapshot"].clone())
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("snapshot: {e}")))
    }

    /// A catch-up subscription: events after `from_position_exclusive` (a `$all`
    /// position for every target; `None` = from the beginning), first history, then
    /// live ones, with no gap and no duplicate at the switch.
    pub async fn subscribe_from(
        &self,
        target: SubscriptionTarget,
        from_position_exclusive: Option<u64>,
    ) -> Result<CatchUpSubscription, ClientError> {
        if let Some(store) = self.store()? {
            let inner = store.subscribe(target, from_position_exclusive)?;
            return Ok(CatchUpSubscription {
                inner: Inner::Embedded(Box::new(inner)),
            });
        }
        let path = match &target {
            SubscriptionTarget::All => "/v1/streams/$all/subscribe".to_string(),
            SubscriptionTarget::Stream(stream) => format!("{}/subscribe", stream_path(stream)),
            SubscriptionTarget::Category(category) => {
                format!(
                    "/v1/categories/{}/subscribe",
                    category.trim_end_matches('*').trim_end_matches('-')
                )
            }
        };
        let mut remote = RemoteSubscription {
            remote: self.remote()?.clone(),
            path,
            last_position: from_position_exclusive,
            response: None,
            pending: Vec::new(),
            data: String::new(),
            is_error: false,
            ready: VecDeque::new(),
            failures: 0,
        };
        // Connect now so a bad target fails here, not at the first `next()`.
        remote.connect().await?;
        Ok(CatchUpSubscription {
            inner: Inner::Remote(Box::new(remote)),
        })
    }
}

/// A catch-up subscription (see [`Herald::subscribe_from`]).
pub struct CatchUpSubscription {
    inner: Inner,
}

enum Inner {
    Embedded(Box<herald_eventstore::CatchUpSubscription>),
    Remote(Box<RemoteSubscription>),
}

impl CatchUpSubscription {
    /// The next event; waits for one to be appended when caught up.
    pub async fn next(&mut self) -> Result<RecordedEvent, ClientError> {
        match &mut self.inner {
            Inner::Embedded(sub) => Ok(sub.next().await?),
            Inner::Remote(sub) => sub.next().await,
        }
    }

    /// The `$all` position of the last event delivered (or the starting point).
    pub fn last_position(&self) -> Option<u64> {
        match &self.inner {
            Inner::Embedded(sub) => sub.last_position(),
            Inner::Remote(sub) => sub.last_position,
        }
    }
}

/// Reads the SSE stream; on a broken connection, reconnects after the last
/// delivered position (with backoff), so events are neither skipped nor repeated.
struct RemoteSubscription {
    remote: Remote,
    path: String,
    last_position: Option<u64>,
    response: Option<reqwest::Response>,
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// `data:` lines of the event being read.
    data: String,
    /// The event being read is an `event: error`.
    is_error: bool,
    ready: VecDeque<RecordedEvent>,
    failures: u32,
}

impl RemoteSubscription {
    async fn connect(&mut self) -> Result<(), ClientError> {
        let mut request = self.remote.request(Method::GET, &self.path);
        if let Some(position) = self.last_position {
            request = request.query(&[("from", position.to_string())]);
        }
        let response = request.header("accept", "text/event-stream").send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await?;
            return Err(api_error(status, &body));
        }
        self.response = Some(response);
        self.pending.clear();
        self.data.clear();
        self.is_error = false;
        Ok(())
    }

    async fn next(&mut self) -> Result<RecordedEvent, ClientError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                if self
                    .last_position
                    .is_some_and(|last| event.position <= last)
                {
                    continue;
                }
                self.last_position = Some(event.position);
                return Ok(event);
            }
            let Some(response) = self.response.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    self.failures = 0;
                    self.pending.extend_from_slice(&chunk);
                    self.parse_lines()?;
                }
                Ok(None) | Err(_) => self.response = None,
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.failures += 1;
        if self.failures > 1 {
            let delay = Duration::from_millis(100 * 2u64.pow(self.failures.min(6)));
            tokio::time::sleep(delay.min(RECONNECT_DELAY_MAX)).await;
        }
        // A failure is returned; the next call tries again from the same position.
        self.connect().await
    }

    fn parse_lines(&mut self) -> Result<(), ClientError> {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                self.dispatch()?;
            } else if let Some(data) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(data.strip_prefix(' ').unwrap_or(data));
            } else if let Some(kind) = line.strip_prefix("event:") {
                self.is_error = kind.trim() == "error";
            }
        }
        if self.pending.len() > SSE_LINE_BYTES_MAX {
            return Err(ClientError::Protocol("SSE line over the size limit".into()));
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Result<(), ClientError> {
        let data = std::mem::take(&mut self.data);
        let is_error = std::mem::take(&mut self.is_error);
        if data.is_empty() {
            return Ok(());
        }
        if is_error {
            self.response = None;
            return Err(ClientError::Protocol(format!(
                "the server ended the subscription: {data}"
            )));
        }
        let value: Value = serde_json::from_str(&data)
            .map_err(|e| ClientError::Protocol(format!("SSE event is not JSON ({e}): {data}")))?;
        let event = RecordedEvent::from_json(&value).map_err(ClientError::Protocol)?;
        self.ready.push_back(event);
        Ok(())
    }
}

fn stream_path(stream: &str) -> String {
    format!("/v1/streams/{stream}")
}

fn read_query(from: u64, max: usize, direction: Direction) -> Vec<(&'static str, String)> {
    let mut query = vec![
        ("max", max.min(u32::MAX as usize).to_string()),
        ("direction", direction.as_str().to_string()),
    ];
    if from != u64::MAX {
        query.push(("from", from.to_string()));
    } else {
        query.push(("from", "end".to_string()));
    }
    query
}

fn events_from_page(page: &Value) -> Result<Vec<RecordedEvent>, ClientError> {
    let Some(events) = page["events"].as_array() else {
        return Err(ClientError::Protocol(format!(
            "no `events` array in {page}"
        )));
    };
    events
        .iter()
        .map(|e| RecordedEvent::from_json(e).map_err(ClientError::Protocol))
        .collect()
}

/// Sends a streams request; stream errors come back as their typed variants.
pub(crate) async fn send<T: serde::de::DeserializeOwned>(
    request: RequestBuilder,
    stream: Option<&str>,
) -> Result<T, ClientError> {
    let response = request.send().await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        return Err(stream_error(status, &bytes, stream));
    }
    let body = if bytes.is_empty() {
        b"null".as_slice()
    } else {
        &bytes
    };
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&bytes))))
}

fn stream_error(status: StatusCode, body: &[u8], stream: Option<&str>) -> ClientError {
    let error = api_error(status, body);
    let Some(stream) = stream else {
        return error;
    };
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match error.code() {
        Some("wrong_expected_version") => ClientError::WrongExpectedVersion {
            stream: stream.to_string(),
            expected: ExpectedVersion::from_json(&parsed["expected_version"])
                .unwrap_or(ExpectedVersion::Any),
            current: parsed["current_version"].as_u64(),
        },
        Some("stream_not_found") => ClientError::StreamNotFound {
            stream: stream.to_string(),
        },
        Some("stream_deleted") => ClientError::StreamDeleted {
            stream: stream.to_string(),
        },
        _ => error,
    }
}
