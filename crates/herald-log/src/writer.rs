//! The writer thread: the only code that writes to a partition's active segment.
//!
//! Owns: the bounded command queue's receiving end, the active segment's write
//! position and index state, group commit, segment rolls, and the interval fsync.
//!
//! Group commit: the thread blocks for one command, then drains every command
//! already queued (at most `queue_depth_max`). The appends of the group that land in
//! the same segment form a *run*: one vectored write for all their batches, one
//! write per index file, then under `FsyncPolicy::Always` one fdatasync; only then
//! is the new end published to readers and every request of the run acknowledged.
//! A roll ends a run; the sealed segment is fdatasync'd (log and both indexes) and
//! the directory synced before the next segment is used.
//!
//! Failure rules: a failed write poisons the log, unless the disk is full
//! (ENOSPC/EDQUOT): then the log and index files are truncated back to the last
//! good position and the run's requests get a retryable `Io` error. A failed
//! fdatasync always poisons. A panic in this thread poisons too.
//!
//! Invariants: readers never see a byte before it is written (and synced, under
//! `Always`); offsets are assigned here, densely, in queue order.

use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::batch::{set_base_offset, BatchHeader};
use crate::config::FsyncPolicy;
use crate::error::{is_no_space, LogError};
use crate::index::{IndexEntry, Indexer};
use crate::record::AppendOutcome;
use crate::segment::{Segment, SegmentState};
use crate::state::Shared;
use crate::FSYNC_SECONDS_METRIC;

/// One queued append: an encoded batch (base offset not yet stamped).
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) batch: Vec<u8>,
    pub(crate) header: BatchHeader,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome, LogError>>,
}

/// What the writer thread can be asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Append(AppendRequest),
    /// Finish everything queued before this, fsync, and exit.
    Close,
}

/// The writer's view of the active segment.
#[derive(Clone, Debug)]
pub(crate) struct ActiveState {
    /// Bytes written to the `.log` file.
    pub(crate) position: u64,
    pub(crate) next_offset: u64,
    pub(crate) indexer: Indexer,
    /// Wall-clock time of the segment's first append (ms since the epoch), for
    /// rolling by age.
    pub(crate) first_append_ms: Option<i64>,
}

impl ActiveState {
    pub(crate) fn empty(base_offset: u64, index_interval_bytes: u32) -> Self {
        Self {
            position: 0,
            next_offset: base_offset,
            indexer: Indexer::new(base_offset, index_interval_bytes),
            first_append_ms: None,
        }
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Appends of one group that go to the same segment.
#[derive(Default)]
struct Run {
    requests: Vec<AppendRequest>,
    bytes: u64,
    records: u64,
}

impl Run {
    fn push(&mut self, request: AppendRequest) {
        self.bytes += u64::from(request.header.length);
        self.records += u64::from(request.header.record_count);
        self.requests.push(request);
    }
}

enum Next {
    Command(Command),
    SyncDue,
    Disconnected,
}

/// Poisons the log if the writer thread unwinds.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison("the writer thread panicked".to_string());
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    segment: Arc<Segment>,
    state: ActiveState,
    receiver: Receiver<Command>,
    /// When the oldest write not yet fdatasync'd happened (Interval and Never).
    unsynced_since: Option<Instant>,
}

impl Writer {
    /// Starts the writer thread for the active `segment` in `state`.
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        segment: Arc<Segment>,
        state: ActiveState,
        receiver: Receiver<Command>,
    ) -> Result<JoinHandle<Result<(), LogError>>, LogError> {
        let dir = shared.dir.clone();
        let writer = Writer {
            shared,
            segment,
            state,
            receiver,
            unsynced_since: None,
        };
        std::thread::Builder::new()
            .name("herald-log-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|e| LogError::io("spawn writer thread for", dir, e))
    }

    fn run(mut self) -> Result<(), LogError> {
        let _guard = PanicGuard(Arc::clone(&self.shared));
        loop {
            let first = match self.next_command() {
                Next::Command(command) => command,
                Next::SyncDue => {
                    self.sync_unsynced();
                    continue;
                }
                Next::Disconnected => return self.shutdown(),
            };
            #[cfg(test)]
            self.shared.faults.wait_while_paused();
            let (appends, close) = self.drain(first);
            self.handle(appends);
            if self
                .sync_deadline()
                .is_some_and(|due| Instant::now() >= due)
            {
                self.sync_unsynced();
            }
            if close {
                return self.shutdown();
            }
        }
    }

    fn next_command(&self) -> Next {
        let Some(deadline) = self.sync_deadline() else {
            return self
                .receiver
                .recv()
                .map_or(Next::Disconnected, Next::Command);
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.receiver.recv_timeout(wait) {
            Ok(command) => Next::Command(command),
            Err(RecvTimeoutError::Timeout) => Next::SyncDue,
            Err(RecvTimeoutError::Disconnected) => Next::Disconnected,
        }
    }

    /// `first` plus everything already queued, up to `queue_depth_max` appends or a
    /// `Close`. Returns the appends and whether a `Close` was seen.
    fn drain(&self, first: Command) -> (Vec<AppendRequest>, bool) {
        let mut appends = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(request) => appends.push(request),
                Command::Close => return (appends, true),
            }
            if appends.len() < self.shared.config.queue_depth_max {
                next = self.receiver.try_recv().ok();
            }
        }
        (appends, false)
    }

