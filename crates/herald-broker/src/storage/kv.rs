//! What the JetStream KV registries (topics, committed offsets) share: the key form of a
//! name, loading every entry with the revision to follow from, and following changes.
//! Invariant: a key is `escape_key(name)`, never a raw name.

use async_nats::jetstream::kv::{Entry, Store};
use futures::{Stream, StreamExt};

use crate::error::BrokerError;

/// Names use `[A-Za-z0-9._-]`; KV keys may not start or end with `.`, so `.` is written
/// `=2E` (`=` never occurs in a name, so this is reversible).
pub fn escape_key(name: &str) -> String {
    name.replace('.', "=2E")
}

pub fn unescape_key(key: &str) -> String {
    key.replace("=2E", ".")
}

/// Every current entry of `kv`, and the revision to follow changes from (exclusive).
/// `what` names the bucket in errors ("topic registry", "offsets").
pub async fn load_entries(kv: &Store, what: &str) -> Result<(Vec<Entry>, u64), BrokerError> {
    let unavailable = |doing: &str, error: &dyn std::fmt::Display| {
        BrokerError::Unavailable(format!("JetStream {what}: {doing}: {error}"))
    };
    // The revision is read first: an entry written meanwhile is loaded and replayed, which
    // both followers tolerate; none is missed.
    // Asked of the server: `Store::status` answers the info cached when the bucket was
    // opened.
    let info = kv
        .stream
        .get_info()
        .await
        .map_err(|e| unavailable("reading the bucket", &e))?;
    let revision = info.state.last_sequence;
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| unavailable("listing keys", &e))?;
    let mut entries = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| unavailable("listing keys", &e))?;
        let entry = kv
            .entry(&key)
            .await
            .map_err(|e| unavailable(&format!("reading {key}"), &e))?;
        entries.extend(entry);
    }
    Ok((entries, revision))
}

/// The entries written after `revision`, as they happen; watcher errors are logged and
/// skipped (the stream ends when the watcher does; the caller re-subscribes).
pub async fn watch_entries(
    kv: &Store,
    revision: u64,
    what: &'static str,
) -> Result<impl Stream<Item = Entry> + Send + 'static, BrokerError> {
    let watch = kv
        .watch_all_from_revision(revision + 1)
        .await
        .map_err(|e| BrokerError::Unavailable(format!("JetStream {what}: watching: {e}")))?;
    Ok(watch.filter_map(move |entry| async move {
        entry
            .inspect_err(|error| tracing::warn!(%error, "JetStream {what} watch failed"))
            .ok()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_contain_a_dot() {
        for name in [".a", "a.b.c", "x", "a..b", "-_.-"] {
            let key = escape_key(name);
            assert!(!key.contains('.'), "{key}");
            assert_eq!(unescape_key(&key), name);
        }
    }
}
