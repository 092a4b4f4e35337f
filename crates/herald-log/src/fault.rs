//! Test-only fault injection: makes the writer's next write or fdatasync fail, or
//! holds the writer before it handles a group, so tests can reproduce disk-full,
//! fsync failure and a full queue deterministically.

use std::io;

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Next log write: write this many bytes, then fail with this kind.
    write: Mutex<Option<(usize, io::ErrorKind)>>,
    sync: Mutex<Option<io::ErrorKind>>,
    paused: Mutex<bool>,
    resumed: Condvar,
}

impl Faults {
    pub(crate) fn fail_next_write(&self, prefix_bytes: usize, kind: io::ErrorKind) {
        *self.write.lock() = Some((prefix_bytes, kind));
    }

    pub(crate) fn take_write_fault(&self) -> Option<(usize, io::ErrorKind)> {
        self.write.lock().take()
    }

    pub(crate) fn fail_next_sync(&self, kind: io::ErrorKind) {
        *self.sync.lock() = Some(kind);
    }

    pub(crate) fn take_sync_fault(&self) -> Option<io::Error> {
        self.sync.lock().take().map(io::Error::from)
    }

    pub(crate) fn pause(&self) {
        *self.paused.lock() = true;
    }

    pub(crate) fn resume(&self) {
        *self.paused.lock() = false;
        self.resumed.notify_all();
    }

    pub(crate) fn wait_while_paused(&self) {
        let mut paused = self.paused.lock();
        while *paused {
            self.resumed.wait(&mut paused);
        }
    }
}
