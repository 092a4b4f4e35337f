//! Herald's authentication and authorization model, shared by the HTTP and Kafka
//! front-ends: who a client is (API tokens, SASL/PLAIN, SASL/SCRAM-SHA-256 against one
//! user store) and what it may do (ACLs: resource patterns × operations, default deny).
//!
//! - [`credential`]: salted password credentials (the SCRAM `StoredKey`/`ServerKey`
//!   form; the password itself is never stored) and API-token digests.
//! - [`scram`]: the server side of a SCRAM-SHA-256 exchange (RFC 5802 / RFC 7677) and
//!   the SASL/PLAIN message.
//! - [`acl`]: resources, operations, glob patterns and the [`acl::Acl`] rule list.
//! - [`store`]: the auth file (JSON, written atomically with mode 0600) and the
//!   compiled, read-only [`AuthStore`] the servers consult.
//!
//! Invariants: no secret (password, token, salted key) is ever rendered by `Debug` or
//! `Display`; comparisons of secrets are constant-time; a principal with no matching
//! ACL entry is denied everything.

#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)
)]

pub mod acl;
pub mod credential;
pub mod error;
pub mod scram;
pub mod store;

pub use acl::{Acl, AclEntry, Operation, ResourceKind};
pub use credential::{ScramCredential, TokenDigest};
pub use error::AuthError;
pub use store::{AuthFile, AuthStore, Principal};
