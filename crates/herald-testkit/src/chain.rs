//! Event-chain assertions: the events of one correlation id, in bus order, checked for
//! order, counts and causation links.

use herald_core::CloudEvent;

use crate::InMemoryBus;

/// The chain of events whose correlation id (or own id, for the root) is `correlation_id`.
pub fn expect_chain(bus: &InMemoryBus, correlation_id: &str) -> Chain {
    let events = bus
        .events()
        .into_iter()
        .filter(|e| e.correlation_id().unwrap_or(&e.id) == correlation_id)
        .collect();
    Chain {
        correlation_id: correlation_id.to_string(),
        events,
    }
}

/// The events of one correlation id.
#[derive(Debug, Clone)]
pub struct Chain {
    pub correlation_id: String,
    pub events: Vec<CloudEvent>,
}

impl Chain {
    /// The types in order.
    pub fn types(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.ty.as_str()).collect()
    }

    /// `types` occur in this order (other events may come between them).
    pub fn contains_in_order<'a>(&self, types: impl IntoIterator<Item = &'a str>) -> &Self {
        let wanted: Vec<&str> = types.into_iter().collect();
        let actual = self.types();
        let mut next = 0;
        for ty in &actual {
            if next < wanted.len() && *ty == wanted[next] {
                next += 1;
            }
        }
        assert!(
            next == wanted.len(),
            "chain {} lacks {:?} in order (matched up to {}); chain is {:?}",
            self.correlation_id,
            wanted,
            next,
            actual
        );
        self
    }

    /// Exactly `count` events of type `ty`.
    pub fn has_count(&self, ty: &str, count: usize) -> &Self {
        let actual = self.events.iter().filter(|e| e.ty == ty).count();
        assert!(
            actual == count,
            "chain {} has {actual} events of type {ty}, expected {count}; chain is {:?}",
            self.correlation_id,
            self.types()
        );
        self
    }

    /// No event of type `ty`.
    pub fn has_none(&self, ty: &str) -> &Self {
        self.has_count(ty, 0)
    }

    /// Every event but the first names an earlier event of the chain as its causation.
    pub fn is_causally_linked(&self) -> &Self {
        for (index, event) in self.events.iter().enumerate().skip(1) {
            let cause = event.causation_id();
            let found = cause.is_some_and(|c| self.events[..index].iter().any(|e| e.id == c));
            assert!(
                found,
                "event {} ({}) of chain {} has causation {:?}, not an earlier event of the chain {:?}",
                event.id,
                event.ty,
                self.correlation_id,
                cause,
                self.events.iter().map(|e| (&e.id, &e.ty)).collect::<Vec<_>>()
            );
        }
        self
    }
}
