//! Orchestration sagas (process managers). A [`SagaDefinition`] lists steps; each step
//! sends a command and waits for a success or failure event (matched by correlation id =
//! saga id), with a timeout and a bounded number of attempts. When a step fails or runs
//! out of attempts, the compensations of the steps already done run one at a time in
//! reverse order, each with its own timeout and attempts.
//!
//! Durability: instance state, the source checkpoint and the commands to send (an outbox)
//! change in one SQLite transaction; commands are sent after the commit and deleted once
//! sent. A crash (kill -9) therefore loses nothing; at worst a command is sent twice, so
//! command handlers must be idempotent (the example shop's are). Deadlines are absolute
//! times from a [`Clock`], so timers survive restarts and tests can drive time.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use herald_client::{CloudEvent, Herald};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::{json, Value};

use crate::causation::{correlation_of, json_data};
use crate::clock::Clock;
use crate::source::EventSource;
use crate::{consumer, db, FlowError};

/// Batches are at most this many source events unless changed.
pub const BATCH_MAX_DEFAULT: usize = 256;
/// How long [`SagaRunner::run`] sleeps when idle (also the timer resolution).
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);
const OUTBOX_PAGE: usize = 64;

/// Where a saga's commands go.
pub trait CommandSink: Send + Sync {
    fn send(&self, command: CloudEvent) -> impl Future<Output = Result<(), FlowError>> + Send;
}

/// Publishes commands to a topic (keyed by saga id, so one saga's commands stay ordered).
#[derive(Clone)]
pub struct TopicSink {
    herald: Herald,
    topic: String,
}

impl TopicSink {
    pub fn new(herald: Herald, topic: impl Into<String>) -> Self {
        Self {
            herald,
            topic: topic.into(),
        }
    }
}

impl CommandSink for TopicSink {
    async fn send(&self, command: CloudEvent) -> Result<(), FlowError> {
        let key = correlation_of(&command).to_string();
        let command = command.with_extension("partitionkey", key);
        self.herald.publish(&self.topic, command).await?;
        Ok(())
    }
}

/// The undo of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct CompensationDefinition {
    pub command_type: String,
    /// Event types that confirm the compensation is done.
    pub done_types: Vec<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
}

impl CompensationDefinition {
    /// 30 s timeout, 3 attempts.
    pub fn new(command_type: impl Into<String>, done_type: impl Into<String>) -> Self {
        Self {
            command_type: command_type.into(),
            done_types: vec![done_type.into()],
            timeout: Duration::from_secs(30),
            max_attempts: 3,
        }
    }

    pub fn done_on(mut self, event_type: impl Into<String>) -> Self {
        self.done_types.push(event_type.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }
}

/// One step: a command and the events that answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDefinition {
    pub name: String,
    pub command_type: String,
    pub success_types: Vec<String>,
    pub failure_types: Vec<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub compensation: Option<CompensationDefinition>,
}

