//! Persistent subscriptions: named groups on a stream, a category or `$all` whose
//! checkpoint the server keeps, read by competing consumers with leases, acks, nacks
//! and a parked list (EventStoreDB-style).
//!
//! Owns: the registry of groups (`<store>/persistent/<group>/`), their settings and
//! the values of the API. One group is a [`group::Group`]: a queue of `$all` positions
//! run by herald-bus's queue state machine and journal (shared code, not a copy).
//! Invariants: a group name is unique; a group's directory holds `settings.json` once
//! it is fully created (a directory without it is a creation a crash interrupted and is
//! removed on open); create and delete are serialized by `admin`.
//! On JetStream the groups are shared by every gateway instead ([`shared`]); [`Groups`]
//! is the one handle the store uses for either.

pub(crate) mod group;
pub(crate) mod shared;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::EventStoreError;
use crate::store::EventStore;
use crate::types::{RecordedEvent, SubscriptionTarget};
use group::Group;

/// Default lease length of a read.
pub const VISIBILITY_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Longest lease a group or a read may ask for (12 h).
pub const VISIBILITY_TIMEOUT_MS_MAX: u64 = 12 * 60 * 60 * 1000;
/// Default number of retries before an event is parked.
pub const MAX_RETRIES_DEFAULT: u32 = 10;
/// Most retries a group may allow.
pub const MAX_RETRIES_MAX: u32 = 1000;
/// Most events one read returns.
pub const READ_EVENTS_MAX: usize = 1000;
/// Longest a read may wait for events.
pub const READ_WAIT_MAX: Duration = Duration::from_secs(60);
/// Most receipts in one ack or nack.
pub const RECEIPTS_MAX: usize = 1000;
/// Most groups one store holds.
pub const GROUPS_MAX: usize = 10_000;
/// Longest nack reason kept (bytes).
pub const REASON_BYTES_MAX: usize = 1024;

const SETTINGS_FILE: &str = "settings.json";

/// What a group follows and how it delivers, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentSettings {
    pub group: String,
    pub target: SubscriptionTarget,
    /// Deliver events at `$all` positions after this one (`None`: from the beginning).
    pub start_after: Option<u64>,
    /// How long a read's lease lasts unless the read asks otherwise.
    pub visibility_timeout_ms: u64,
    /// Deliveries after the first before a failing event is parked.
    pub max_retries: u32,
    pub created_at_ms: i64,
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The first event of `$all`.
    Start,
    /// Events appended after the group is created.
    End,
    /// The event at this `$all` position and later ones.
    Position(u64),
}

impl StartFrom {
    /// `"start"`, `"end"` or a position (number or numeric string).
    pub fn from_json(value: &Value) -> Result<Self, EventStoreError> {
        match value {
            Value::String(s) if s == "start" => Ok(Self::Start),
            Value::String(s) if s == "end" => Ok(Self::End),
            Value::String(s) => s.parse().map(Self::Position).map_err(|_| bad_start(value)),
            Value::Number(n) => n
                .as_u64()
                .map(Self::Position)
                .ok_or_else(|| bad_start(value)),
            _ => Err(bad_start(value)),
        }
    }
}

fn bad_start(value: &Value) -> EventStoreError {
    EventStoreError::invalid(
        "start",
        format!("must be `start`, `end` or a non-negative $all position, got {value}"),
    )
}

/// A request to create a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePersistent {
    pub group: String,
    pub target: SubscriptionTarget,
    pub start: StartFrom,
    pub visibility_timeout_ms: Option<u64>,
    pub max_retries: Option<u32>,
}

