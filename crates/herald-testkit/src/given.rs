//! given/when/then for aggregates: history, one command, the expected outcome. Failures
//! panic with the history, the command's outcome and what was expected.

use std::fmt::Debug;

use herald_flow::Aggregate;

/// Starts a scenario from the aggregate's history.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    Given {
        history: events.into_iter().collect(),
    }
}

pub struct Given<A: Aggregate> {
    history: Vec<A::Event>,
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the state the history folds into.
    pub fn when(self, command: A::Command) -> When<A>
    where
        A::Command: Debug,
    {
        let state = A::from_events(&self.history);
        let outcome = state.handle(&command);
        When {
            history: self.history,
            command: format!("{command:?}"),
            outcome,
        }
    }
}

pub struct When<A: Aggregate> {
    history: Vec<A::Event>,
    command: String,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A> {
    /// The command produced exactly `expected`, in order. Returns the state after them.
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match &self.outcome {
            Ok(events) if *events == expected => {
                let mut state = A::from_events(&self.history);
                for event in events {
                    state.apply(event);
                }
                state
            }
            Ok(events) => panic!(
                "given {:?}\nwhen {}\nexpected events {:?}\n     got events {:?}",
                self.history, self.command, expected, events
            ),
            Err(error) => panic!(
                "given {:?}\nwhen {}\nexpected events {:?}\n      got error {error:?}",
                self.history, self.command, expected
            ),
        }
    }

    /// The command was rejected with `expected`.
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        match &self.outcome {
            Err(error) if *error == expected => {}
            other => panic!(
                "given {:?}\nwhen {}\nexpected error {expected:?}\n          got {other:?}",
                self.history, self.command
            ),
        }
    }

    /// The command was rejected with an error `check` accepts.
    pub fn then_error_matches(self, check: impl FnOnce(&A::Error) -> bool) {
        match &self.outcome {
            Err(error) if check(error) => {}
            other => panic!(
                "given {:?}\nwhen {}\nexpected a matching error, got {other:?}",
                self.history, self.command
            ),
        }
    }

    /// The raw outcome, for custom checks.
    pub fn outcome(self) -> Result<Vec<A::Event>, A::Error> {
        self.outcome
    }
}
