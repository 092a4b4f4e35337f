//! Listener plumbing shared by the HTTP and Kafka front-ends.
//!
//! - [`tls`]: rustls server configuration from PEM files (optional client-certificate
//!   verification for mutual TLS).
//! - [`stall`]: [`StallGuard`], an I/O wrapper that fails a write the peer has not
//!   drained for too long, so a client that never reads cannot pin a connection.
//! - [`raise_open_files_limit`]: lifts the soft `RLIMIT_NOFILE` to the hard limit.
//!
//! Invariants: nothing here panics on bad files or peers; errors name the file at fault.

#![deny(clippy::unwrap_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::panic))]

pub mod stall;
pub mod tls;

pub use stall::StallGuard;
pub use tls::{TlsError, TlsFiles};

/// Raises the soft open-files limit to the hard limit (servers hold one descriptor per
/// connection). Returns the soft limit now in force, or `None` if it cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}