impl CreatePersistent {
    /// Parses `{"group", "target", "start"?, "visibility_timeout_ms"?, "max_retries"?}`.
    pub fn from_json(value: &Value) -> Result<Self, EventStoreError> {
        let object = value
            .as_object()
            .ok_or_else(|| EventStoreError::invalid("body", "must be a JSON object"))?;
        for key in object.keys() {
            if ![
                "group",
                "target",
                "start",
                "visibility_timeout_ms",
                "max_retries",
            ]
            .contains(&key.as_str())
            {
                return Err(EventStoreError::invalid(key.as_str(), "unknown field"));
            }
        }
        let string = |name: &str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| EventStoreError::invalid(name, "must be a string"))
        };
        let group = string("group")?.to_string();
        let target = SubscriptionTarget::from_name(string("target")?).map_err(|e| match e {
            EventStoreError::Invalid { message, .. } => EventStoreError::invalid("target", message),
            other => other,
        })?;
        let start = match object.get("start") {
            None | Some(Value::Null) => StartFrom::Start,
            Some(v) => StartFrom::from_json(v)?,
        };
        let number = |name: &str| -> Result<Option<u64>, EventStoreError> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    EventStoreError::invalid(name, "must be a non-negative integer")
                }),
            }
        };
        let visibility_timeout_ms = number("visibility_timeout_ms")?;
        let max_retries = number("max_retries")?
            .map(|n| {
                u32::try_from(n)
                    .map_err(|_| EventStoreError::invalid("max_retries", "is too large"))
            })
            .transpose()?;
        Ok(Self {
            group,
            target,
            start,
            visibility_timeout_ms,
            max_retries,
        })
    }

    pub fn to_json(&self) -> Value {
        let start = match self.start {
            StartFrom::Start => json!("start"),
            StartFrom::End => json!("end"),
            StartFrom::Position(p) => json!(p),
        };
        json!({
            "group": self.group,
            "target": self.target.name(),
            "start": start,
            "visibility_timeout_ms": self.visibility_timeout_ms,
            "max_retries": self.max_retries,
        })
    }
}

/// Checks a lease length.
pub fn check_visibility(field: &str, ms: u64) -> Result<u64, EventStoreError> {
    if ms == 0 || ms > VISIBILITY_TIMEOUT_MS_MAX {
        return Err(EventStoreError::invalid(
            field,
            format!("must be between 1 and {VISIBILITY_TIMEOUT_MS_MAX} ms"),
        ));
    }
    Ok(ms)
}

/// The on-disk form of [`PersistentSettings`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    group: String,
    target: String,
    start_after: Option<u64>,
    visibility_timeout_ms: u64,
    max_retries: u32,
    created_at_ms: i64,
}

impl PersistentSettings {
    pub fn to_json(&self) -> Value {
        json!({
            "group": self.group,
            "target": self.target.name(),
            "start_after": self.start_after,
            "visibility_timeout_ms": self.visibility_timeout_ms,
            "max_retries": self.max_retries,
            "created_at_ms": self.created_at_ms,
        })
    }

    fn to_file(&self) -> SettingsFile {
        SettingsFile {
            group: self.group.clone(),
            target: self.target.name(),
            start_after: self.start_after,
            visibility_timeout_ms: self.visibility_timeout_ms,
            max_retries: self.max_retries,
            created_at_ms: self.created_at_ms,
        }
    }

    fn from_file(file: SettingsFile) -> Result<Self, EventStoreError> {
        Ok(Self {
            target: SubscriptionTarget::from_name(&file.target)?,
            group: file.group,
            start_after: file.start_after,
            visibility_timeout_ms: file.visibility_timeout_ms,
            max_retries: file.max_retries,
            created_at_ms: file.created_at_ms,
        })
    }
}

/// A group's settings and progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentInfo {
    pub settings: PersistentSettings,
    /// Every event of the target at or before this `$all` position was acked, skipped
    /// or parked (`None`: nothing yet, and `start_after` is `None`). Durable.
    pub checkpoint: Option<u64>,
    /// The last `$all` position examined for the target.
    pub last_dispatched_position: Option<u64>,
    /// Events leased to a consumer now.
    pub in_flight: usize,
    /// Events waiting for a consumer (ready or delayed by a nack), in the queue.
    pub pending: u64,
    /// Events in the parked list (not yet replayed).
    pub parked: u64,
}

impl PersistentInfo {
    pub fn to_json(&self) -> Value {
        let s = &self.settings;
        json!({
            "group": s.group,
            "target": s.target.name(),
            "start_after": s.start_after,
            "visibility_timeout_ms": s.visibility_timeout_ms,
            "max_retries": s.max_retries,
            "created_at_ms": s.created_at_ms,
            "checkpoint": self.checkpoint,
            "last_dispatched_position": self.last_dispatched_position,
            "in_flight": self.in_flight,
            "pending": self.pending,
            "parked": self.parked,
        })
    }