    fn handle(&mut self, appends: Vec<AppendRequest>) {
        let mut run = Run::default();
        for request in appends {
            if let Some(reason) = self.shared.poisoned() {
                let _ = request.reply.send(Err(LogError::Poisoned(reason)));
                continue;
            }
            if self.needs_roll(&run, &request.header) {
                self.commit(std::mem::take(&mut run));
                if let Err(error) = self.roll() {
                    let _ = request.reply.send(Err(error));
                    continue;
                }
            }
            run.push(request);
        }
        self.commit(run);
    }

    /// Whether `header` must go to a new segment, given `run` is pending.
    fn needs_roll(&self, run: &Run, header: &BatchHeader) -> bool {
        let position = self.state.position + run.bytes;
        if position == 0 {
            return false; // an empty segment takes any batch
        }
        let config = &self.shared.config;
        let too_big = position + u64::from(header.length) > config.segment_bytes_max;
        let next_relative = self.state.next_offset + run.records - self.segment.base_offset();
        let offsets_exhausted = next_relative > u64::from(u32::MAX);
        let too_old = match (config.segment_age_max, self.state.first_append_ms) {
            (Some(age), Some(first_ms)) => {
                let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                now_ms().saturating_sub(first_ms) >= age_ms
            }
            _ => false,
        };
        too_big || offsets_exhausted || too_old
    }

    /// Writes, syncs (per policy), publishes and acknowledges one run.
    fn commit(&mut self, run: Run) {
        if run.requests.is_empty() {
            return;
        }
        let mut requests = run.requests;
        if let Some(reason) = self.shared.poisoned() {
            for request in requests {
                let _ = request.reply.send(Err(LogError::Poisoned(reason.clone())));
            }
            return;
        }
        let mut staged = self.state.clone();
        let mut offset_entries = Vec::new();
        let mut time_entries = Vec::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in &mut requests {
            let base_offset = staged.next_offset;
            set_base_offset(&mut request.batch, base_offset);
            request.header.base_offset = base_offset;
            let (offset_entry, time_entry) =
                staged.indexer.on_batch(&request.header, staged.position);
            offset_entry.inspect(|e| e.encode_into(&mut offset_entries));
            time_entry.inspect(|e| e.encode_into(&mut time_entries));
            staged.position += u64::from(request.header.length);
            staged.next_offset = request.header.next_offset();
            outcomes.push(AppendOutcome {
                base_offset,
                last_offset: request.header.last_offset(),
            });
        }
        staged.first_append_ms.get_or_insert_with(now_ms);
        if let Err(error) =
            self.write_run(&requests, &offset_entries, &time_entries, staged.position)
        {
            reply_error(requests, &error);
            return;
        }
        if let Err(error) = self.sync_run() {
            reply_error(requests, &error);
            return;
        }
        self.state = staged;
        self.segment.publish(SegmentState {
            written_bytes: self.state.position,
            end_offset: self.state.next_offset,
            max_timestamp_ms: self.state.indexer.max_timestamp_ms().unwrap_or(i64::MIN),
        });
        self.shared.publish(self.state.next_offset);
        for (request, outcome) in requests.into_iter().zip(outcomes) {
            let _ = request.reply.send(Ok(outcome));
        }
    }

    fn sync_run(&mut self) -> Result<(), LogError> {
        if self.shared.config.fsync == FsyncPolicy::Always {
            let started = Instant::now();
            let result = self
                .shared
                .sync_data(self.segment.log_file(), self.segment.log_path());
            metrics::histogram!(FSYNC_SECONDS_METRIC).record(started.elapsed().as_secs_f64());
            result
        } else {
            self.unsynced_since.get_or_insert_with(Instant::now);
            Ok(())
        }
    }

