//! Saga runtime on the in-memory bus with a virtual clock: happy path, failure with
//! compensation in reverse order, timeouts with retries, a compensation that never
//! answers, and state that survives reopening (outbox included).

use std::time::Duration;

use herald_core::CloudEvent;
use herald_flow::{
    follow, CompensationDefinition, SagaDefinition, SagaRunner, SagaStatus, StepDefinition,
};
use herald_testkit::{expect_chain, InMemoryBus, VirtualClock};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn definition() -> SagaDefinition {
    SagaDefinition::new("checkout", "order.placed")
        .step(
            StepDefinition::new("payment", "payment.charge")
                .succeeds_on("payment.charged")
                .fails_on("payment.declined")
                .timeout(STEP_TIMEOUT)
                .attempts(2)
                .compensate_with(
                    CompensationDefinition::new("payment.refund", "payment.refunded")
                        .timeout(STEP_TIMEOUT)
                        .attempts(2),
                ),
        )
        .step(
            StepDefinition::new("stock", "stock.reserve")
                .succeeds_on("stock.reserved")
                .fails_on("stock.rejected")
                .timeout(STEP_TIMEOUT)
                .attempts(2)
                .compensate_with(
                    CompensationDefinition::new("stock.release", "stock.released")
                        .timeout(STEP_TIMEOUT),
                ),
        )
        .step(
            StepDefinition::new("shipping", "shipment.create")
                .succeeds_on("shipment.created")
                .timeout(STEP_TIMEOUT)
                .attempts(2),
        )
        .on_completed("order.complete")
        .on_compensated("order.cancel")
}

type Runner = SagaRunner<InMemoryBus, InMemoryBus, VirtualClock>;

fn runner(bus: &InMemoryBus) -> Runner {
    SagaRunner::open_in_memory(definition(), bus.clone(), bus.clone(), bus.clock().clone())
        .expect("open saga runner")
}

fn place(bus: &InMemoryBus, order: &str) {
    bus.publish(
        CloudEvent::new(order, "/shop", "order.placed")
            .with_json_data(&serde_json::json!({"order": order})),
    );
}

/// The newest event of type `ty` in the chain of `order`.
fn last_of(bus: &InMemoryBus, order: &str, ty: &str) -> CloudEvent {
    expect_chain(bus, order)
        .events
        .into_iter()
        .rev()
        .find(|e| e.ty == ty)
        .unwrap_or_else(|| panic!("no {ty} in chain {order}: {:?}", bus.events()))
}

/// A service answering the newest `command` of `order` with `answer`.
fn answer(bus: &InMemoryBus, order: &str, command: &str, answer: &str) {
    let cause = last_of(bus, order, command);
    bus.publish(follow(
        CloudEvent::new(format!("{answer}-{order}"), "/service", answer),
        &cause,
    ));
}

fn status(runner: &Runner, order: &str) -> SagaStatus {
    runner
        .instance(order)
        .expect("load instance")
        .unwrap_or_else(|| panic!("no saga {order}"))
        .status
}

#[tokio::test]
async fn happy_path_runs_every_step_then_completes() {
    let bus = InMemoryBus::new();
    let mut saga = runner(&bus);
    place(&bus, "o-1");
    saga.tick().await.expect("tick");
    answer(&bus, "o-1", "payment.charge", "payment.charged");
    saga.tick().await.expect("tick");
    answer(&bus, "o-1", "stock.reserve", "stock.reserved");
    saga.tick().await.expect("tick");
    answer(&bus, "o-1", "shipment.create", "shipment.created");
    saga.tick().await.expect("tick");
    assert_eq!(status(&saga, "o-1"), SagaStatus::Completed);
    expect_chain(&bus, "o-1")
        .contains_in_order([
            "order.placed",
            "payment.charge",
            "payment.charged",
            "stock.reserve",
            "stock.reserved",
            "shipment.create",
            "shipment.created",
            "order.complete",
        ])
        .has_none("payment.refund")
        .has_count("payment.charge", 1)
        .is_causally_linked();
}

#[tokio::test]
async fn a_failed_step_compensates_the_steps_before_it_in_reverse_order() {
    let bus = InMemoryBus::new();
    let mut saga = runner(&bus);
    place(&bus, "o-2");
    saga.tick().await.expect("tick");
    answer(&bus, "o-2", "payment.charge", "payment.charged");
    saga.tick().await.expect("tick");
    answer(&bus, "o-2", "stock.reserve", "stock.rejected");
    saga.tick().await.expect("tick");
    assert_eq!(status(&saga, "o-2"), SagaStatus::Compensating);
    answer(&bus, "o-2", "payment.refund", "payment.refunded");
    saga.tick().await.expect("tick");
    let instance = saga.instance("o-2").expect("load").expect("exists");
    assert_eq!(instance.status, SagaStatus::Compensated);
    assert_eq!(
        instance.reason.as_deref(),
        Some("step stock failed: stock.rejected")
    );
    expect_chain(&bus, "o-2")
        .contains_in_order([
            "stock.rejected",
            "payment.refund",
            "payment.refunded",
            "order.cancel",
        ])
        .has_none("stock.release")
        .has_none("shipment.create")
        .is_causally_linked();
}