    pub fn from_json(value: &Value) -> Result<Self, String> {
        let field = |name: &str| {
            value
                .get(name)
                .ok_or_else(|| format!("subscription info without `{name}`: {value}"))
        };
        let u64_field = |name: &str| {
            field(name)?
                .as_u64()
                .ok_or_else(|| format!("`{name}` is not an unsigned integer"))
        };
        let target = field("target")?
            .as_str()
            .ok_or("`target` is not a string")?;
        Ok(Self {
            settings: PersistentSettings {
                group: field("group")?
                    .as_str()
                    .ok_or("`group` is not a string")?
                    .to_string(),
                target: SubscriptionTarget::from_name(target).map_err(|e| e.to_string())?,
                start_after: field("start_after")?.as_u64(),
                visibility_timeout_ms: u64_field("visibility_timeout_ms")?,
                max_retries: u32::try_from(u64_field("max_retries")?)
                    .map_err(|_| "`max_retries` is too large")?,
                created_at_ms: field("created_at_ms")?
                    .as_i64()
                    .ok_or("`created_at_ms` is not an integer")?,
            },
            checkpoint: field("checkpoint")?.as_u64(),
            last_dispatched_position: field("last_dispatched_position")?.as_u64(),
            in_flight: usize::try_from(u64_field("in_flight")?).unwrap_or(usize::MAX),
            pending: u64_field("pending")?,
            parked: u64_field("parked")?,
        })
    }
}

/// One event handed to a consumer, leased to `receipt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentEvent {
    /// Pass it to ack / nack.
    pub receipt: String,
    /// 1 on the first delivery; counts every lease of this event in this group.
    pub delivery_count: u32,
    pub event: RecordedEvent,
}

impl PersistentEvent {
    pub fn to_json(&self) -> Value {
        json!({
            "receipt": self.receipt,
            "delivery_count": self.delivery_count,
            "event": self.event.to_json(),
        })
    }

    pub fn from_json(value: &Value) -> Result<Self, String> {
        let field = |name: &str| value.get(name).unwrap_or(&Value::Null);
        Ok(Self {
            receipt: field("receipt")
                .as_str()
                .ok_or("`receipt` is not a string")?
                .to_string(),
            delivery_count: field("delivery_count")
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("`delivery_count` is not a small unsigned integer")?,
            event: RecordedEvent::from_json(field("event"))?,
        })
    }
}

/// What a nack does with the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver again (after `delay_ms`), or park once the retries are exhausted.
    Retry { delay_ms: u64 },
    /// Move to the parked list now.
    Park,
    /// Drop: treated as handled (the checkpoint may pass it).
    Skip,
}

impl NackAction {
    pub fn parse(action: &str, delay_ms: u64) -> Result<Self, EventStoreError> {
        match action {
            "retry" => Ok(Self::Retry { delay_ms }),
            "park" => Ok(Self::Park),
            "skip" => Ok(Self::Skip),
            other => Err(EventStoreError::invalid(
                "action",
                format!("must be `retry`, `park` or `skip`, got {other:?}"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry { .. } => "retry",
            Self::Park => "park",
            Self::Skip => "skip",
        }
    }
}

/// What became of one receipt in an ack or nack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptOutcome {
    Acked,
    /// Nack `skip`: handled without processing.
    Skipped,
    /// Nack `retry`: ready for another delivery.
    Retried,
    /// Nack `retry` with a delay.
    Delayed,
    /// Moved to the parked list (nack `park`, or retries exhausted).
    Parked,
    /// It was already acked, skipped or parked.
    AlreadyDone,
    /// The lease expired and the event was handed out again (or the server
    /// restarted): this receipt no longer owns it.
    LeaseLost,
    /// Not a receipt of this group.
    Invalid,
}

/// One parked event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    /// Its index in the group's parked list (page with `from`).
    pub parked_index: u64,
    pub position: u64,
    pub delivery_count: u32,
    pub reason: String,
    pub parked_at_ms: i64,
    /// The event (`None` only if its record is unreadable as an event).
    pub event: Option<RecordedEvent>,
}

impl ParkedEvent {
    pub fn to_json(&self) -> Value {
        json!({
            "parked_index": self.parked_index,
            "position": self.position,
            "delivery_count": self.delivery_count,
            "reason": self.reason,
            "parked_at_ms": self.parked_at_ms,
            "event": self.event.as_ref().map(RecordedEvent::to_json),
        })
    }

