//! Herald's core: the event model and everything about it that needs no I/O.
//!
//! - [`event`]: the CloudEvents 1.0 envelope, its validation and its JSON forms
//!   (structured, batch, binary-mode headers).
//! - [`codec`]: the compact binary form an event takes inside a log record.
//! - [`filter`]: content filters (EventBridge-style patterns), the rule index the
//!   dispatcher matches events with, and NATS-style topic wildcards.
//! - [`name`]: topic and group name rules (no path traversal, ever).
//! - [`partitioner`]: key → partition (Kafka-compatible murmur2), so a key lands
//!   on the same partition whichever protocol published it.
//! - [`schema`]: JSON Schemas for event data per `type`: validation, versioned
//!   registry, backward-compatibility checks between versions.
//! - [`trace`]: W3C Trace Context (`traceparent`/`tracestate`) carried as extensions.
//!
//! Invariant: nothing in this crate touches the file system, the network or a clock
//! other than through values passed in.

pub mod codec;
pub mod error;
pub mod event;
pub mod filter;
pub mod name;
pub mod partitioner;
pub mod schema;
pub mod trace;

pub use error::{CodecError, ValidationError};
pub use event::{CloudEvent, Data, ExtensionValue};