#[tokio::test]
async fn a_silent_step_is_retried_then_compensated_in_reverse_order() {
    let bus = InMemoryBus::new();
    let mut saga = runner(&bus);
    place(&bus, "o-3");
    saga.tick().await.expect("tick");
    answer(&bus, "o-3", "payment.charge", "payment.charged");
    saga.tick().await.expect("tick");
    answer(&bus, "o-3", "stock.reserve", "stock.reserved");
    saga.tick().await.expect("tick");
    // Shipping never answers. Just before the deadline nothing happens.
    bus.clock().advance(STEP_TIMEOUT - Duration::from_millis(1));
    saga.tick().await.expect("tick");
    expect_chain(&bus, "o-3").has_count("shipment.create", 1);
    bus.clock().advance(Duration::from_millis(1));
    saga.tick().await.expect("tick");
    expect_chain(&bus, "o-3").has_count("shipment.create", 2);
    bus.clock().advance(STEP_TIMEOUT);
    saga.tick().await.expect("tick");
    assert_eq!(status(&saga, "o-3"), SagaStatus::Compensating);
    answer(&bus, "o-3", "stock.release", "stock.released");
    saga.tick().await.expect("tick");
    answer(&bus, "o-3", "payment.refund", "payment.refunded");
    saga.tick().await.expect("tick");
    assert_eq!(status(&saga, "o-3"), SagaStatus::Compensated);
    expect_chain(&bus, "o-3")
        .contains_in_order([
            "shipment.create",
            "shipment.create",
            "stock.release",
            "stock.released",
            "payment.refund",
            "payment.refunded",
            "order.cancel",
        ])
        .has_none("order.complete");
}

#[tokio::test]
async fn a_compensation_that_never_answers_fails_the_saga() {
    let bus = InMemoryBus::new();
    let mut saga = runner(&bus);
    place(&bus, "o-4");
    saga.tick().await.expect("tick");
    answer(&bus, "o-4", "payment.charge", "payment.charged");
    saga.tick().await.expect("tick");
    answer(&bus, "o-4", "stock.reserve", "stock.rejected");
    saga.tick().await.expect("tick");
    for _ in 0..2 {
        bus.clock().advance(STEP_TIMEOUT);
        saga.tick().await.expect("tick");
    }
    let instance = saga.instance("o-4").expect("load").expect("exists");
    assert_eq!(instance.status, SagaStatus::Failed);
    assert!(
        instance
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("compensation of step payment timed out")),
        "{instance:?}"
    );
    expect_chain(&bus, "o-4").has_count("payment.refund", 2);
}

#[tokio::test]
async fn state_and_unsent_commands_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("saga.db");
    let bus = InMemoryBus::new();
    let open = || {
        SagaRunner::open(
            &path,
            definition(),
            bus.clone(),
            bus.clone(),
            bus.clock().clone(),
        )
        .expect("open")
    };
    place(&bus, "o-5");
    place(&bus, "o-5"); // a duplicate trigger starts nothing
    {
        let mut saga = open();
        // Processed, but the process "dies" before sending the command.
        assert_eq!(saga.step().await.expect("step"), 1);
        assert_eq!(saga.outbox_len().expect("outbox"), 1);
    }
    let mut saga = open();
    saga.tick().await.expect("tick");
    expect_chain(&bus, "o-5").has_count("payment.charge", 1);
    answer(&bus, "o-5", "payment.charge", "payment.declined");
    drop(saga);
    let mut saga = open();
    saga.tick().await.expect("tick");
    assert_eq!(status(&saga, "o-5"), SagaStatus::Compensated);
    expect_chain(&bus, "o-5")
        .contains_in_order(["payment.charge", "payment.declined", "order.cancel"])
        .has_none("payment.refund");
    assert_eq!(saga.instances().expect("instances").len(), 1);
}

#[test]
fn definitions_that_cannot_run_are_rejected() {
    let empty = SagaDefinition::new("empty", "x");
    assert!(empty.validate().is_err());
    let no_answer = SagaDefinition::new("s", "x").step(StepDefinition::new("a", "cmd"));
    assert!(no_answer.validate().is_err());
    let zero = SagaDefinition::new("s", "x").step(
        StepDefinition::new("a", "cmd")
            .succeeds_on("ok")
            .attempts(0),
    );
    assert!(zero.validate().is_err());
}