    pub fn from_json(value: &Value) -> Result<Self, String> {
        let field = |name: &str| value.get(name).unwrap_or(&Value::Null);
        let u64_field = |name: &str| {
            field(name)
                .as_u64()
                .ok_or_else(|| format!("`{name}` is not an unsigned integer"))
        };
        Ok(Self {
            parked_index: u64_field("parked_index")?,
            position: u64_field("position")?,
            delivery_count: u32::try_from(u64_field("delivery_count")?)
                .map_err(|_| "`delivery_count` is too large")?,
            reason: field("reason").as_str().unwrap_or_default().to_string(),
            parked_at_ms: field("parked_at_ms").as_i64().unwrap_or_default(),
            event: match field("event") {
                Value::Null => None,
                e => Some(RecordedEvent::from_json(e)?),
            },
        })
    }
}

/// Every group of one store.
pub(crate) struct Registry {
    dir: PathBuf,
    groups: RwLock<BTreeMap<String, Arc<Group>>>,
    /// Serializes create and delete.
    admin: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Opens every group under `dir`; removes half-created ones. Blocking.
    pub fn open(dir: PathBuf) -> Result<Self, EventStoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| EventStoreError::io(&dir, e))?;
        let mut groups = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| EventStoreError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| EventStoreError::io(&dir, e))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let settings_path = path.join(SETTINGS_FILE);
            let bytes = match std::fs::read(&settings_path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %path.display(), "removing a persistent subscription whose creation did not finish");
                    std::fs::remove_dir_all(&path).map_err(|e| EventStoreError::io(&path, e))?;
                    continue;
                }
                Err(e) => return Err(EventStoreError::io(&settings_path, e)),
            };
            let file: SettingsFile =
                serde_json::from_slice(&bytes).map_err(|e| EventStoreError::Corrupt {
                    position: 0,
                    reason: format!("{}: {e}", settings_path.display()),
                })?;
            let settings = PersistentSettings::from_file(file)?;
            let group = Group::open(path, settings)?;
            groups.insert(group.settings().group.clone(), Arc::new(group));
        }
        Ok(Self {
            dir,
            groups: RwLock::new(groups),
            admin: tokio::sync::Mutex::new(()),
        })
    }

    pub fn get(&self, name: &str) -> Result<Arc<Group>, EventStoreError> {
        self.groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| EventStoreError::SubscriptionNotFound {
                group: name.to_string(),
            })
    }

    pub fn list(&self) -> Vec<Arc<Group>> {
        self.groups.read().values().cloned().collect()
    }

    pub async fn create(
        &self,
        store: &EventStore,
        request: CreatePersistent,
    ) -> Result<Arc<Group>, EventStoreError> {
        let settings = new_settings(store, &request)?;
        let _admin = self.admin.lock().await;
        {
            let groups = self.groups.read();
            if groups.contains_key(&request.group) {
                return Err(EventStoreError::SubscriptionExists {
                    group: request.group,
                });
            }
            if groups.len() >= GROUPS_MAX {
                return Err(EventStoreError::invalid(
                    "group",
                    format!("a store holds at most {GROUPS_MAX} persistent subscriptions"),
                ));
            }
        }
        let path = self.dir.join(&settings.group);
        let group = blocking(move || create_group(path, settings)).await?;
        let group = Arc::new(group);
        self.groups
            .write()
            .insert(request.group, Arc::clone(&group));
        Ok(group)
    }

    pub async fn delete(&self, name: &str) -> Result<(), EventStoreError> {
        let _admin = self.admin.lock().await;
        let group = self.get(name)?;
        self.groups.write().remove(name);
        group.shut_down();
        let path = group.dir().to_path_buf();
        let dir = self.dir.clone();
        blocking(move || {
            std::fs::remove_dir_all(&path).map_err(|e| EventStoreError::io(&path, e))?;
            crate::snapshot::sync_dir(&dir)
        })
        .await
    }

    /// Flushes every group's logs. Blocking.
    pub fn close(&self) {
        for group in self.groups.read().values() {
            group.close();
        }
    }
}

/// The settings of a group `request` creates now (validated).
pub(crate) fn new_settings(
    store: &EventStore,
    request: &CreatePersistent,
) -> Result<PersistentSettings, EventStoreError> {
    herald_core::name::validate_name("group", &request.group)?;
    let visibility_timeout_ms = check_visibility(
        "visibility_timeout_ms",
        request
            .visibility_timeout_ms
            .unwrap_or(VISIBILITY_TIMEOUT_MS_DEFAULT),
    )?;
    let max_retries = request.max_retries.unwrap_or(MAX_RETRIES_DEFAULT);
    if max_retries > MAX_RETRIES_MAX {
        return Err(EventStoreError::invalid(
            "max_retries",
            format!("must be at most {MAX_RETRIES_MAX}"),
        ));
    }
    let start_after = match request.start {
        StartFrom::Start => None,
        StartFrom::End => store.end_position().checked_sub(1),
        StartFrom::Position(p) => p.checked_sub(1),
    };
    Ok(PersistentSettings {
        group: request.group.clone(),
        target: request.target.clone(),
        start_after,
        visibility_timeout_ms,
        max_retries,
        created_at_ms: crate::store::now_ms(),
    })
}