impl StepDefinition {
    /// A step with no answers yet, 30 s timeout, 3 attempts, no compensation.
    pub fn new(name: impl Into<String>, command_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            command_type: command_type.into(),
            success_types: Vec::new(),
            failure_types: Vec::new(),
            timeout: Duration::from_secs(30),
            max_attempts: 3,
            compensation: None,
        }
    }

    pub fn succeeds_on(mut self, event_type: impl Into<String>) -> Self {
        self.success_types.push(event_type.into());
        self
    }

    pub fn fails_on(mut self, event_type: impl Into<String>) -> Self {
        self.failure_types.push(event_type.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    pub fn compensate_with(mut self, compensation: CompensationDefinition) -> Self {
        self.compensation = Some(compensation);
        self
    }
}

/// A saga: started by `trigger_type` events (saga id = the trigger's correlation id).
#[derive(Debug, Clone, PartialEq)]
pub struct SagaDefinition {
    pub name: String,
    pub trigger_type: String,
    pub steps: Vec<StepDefinition>,
    /// Command sent once every step succeeded.
    pub completed_command: Option<String>,
    /// Command sent once every compensation is done.
    pub compensated_command: Option<String>,
}

impl SagaDefinition {
    pub fn new(name: impl Into<String>, trigger_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            trigger_type: trigger_type.into(),
            steps: Vec::new(),
            completed_command: None,
            compensated_command: None,
        }
    }

    pub fn step(mut self, step: StepDefinition) -> Self {
        self.steps.push(step);
        self
    }

    pub fn on_completed(mut self, command_type: impl Into<String>) -> Self {
        self.completed_command = Some(command_type.into());
        self
    }

    pub fn on_compensated(mut self, command_type: impl Into<String>) -> Self {
        self.compensated_command = Some(command_type.into());
        self
    }

    /// Rejects definitions that cannot run: no steps, a step with no answer types, zero
    /// attempts, duplicate step names.
    pub fn validate(&self) -> Result<(), FlowError> {
        let invalid = |message: String| FlowError::Invalid {
            what: "saga definition",
            message: format!("{}: {message}", self.name),
        };
        if self.name.is_empty() || self.trigger_type.is_empty() {
            return Err(invalid("name and trigger type must not be empty".into()));
        }
        if self.steps.is_empty() {
            return Err(invalid("a saga needs at least one step".into()));
        }
        for (index, step) in self.steps.iter().enumerate() {
            if self.steps[..index].iter().any(|s| s.name == step.name) {
                return Err(invalid(format!("duplicate step name {}", step.name)));
            }
            if step.success_types.is_empty() {
                return Err(invalid(format!(
                    "step {} has no success event type",
                    step.name
                )));
            }
            if step.max_attempts == 0 {
                return Err(invalid(format!("step {} has zero attempts", step.name)));
            }
            if let Some(c) = &step.compensation {
                if c.done_types.is_empty() || c.max_attempts == 0 {
                    return Err(invalid(format!(
                        "compensation of step {} needs a done type and at least one attempt",
                        step.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Where a saga instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SagaStatus {
    /// Running a step (`step` is its index).
    Running,
    /// Running compensations (`step` indexes [`SagaInstance::compensations`]).
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every compensation is done.
    Compensated,
    /// A compensation ran out of attempts: needs an operator.
    Failed,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<SagaStatus> {
        Some(match text {
            "running" => SagaStatus::Running,
            "compensating" => SagaStatus::Compensating,
            "completed" => SagaStatus::Completed,
            "compensated" => SagaStatus::Compensated,
            "failed" => SagaStatus::Failed,
            _ => return None,
        })
    }

    /// No further change will happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed
        )
    }
}

/// One saga instance as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaInstance {
    pub saga_id: String,
    pub status: SagaStatus,
    /// Running: the current step. Compensating: the index into `compensations`.
    pub step: usize,
    /// Attempt of the current command (1-based).
    pub attempt: u32,
    /// When the current command times out (ms since the epoch); `None` when terminal.
    pub deadline_ms: Option<i64>,
    /// The trigger's data; sent as the data of every command.
    pub data: Value,
    /// Data of each step's answer, by step name.
    pub results: Value,
    /// Step indices to compensate, in the order they run.
    pub compensations: Vec<usize>,
    /// Why the saga compensates or failed.
    pub reason: Option<String>,
    /// The last event that moved the saga (causation of its next command).
    pub cause_id: String,
    pub updated_ms: i64,
}

/// Runs one saga definition: reads a source, keeps instances in SQLite, sends commands.
pub struct SagaRunner<S, K, C> {
    definition: SagaDefinition,
    source: S,
    sink: K,
    clock: C,
    conn: Connection,
    batch_max: usize,
    poll_interval: Duration,
}

impl<S: EventSource, K: CommandSink, C: Clock> SagaRunner<S, K, C> {
    /// Opens (creating) the state database at `path`.
    pub fn open(
        path: &Path,
        definition: SagaDefinition,
        source: S,
        sink: K,
        clock: C,
    ) -> Result<Self, FlowError> {
        Self::with_connection(db::open(path)?, definition, source, sink, clock)
    }

    /// A runner with state in memory (tests).
    pub fn open_in_memory(
        definition: SagaDefinition,
        source: S,
        sink: K,
        clock: C,
    ) -> Result<Self, FlowError> {
        Self::with_connection(db::open_in_memory()?, definition, source, sink, clock)
    }

    fn with_connection(
        conn: Connection,
        definition: SagaDefinition,
        source: S,
        sink: K,
        clock: C,
    ) -> Result<Self, FlowError> {
        definition.validate()?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS herald_sagas (
                 saga TEXT NOT NULL,
                 saga_id TEXT NOT NULL,
                 status TEXT NOT NULL,
                 step INTEGER NOT NULL,
                 attempt INTEGER NOT NULL,
                 deadline_ms INTEGER,
                 data TEXT NOT NULL,
                 results TEXT NOT NULL,
                 compensations TEXT NOT NULL,
                 reason TEXT,
                 cause_id TEXT NOT NULL,
                 updated_ms INTEGER NOT NULL,
                 PRIMARY KEY (saga, saga_id)
             );
             CREATE INDEX IF NOT EXISTS herald_sagas_deadline
                 ON herald_sagas (saga, deadline_ms) WHERE deadline_ms IS NOT NULL;
             CREATE TABLE IF NOT EXISTS herald_saga_outbox (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 saga TEXT NOT NULL,
                 event TEXT NOT NULL
             );",
        )?;
        Ok(Self {
            definition,
            source,
            sink,
            clock,
            conn,
            batch_max: BATCH_MAX_DEFAULT,
            poll_interval: POLL_INTERVAL_DEFAULT,
        })
    }

    consumer::pacing_builders!();

    pub fn definition(&self) -> &SagaDefinition {
        &self.definition
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    pub fn sink(&self) -> &K {
        &self.sink
    }

    fn checkpoint_name(&self) -> String {
        format!("saga:{}", self.definition.name)
    }

    /// The last source position processed.
    pub fn checkpoint(&self) -> Result<Option<u64>, FlowError> {
        db::checkpoint(&self.conn, &self.checkpoint_name())
    }

    /// Reads one batch from the source and applies it (one transaction); returns the
    /// number of events that started or moved a saga.
    pub async fn step(&mut self) -> Result<usize, FlowError> {
        let name = self.checkpoint_name();
        let Some(pending) = consumer::next_batch(
            db::checkpoint(&self.conn, &name)?,
            &self.source,
            self.batch_max,
        )
        .await?
        else {
            return Ok(0);
        };
        let now = self.clock.now_ms();
        let definition = &self.definition;
        consumer::apply_batch(&mut self.conn, &name, pending.scanned_to, |tx| {
            let mut moved = 0;
            for sourced in &pending.batch.events {
                if handle_event(tx, definition, &sourced.event, now)? {
                    moved += 1;
                }
            }
            Ok(moved)
        })
    }

    /// Handles every deadline that has passed (retry or give up); returns how many.
    pub fn fire_timers(&mut self) -> Result<usize, FlowError> {
        let now = self.clock.now_ms();
        let definition = &self.definition;
        let tx = self.conn.transaction()?;
        let due: Vec<String> = {
            let mut statement = tx.prepare(
                "SELECT saga_id FROM herald_sagas
                 WHERE saga = ?1 AND deadline_ms IS NOT NULL AND deadline_ms <= ?2
                 ORDER BY deadline_ms",
            )?;
            let rows = statement.query_map(params![definition.name, now], |row| row.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for saga_id in &due {
            if let Some(mut instance) = load(&tx, &definition.name, saga_id)? {
                let commands = on_timeout(definition, &mut instance, now);
                save(&tx, &definition.name, &instance)?;
                enqueue(&tx, &definition.name, &commands)?;
            }
        }
        tx.commit()?;
        Ok(due.len())
    }

    /// Sends queued commands in order, deleting each once the sink accepted it.
    pub async fn flush_outbox(&mut self) -> Result<usize, FlowError> {
        let mut sent = 0;
        loop {
            let page: Vec<(i64, String)> = {
                let mut statement = self.conn.prepare(
                    "SELECT seq, event FROM herald_saga_outbox WHERE saga = ?1
                     ORDER BY seq LIMIT ?2",
                )?;
                let rows = statement
                    .query_map(params![self.definition.name, OUTBOX_PAGE as i64], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?;
                rows.collect::<Result<_, _>>()?
            };
            if page.is_empty() {
                return Ok(sent);
            }
            for (seq, text) in page {
                let event = decode_event(&text)?;
                self.sink.send(event).await?;
                self.conn
                    .execute("DELETE FROM herald_saga_outbox WHERE seq = ?1", [seq])?;
                sent += 1;
            }
        }
    }

    /// One round: source batch, timers, outbox. Returns the work done.
    pub async fn tick(&mut self) -> Result<usize, FlowError> {
        let moved = self.step().await?;
        let fired = self.fire_timers()?;
        let sent = self.flush_outbox().await?;
        Ok(moved + fired + sent)
    }

    /// Ticks until `shutdown` resolves. Transient failures are retried with backoff;
    /// others are returned.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), FlowError> {
        let name = self.checkpoint_name();
        let poll_interval = self.poll_interval;
        // Commands left in the outbox by a crash go out with the first tick.
        consumer::run_until(&name, poll_interval, shutdown, async || self.tick().await).await
    }

    pub fn instance(&self, saga_id: &str) -> Result<Option<SagaInstance>, FlowError> {
        let tx = self.conn.unchecked_transaction()?;
        load(&tx, &self.definition.name, saga_id)
    }

    /// Every instance of this saga, by id.
    pub fn instances(&self) -> Result<Vec<SagaInstance>, FlowError> {
        let mut statement = self
            .conn
            .prepare("SELECT saga_id FROM herald_sagas WHERE saga = ?1 ORDER BY saga_id")?;
        let ids: Vec<String> = statement
            .query_map([&self.definition.name], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        drop(statement);
        let tx = self.conn.unchecked_transaction()?;
        let mut instances = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(instance) = load(&tx, &self.definition.name, &id)? {
                instances.push(instance);
            }
        }
        Ok(instances)
    }

    /// How many instances are in each status.
    pub fn status_counts(&self) -> Result<BTreeMap<SagaStatus, u64>, FlowError> {
        let mut counts = BTreeMap::new();
        for instance in self.instances()? {
            *counts.entry(instance.status).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Commands stored but not yet sent.
    pub fn outbox_len(&self) -> Result<u64, FlowError> {
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM herald_saga_outbox WHERE saga = ?1",
            [&self.definition.name],
            |row| row.get(0),
        )?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// Starts or moves a saga for one event; true when something changed.
fn handle_event(
    tx: &Transaction<'_>,
    definition: &SagaDefinition,
    event: &CloudEvent,
    now: i64,
) -> Result<bool, FlowError> {
    if event.ty == definition.trigger_type {
        let saga_id = correlation_of(event);
        if load(tx, &definition.name, saga_id)?.is_some() {
            return Ok(false);
        }
        let (instance, commands) = start(definition, event, now);
        save(tx, &definition.name, &instance)?;
        enqueue(tx, &definition.name, &commands)?;
        return Ok(true);
    }
    let Some(saga_id) = event.correlation_id() else {
        return Ok(false);
    };
    let Some(mut instance) = load(tx, &definition.name, saga_id)? else {
        return Ok(false);
    };
    match on_answer(definition, &mut instance, event, now) {
        Some(commands) => {
            save(tx, &definition.name, &instance)?;
            enqueue(tx, &definition.name, &commands)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn start(
    definition: &SagaDefinition,
    trigger: &CloudEvent,
    now: i64,
) -> (SagaInstance, Vec<CloudEvent>) {
    let mut instance = SagaInstance {
        saga_id: correlation_of(trigger).to_string(),
        status: SagaStatus::Running,
        step: 0,
        attempt: 0,
        deadline_ms: None,
        data: json_data(trigger),
        results: json!({}),
        compensations: Vec::new(),
        reason: None,
        cause_id: trigger.id.clone(),
        updated_ms: now,
    };
    let command = issue_step(definition, &mut instance, 0, 1, now);
    (instance, vec![command])
}

/// Moves an instance on an answer; `None` when the event is not an answer it waits for.
fn on_answer(
    definition: &SagaDefinition,
    instance: &mut SagaInstance,
    event: &CloudEvent,
    now: i64,
) -> Option<Vec<CloudEvent>> {
    match instance.status {
        SagaStatus::Running => {
            let index = instance.step;
            let step = definition.steps.get(index)?;
            let succeeded = step.success_types.contains(&event.ty);
            let failed = step.failure_types.contains(&event.ty);
            if !succeeded && !failed {
                return None;
            }
            if let Some(results) = instance.results.as_object_mut() {
                results.insert(step.name.clone(), json_data(event));
            }
            instance.cause_id = event.id.clone();
            if failed {
                let reason = format!("step {} failed: {}", step.name, event.ty);
                return Some(begin_compensation(
                    definition,
                    instance,
                    (0..index).rev(),
                    reason,
                    now,
                ));
            }
            if index + 1 < definition.steps.len() {
                Some(vec![issue_step(definition, instance, index + 1, 1, now)])
            } else {
                Some(finish(definition, instance, SagaStatus::Completed, now))
            }
        }
        SagaStatus::Compensating => {
            let step_index = *instance.compensations.get(instance.step)?;
            let compensation = definition.steps.get(step_index)?.compensation.as_ref()?;
            if !compensation.done_types.contains(&event.ty) {
                return None;
            }
            instance.cause_id = event.id.clone();
            Some(next_compensation(
                definition,
                instance,
                instance.step + 1,
                now,
            ))
        }
        SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed => None,
    }
}

/// A deadline passed: retry the current command, or give up on it.
fn on_timeout(
    definition: &SagaDefinition,
    instance: &mut SagaInstance,
    now: i64,
) -> Vec<CloudEvent> {
    match instance.status {
        SagaStatus::Running => {
            let index = instance.step;
            let Some(step) = definition.steps.get(index) else {
                instance.deadline_ms = None;
                return Vec::new();
            };
            if instance.attempt < step.max_attempts {
                return vec![issue_step(
                    definition,
                    instance,
                    index,
                    instance.attempt + 1,
                    now,
                )];
            }
            // The step may have taken effect without its answer reaching us: undo it too.
            let reason = format!(
                "step {} timed out after {} attempts",
                step.name, instance.attempt
            );
            begin_compensation(definition, instance, (0..=index).rev(), reason, now)
        }
        SagaStatus::Compensating => {
            let position = instance.step;
            let compensation = instance
                .compensations
                .get(position)
                .and_then(|&i| definition.steps.get(i))
                .and_then(|s| s.compensation.as_ref().map(|c| (s, c)));
            let Some((step, compensation)) = compensation else {
                instance.deadline_ms = None;
                return Vec::new();
            };
            if instance.attempt < compensation.max_attempts {
                let attempt = instance.attempt + 1;
                return vec![issue_compensation(
                    definition, instance, position, attempt, now,
                )];
            }
            instance.status = SagaStatus::Failed;
            instance.deadline_ms = None;
            instance.updated_ms = now;
            instance.reason = Some(format!(
                "compensation of step {} timed out after {} attempts (after: {})",
                step.name,
                instance.attempt,
                instance.reason.as_deref().unwrap_or("unknown")
            ));
            Vec::new()
        }
        SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed => {
            instance.deadline_ms = None;
            Vec::new()
        }
    }
}

fn begin_compensation(
    definition: &SagaDefinition,
    instance: &mut SagaInstance,
    steps: impl Iterator<Item = usize>,
    reason: String,
    now: i64,
) -> Vec<CloudEvent> {
    instance.status = SagaStatus::Compensating;
    instance.reason = Some(reason);
    instance.compensations = steps
        .filter(|&i| {
            definition
                .steps
                .get(i)
                .is_some_and(|s| s.compensation.is_some())
        })
        .collect();
    next_compensation(definition, instance, 0, now)
}

fn next_compensation(
    definition: &SagaDefinition,
    instance: &mut SagaInstance,
    position: usize,
    now: i64,
) -> Vec<CloudEvent> {
    if position < instance.compensations.len() {
        vec![issue_compensation(definition, instance, position, 1, now)]
    } else {
        finish(definition, instance, SagaStatus::Compensated, now)
    }
}

fn finish(
    definition: &SagaDefinition,
    instance: &mut SagaInstance,
    status: SagaStatus,
    now: i64,
) -> Vec<CloudEvent> {
    instance.status = status;
    instance.deadline_ms = None;
    instance.updated_ms = now;
    let command_type = match status {
        SagaStatus::Completed => definition.completed_command.as_deref(),
        SagaStatus::Compensated => definition.compensated_command.as_deref(),
        _ => None,
    };
    command_type
        .map(|ty| command(definition, instance, ty, status.as_str(), 1))
        .into_iter()
        .collect()
}

fn issue_step(
    definition: &SagaDefinition,
    instance: &mut SagaInstance,
    index: usize,
    attempt: u32,
    now: i64,
) -> CloudEvent {
    instance.status = SagaStatus::Running;
    instance.step = index;
    instance.attempt = attempt;
    instance.updated_ms = now;
    let (command_type, timeout, name) = match definition.steps.get(index) {
        Some(s) => (s.command_type.as_str(), s.timeout, s.name.as_str()),
        None => ("", Duration::ZERO, ""),
    };
    instance.deadline_ms = Some(now.saturating_add(duration_ms(timeout)));
    command(definition, instance, command_type, name, attempt)
}

fn issue_compensation(
    definition: &SagaDefinition,
    instance: &mut SagaInstance,
    position: usize,
    attempt: u32,
    now: i64,
) -> CloudEvent {
    instance.step = position;
    instance.attempt = attempt;
    instance.updated_ms = now;
    let step = instance
        .compensations
        .get(position)
        .and_then(|&i| definition.steps.get(i));
    let (command_type, timeout, phase) =
        match step.and_then(|s| s.compensation.as_ref().map(|c| (s, c))) {
            Some((s, c)) => (
                c.command_type.as_str(),
                c.timeout,
                format!("undo-{}", s.name),
            ),
            None => ("", Duration::ZERO, String::new()),
        };
    instance.deadline_ms = Some(now.saturating_add(duration_ms(timeout)));
    command(definition, instance, command_type, &phase, attempt)
}

/// A command: deterministic id (saga, phase, attempt), the saga's data, correlation =
/// saga id, causation = the event that moved the saga.
fn command(
    definition: &SagaDefinition,
    instance: &SagaInstance,
    command_type: &str,
    phase: &str,
    attempt: u32,
) -> CloudEvent {
    let id = format!(
        "{}:{}:{}:{}",
        definition.name, instance.saga_id, phase, attempt
    );
    CloudEvent::new(
        id,
        format!("/herald/saga/{}", definition.name),
        command_type,
    )
    .with_json_data(&instance.data)
    .with_extension("correlationid", instance.saga_id.clone())
    .with_extension("causationid", instance.cause_id.clone())
    .with_extension("saga", definition.name.clone())
    .with_extension("sagaphase", phase.to_string())
    .with_extension("attempt", attempt.to_string())
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn load(
    tx: &Transaction<'_>,
    saga: &str,
    saga_id: &str,
) -> Result<Option<SagaInstance>, FlowError> {
    type Row = (
        String,
        i64,
        i64,
        Option<i64>,
        String,
        String,
        String,
        Option<String>,
        String,
        i64,
    );
    let row: Option<Row> = tx
        .query_row(
            "SELECT status, step, attempt, deadline_ms, data, results, compensations, reason,
                    cause_id, updated_ms
             FROM herald_sagas WHERE saga = ?1 AND saga_id = ?2",
            params![saga, saga_id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )
        .optional()?;
    let Some((
        status,
        step,
        attempt,
        deadline_ms,
        data,
        results,
        compensations,
        reason,
        cause_id,
        updated_ms,
    )) = row
    else {
        return Ok(None);
    };
    let corrupt = |message: String| FlowError::Corrupt {
        what: "saga instance",
        message: format!("{saga}/{saga_id}: {message}"),
    };
    Ok(Some(SagaInstance {
        saga_id: saga_id.to_string(),
        status: SagaStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status}")))?,
        step: usize::try_from(step).map_err(|_| corrupt(format!("step {step}")))?,
        attempt: u32::try_from(attempt).map_err(|_| corrupt(format!("attempt {attempt}")))?,
        deadline_ms,
        data: serde_json::from_str(&data).map_err(|e| corrupt(format!("data: {e}")))?,
        results: serde_json::from_str(&results).map_err(|e| corrupt(format!("results: {e}")))?,
        compensations: serde_json::from_str(&compensations)
            .map_err(|e| corrupt(format!("compensations: {e}")))?,
        reason,
        cause_id,
        updated_ms,
    }))
}

fn save(tx: &Transaction<'_>, saga: &str, instance: &SagaInstance) -> Result<(), FlowError> {
    let compensations =
        serde_json::to_string(&instance.compensations).map_err(|e| FlowError::Corrupt {
            what: "saga instance",
            message: e.to_string(),
        })?;
    tx.execute(
        "INSERT OR REPLACE INTO herald_sagas
             (saga, saga_id, status, step, attempt, deadline_ms, data, results, compensations,
              reason, cause_id, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            saga,
            instance.saga_id,
            instance.status.as_str(),
            i64::try_from(instance.step).unwrap_or(i64::MAX),
            i64::from(instance.attempt),
            instance.deadline_ms,
            instance.data.to_string(),
            instance.results.to_string(),
            compensations,
            instance.reason,
            instance.cause_id,
            instance.updated_ms,
        ],
    )?;
    Ok(())
}

fn enqueue(tx: &Transaction<'_>, saga: &str, commands: &[CloudEvent]) -> Result<(), FlowError> {
    for command in commands {
        tx.execute(
            "INSERT INTO herald_saga_outbox (saga, event) VALUES (?1, ?2)",
            params![saga, command.to_json_value().to_string()],
        )?;
    }
    Ok(())
}

fn decode_event(text: &str) -> Result<CloudEvent, FlowError> {
    let corrupt = |message: String| FlowError::Corrupt {
        what: "outbox command",
        message,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    CloudEvent::from_json_value(value).map_err(|e| corrupt(e.to_string()))
}
