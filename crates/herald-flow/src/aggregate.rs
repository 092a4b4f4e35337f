//! Event-sourced aggregates: state rebuilt by folding its events; commands decided
//! against that state produce new events or a domain error. The trait is pure (no I/O),
//! so `herald-testkit`'s given/when/then runs it directly; the repository (with the
//! event store) loads an aggregate from its stream and appends with an expected version.

use std::fmt::{Debug, Display};

use herald_core::CloudEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An aggregate: `apply` folds one event into the state, `handle` decides a command.
pub trait Aggregate: Default + Send + Sync {
    type Command: Send + Sync;
    /// Events are stored as CloudEvents whose data is the serde JSON of the event.
    type Event: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    type Error: Debug + Display + Send + Sync;

    /// The CloudEvent type of an event (e.g. `order.placed`).
    fn event_type(event: &Self::Event) -> &'static str;

    /// Folds one event into the state. Must not fail: events are facts.
    fn apply(&mut self, event: &Self::Event);

    /// Decides a command: the events to append (possibly none), or why not.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state after `events`, from the default state.
    fn from_events<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// Encodes an aggregate event as a CloudEvent (data = serde JSON).
pub fn encode<A: Aggregate>(
    event: &A::Event,
    id: impl Into<String>,
    source: &str,
) -> Result<CloudEvent, serde_json::Error> {
    let data = serde_json::to_value(event)?;
    Ok(CloudEvent::new(id, source, A::event_type(event)).with_json_data(&data))
}

/// Decodes an aggregate event from a CloudEvent written by [`encode`].
pub fn decode<A: Aggregate>(event: &CloudEvent) -> Result<A::Event, serde_json::Error> {
    match &event.data {
        Some(herald_core::Data::Json(text)) => serde_json::from_str(text),
        _ => serde_json::from_str("null"),
    }
}