/// The groups of one store: in its directory (embedded) or shared on JetStream.
pub(crate) enum Groups {
    Local(Registry),
    Shared(Arc<shared::SharedRegistry>),
}

impl Groups {
    pub async fn create(
        &self,
        store: &EventStore,
        request: CreatePersistent,
    ) -> Result<PersistentInfo, EventStoreError> {
        match self {
            Self::Local(r) => r.create(store, request).await?.info(),
            Self::Shared(r) => r.create(store, request).await?.info(),
        }
    }

    pub fn list(&self) -> Result<Vec<PersistentInfo>, EventStoreError> {
        match self {
            Self::Local(r) => r.list().iter().map(|g| g.info()).collect(),
            Self::Shared(r) => r.list().iter().map(|g| g.info()).collect(),
        }
    }

    pub fn info(&self, group: &str) -> Result<PersistentInfo, EventStoreError> {
        match self {
            Self::Local(r) => r.get(group)?.info(),
            Self::Shared(r) => r.get(group)?.info(),
        }
    }

    pub async fn delete(&self, group: &str) -> Result<(), EventStoreError> {
        match self {
            Self::Local(r) => r.delete(group).await,
            Self::Shared(r) => r.delete(group).await,
        }
    }

    pub async fn read(
        &self,
        store: &EventStore,
        group: &str,
        max: usize,
        visibility_ms: Option<u64>,
        wait: Duration,
    ) -> Result<Vec<PersistentEvent>, EventStoreError> {
        match self {
            Self::Local(r) => r.get(group)?.read(store, max, visibility_ms, wait).await,
            Self::Shared(r) => {
                r.get_or_open(group)
                    .await?
                    .read(store, max, visibility_ms, wait)
                    .await
            }
        }
    }

    pub async fn ack(
        &self,
        group: &str,
        receipts: &[String],
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        match self {
            Self::Local(r) => r.get(group)?.ack(receipts).await,
            Self::Shared(r) => r.get_or_open(group).await?.ack(receipts).await,
        }
    }

    pub async fn nack(
        &self,
        group: &str,
        receipts: &[String],
        action: NackAction,
        reason: Option<&str>,
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        match self {
            Self::Local(r) => r.get(group)?.nack(receipts, action, reason).await,
            Self::Shared(r) => {
                r.get_or_open(group)
                    .await?
                    .nack(receipts, action, reason)
                    .await
            }
        }
    }

    pub fn list_parked(
        &self,
        store: &EventStore,
        group: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<ParkedEvent>, EventStoreError> {
        match self {
            Self::Local(r) => r.get(group)?.list_parked(store, from, max),
            Self::Shared(r) => r.get(group)?.list_parked(store, from, max),
        }
    }

    pub async fn replay_parked(&self, group: &str) -> Result<u64, EventStoreError> {
        match self {
            Self::Local(r) => r.get(group)?.replay_parked().await,
            Self::Shared(r) => r.replay_parked(group).await,
        }
    }

    /// Flushes (embedded) or stops following (JetStream). Blocking.
    pub fn close(&self) {
        match self {
            Self::Local(r) => r.close(),
            Self::Shared(r) => r.close(),
        }
    }
}

/// Creates the group's logs, then writes its settings (the commit point).
fn create_group(path: PathBuf, settings: PersistentSettings) -> Result<Group, EventStoreError> {
    if path.exists() {
        std::fs::remove_dir_all(&path).map_err(|e| EventStoreError::io(&path, e))?;
    }
    std::fs::create_dir_all(&path).map_err(|e| EventStoreError::io(&path, e))?;
    let group = Group::open(path.clone(), settings)?;
    let bytes = serde_json::to_vec_pretty(&group.settings().to_file())
        .map_err(|e| EventStoreError::io(&path, std::io::Error::other(e)))?;
    crate::snapshot::write_atomically(&path, &path.join(SETTINGS_FILE), &bytes)?;
    if let Some(parent) = path.parent() {
        crate::snapshot::sync_dir(parent)?;
    }
    Ok(group)
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EventStoreError> + Send + 'static,
) -> Result<T, EventStoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or(Err(EventStoreError::Closed))
}

pub(crate) fn bus_error(dir: &Path, error: herald_bus::BusError) -> EventStoreError {
    EventStoreError::SubscriptionStorage(format!("{}: {error}", dir.display()))
}