    /// Writes the run's batches and index entries; on failure rolls back (disk
    /// full) or poisons (anything else).
    fn write_run(
        &self,
        requests: &[AppendRequest],
        offset_entries: &[u8],
        time_entries: &[u8],
        end_position: u64,
    ) -> Result<(), LogError> {
        let segment = &self.segment;
        let position = self.state.position;
        let offsets_before = segment.offset_index.len();
        let times_before = segment.time_index.len();
        let result = self
            .write_log(requests, position)
            .map_err(|e| ("write", segment.log_path(), e))
            .and_then(|()| {
                let index = &segment.offset_index;
                index
                    .append(offset_entries)
                    .map_err(|e| ("write index", index.path(), e))
            })
            .and_then(|()| {
                let index = &segment.time_index;
                index
                    .append(time_entries)
                    .map_err(|e| ("write time index", index.path(), e))
            });
        let Err((op, path, error)) = result else {
            segment.set_written_bytes(end_position);
            return Ok(());
        };
        if is_no_space(&error) {
            match self.roll_back(position, offsets_before, times_before) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), %error, "disk full: append rolled back")
                }
                Err(undo) => self.shared.poison(format!(
                    "{op} of `{}` failed ({error}) and could not be rolled back: {undo}",
                    path.display()
                )),
            }
        } else {
            self.shared
                .poison(format!("{op} of `{}` failed: {error}", path.display()));
        }
        Err(LogError::io(op, path, error))
    }

    fn write_log(&self, requests: &[AppendRequest], position: u64) -> io::Result<()> {
        let mut file = self.segment.log_file();
        file.seek(SeekFrom::Start(position))?;
        #[cfg(test)]
        if let Some((prefix_bytes, kind)) = self.shared.faults.take_write_fault() {
            let joined: Vec<u8> = requests
                .iter()
                .flat_map(|r| r.batch.iter().copied())
                .collect();
            file.write_all(
                joined
                    .get(..prefix_bytes.min(joined.len()))
                    .unwrap_or_default(),
            )?;
            return Err(io::Error::from(kind));
        }
        let mut slices: Vec<IoSlice<'_>> =
            requests.iter().map(|r| IoSlice::new(&r.batch)).collect();
        let mut pending = &mut slices[..];
        while !pending.is_empty() {
            match file.write_vectored(pending) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(written) => IoSlice::advance_slices(&mut pending, written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn roll_back(&self, position: u64, offsets_before: u64, times_before: u64) -> io::Result<()> {
        self.segment.log_file().set_len(position)?;
        self.segment.offset_index.truncate(offsets_before)?;
        self.segment.time_index.truncate(times_before)
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&mut self) -> Result<(), LogError> {
        self.seal()?;
        let base_offset = self.state.next_offset;
        let segment = match Segment::open(&self.shared.dir, base_offset, true) {
            Ok(segment) => Arc::new(segment),
            Err(error) => {
                remove_partial_segment(&self.shared.dir, base_offset);
                if !error.is_retryable() {
                    self.shared
                        .poison(format!("creating a segment failed: {error}"));
                }
                return Err(error);
            }
        };
        self.shared.sync_dir()?;
        self.segment.mark_sealed();
        self.shared.segments.write().push(Arc::clone(&segment));
        tracing::debug!(base_offset, dir = %self.shared.dir.display(), "rolled to a new segment");
        self.segment = segment;
        self.state = ActiveState::empty(base_offset, self.shared.config.index_interval_bytes);
        self.unsynced_since = None;
        Ok(())
    }

    /// Writes the final time-index entry and fdatasyncs the segment's three files.
    fn seal(&mut self) -> Result<(), LogError> {
        let mut indexer = self.state.indexer.clone();
        if let Some(entry) = indexer.take_time_entry() {
            let mut encoded = Vec::new();
            entry.encode_into(&mut encoded);
            let index = &self.segment.time_index;
            let before = index.len();
            if let Err(error) = index.append(&encoded) {
                if !is_no_space(&error) || index.truncate(before).is_err() {
                    self.shared.poison(format!(
                        "sealing `{}` failed: {error}",
                        index.path().display()
                    ));
                }
                return Err(LogError::io("write time index", index.path(), error));
            }
        }
        self.state.indexer = indexer;
        let segment = &self.segment;
        self.shared
            .sync_data(segment.log_file(), segment.log_path())?;
        self.shared
            .sync_data(segment.offset_index.file(), segment.offset_index.path())?;
        self.shared
            .sync_data(segment.time_index.file(), segment.time_index.path())
    }

    fn sync_deadline(&self) -> Option<Instant> {
        match self.shared.config.fsync {
            FsyncPolicy::Interval(every) => self.unsynced_since.map(|since| since + every),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        }
    }

    fn sync_unsynced(&mut self) {
        if self.unsynced_since.take().is_some() && self.shared.poisoned().is_none() {
            // A failure poisons the log; there is no request to report it to.
            let _ = self
                .shared
                .sync_data(self.segment.log_file(), self.segment.log_path());
        }
    }

    fn shutdown(&mut self) -> Result<(), LogError> {
        if let Some(reason) = self.shared.poisoned() {
            return Err(LogError::Poisoned(reason));
        }
        self.unsynced_since = None;
        self.shared
            .sync_data(self.segment.log_file(), self.segment.log_path())
    }
}

fn reply_error(requests: Vec<AppendRequest>, error: &LogError) {
    for request in requests {
        let _ = request.reply.send(Err(error.duplicate()));
    }
}

/// Best-effort cleanup after a failed segment creation, so a stray empty segment
/// does not shadow the real tail at the next open.
fn remove_partial_segment(dir: &Path, base_offset: u64) {
    use crate::segment::{segment_file_name, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION};
    for extension in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        let _ = std::fs::remove_file(dir.join(segment_file_name(base_offset, extension)));
    }
}
