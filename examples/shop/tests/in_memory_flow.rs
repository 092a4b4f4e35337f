//! The whole shop in memory (herald-testkit): the four services' routing and aggregates on
//! an in-memory bus, both variants, the saga on a virtual clock. Checks every order's
//! chain by correlation id and runs the same consistency check as `shop check`.

use std::time::Duration;

use herald_client::RecordedEvent;
use herald_core::CloudEvent;
use herald_flow::aggregate::{decode, encode};
use herald_flow::{follow, Aggregate, SagaRunner, SagaStatus};
use herald_testkit::{expect_chain, InMemoryBus, VirtualClock};
use rand::rngs::StdRng;
use rand::SeedableRng;
use shop::domain::{Account, AccountCommand, Order, OrderCommand, Shipment, Stock, StockCommand};
use shop::services::{
    account_stream, order_stream, route, shipment_stream, stock_stream, Action, Service, Variant,
};
use shop::setup::{
    make_order, Injected, BALANCE_INITIAL, CUSTOMERS, POOR_CUSTOMER, SKUS, STOCK_INITIAL,
};

const SERVICES: [Service; 4] = [
    Service::Order,
    Service::Payment,
    Service::Inventory,
    Service::Shipping,
];
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Decides `command` on the stream's history and appends the events to the bus.
fn exec<A: Aggregate>(
    bus: &InMemoryBus,
    stream: &str,
    command: &A::Command,
    cause: Option<&CloudEvent>,
    correlation: &str,
) {
    let history: Vec<A::Event> = bus
        .stream_events(stream)
        .iter()
        .map(|e| decode::<A>(e).expect("decodable history"))
        .collect();
    let state = A::from_events(&history);
    let Ok(events) = state.handle(command) else {
        return;
    };
    for (offset, event) in events.iter().enumerate() {
        let encoded = encode::<A>(
            event,
            format!("{stream}@{}", history.len() + offset),
            "/test",
        )
        .expect("encode");
        let encoded = match cause {
            Some(cause) => follow(encoded, cause),
            None => encoded.with_extension("correlationid", correlation.to_string()),
        };
        bus.publish_to(stream, encoded);
    }
}

fn execute(bus: &InMemoryBus, action: &Action, cause: &CloudEvent) {
    let c = Some(cause);
    match action {
        Action::Order(id, command) => exec::<Order>(bus, &order_stream(id), command, c, ""),
        Action::Account(customer, command) => {
            exec::<Account>(bus, &account_stream(customer), command, c, "")
        }
        Action::Stock(sku, command) => exec::<Stock>(bus, &stock_stream(sku), command, c, ""),
        Action::Shipment(id, command) => {
            exec::<Shipment>(bus, &shipment_stream(id), command, c, "")
        }
    }
}

/// Runs the services (except `down`) over every event after `seen`; returns whether any
/// event was handled.
fn pump(bus: &InMemoryBus, variant: Variant, seen: &mut u64, down: &[Service]) -> bool {
    let mut progressed = false;
    while *seen < bus.len() {
        let record = bus.records()[*seen as usize].clone();
        *seen += 1;
        progressed = true;
        for service in SERVICES.iter().filter(|s| !down.contains(s)) {
            if let Some(action) = route(*service, variant, &record.event) {
                execute(bus, &action, &record.event);
            }
        }
    }
    progressed
}

fn setup(bus: &InMemoryBus) {
    for i in 0..CUSTOMERS {
        let customer = format!("c{i}");
        let open = AccountCommand::Open {
            customer: customer.clone(),
            balance: BALANCE_INITIAL,
        };
        exec::<Account>(bus, &account_stream(&customer), &open, None, "setup");
    }
    let poor = AccountCommand::Open {
        customer: POOR_CUSTOMER.into(),
        balance: 0,
    };
    exec::<Account>(bus, &account_stream(POOR_CUSTOMER), &poor, None, "setup");
    for i in 0..SKUS {
        let sku = format!("sku{i}");
        let add = StockCommand::Add {
            sku: sku.clone(),
            quantity: STOCK_INITIAL,
        };
        exec::<Stock>(bus, &stock_stream(&sku), &add, None, "setup");
    }
}

fn place(bus: &InMemoryBus, count: usize, seed: u64) -> Vec<(String, Injected)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let (order, injected) = make_order(&mut rng, "t", i, 40);
            let id = order.order_id.clone();
            exec::<Order>(
                bus,
                &order_stream(&id),
                &OrderCommand::Place(order),
                None,
                &id,
            );
            (id, injected)
        })
        .collect()
}

fn recorded(bus: &InMemoryBus) -> Vec<RecordedEvent> {
    bus.records()
        .into_iter()
        .filter_map(|r| {
            Some(RecordedEvent {
                stream: r.stream?,
                version: r.version?,
                position: r.position,
                recorded_at_ms: r.recorded_at_ms,
                event: r.event,
            })
        })
        .collect()
}

fn assert_chains(bus: &InMemoryBus, orders: &[(String, Injected)]) {
    for (id, injected) in orders {
        let chain = expect_chain(bus, id);
        chain.is_causally_linked();
        match injected {
            Injected::None => {
                chain.contains_in_order([
                    "order.placed",
                    "payment.charged",
                    "stock.reserved",
                    "shipment.created",
                    "order.completed",
                ]);
            }
            Injected::PaymentDeclined => {
                chain
                    .contains_in_order(["order.placed", "payment.declined", "order.cancelled"])
                    .has_none("stock.reserved");
            }
            Injected::OutOfStock => {
                chain
                    .contains_in_order([
                        "payment.charged",
                        "stock.rejected",
                        "payment.refunded",
                        "order.cancelled",
                    ])
                    .has_none("shipment.created");
            }
            Injected::Undeliverable => {
                chain.contains_in_order([
                    "stock.reserved",
                    "shipment.failed",
                    "stock.released",
                    "payment.refunded",
                    "order.cancelled",
                ]);
            }
        }
        chain.has_count(
            "payment.charged",
            usize::from(*injected != Injected::PaymentDeclined),
        );
    }
}

#[test]
fn choreography_settles_every_order_consistently() {
    let seed = 7;
    let bus = InMemoryBus::new();
    setup(&bus);
    let orders = place(&bus, 40, seed);
    let mut seen = 0;
    pump(&bus, Variant::Choreography, &mut seen, &[]);
    assert_chains(&bus, &orders);
    let report = shop::check::check(&recorded(&bus), None);
    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!(report.orders, 40);
}

type Saga = SagaRunner<InMemoryBus, InMemoryBus, VirtualClock>;

fn saga(bus: &InMemoryBus) -> Saga {
    SagaRunner::open_in_memory(
        shop::saga::checkout(STEP_TIMEOUT, 2),
        bus.clone(),
        bus.clone(),
        bus.clock().clone(),
    )
    .expect("saga runner")
}

async fn settle(bus: &InMemoryBus, saga: &mut Saga, seen: &mut u64, down: &[Service]) {
    loop {
        let work = saga.tick().await.expect("saga tick");
        let pumped = pump(bus, Variant::Orchestration, seen, down);
        if work == 0 && !pumped {
            return;
        }
    }
}

#[tokio::test]
async fn orchestration_settles_every_order_consistently() {
    let bus = InMemoryBus::new();
    setup(&bus);
    let orders = place(&bus, 40, 11);
    let mut saga = saga(&bus);
    let mut seen = 0;
    settle(&bus, &mut saga, &mut seen, &[]).await;
    assert_chains(&bus, &orders);
    for (id, injected) in &orders {
        let instance = saga.instance(id).expect("load").expect("a saga per order");
        let expected = if *injected == Injected::None {
            SagaStatus::Completed
        } else {
            SagaStatus::Compensated
        };
        assert_eq!(instance.status, expected, "{instance:?}");
        expect_chain(&bus, id).contains_in_order(["order.placed", "payment.charge"]);
    }
    let report = shop::check::check(&recorded(&bus), None);
    assert!(report.is_consistent(), "{report:#?}");
}

#[tokio::test]
async fn orchestration_compensates_when_shipping_never_answers() {
    let bus = InMemoryBus::new();
    setup(&bus);
    let orders = place(&bus, 5, 3);
    let mut saga = saga(&bus);
    let mut seen = 0;
    settle(&bus, &mut saga, &mut seen, &[Service::Shipping]).await;
    // Two attempts, then the stock and payment of every order that got that far are undone.
    for _ in 0..2 {
        bus.clock().advance(STEP_TIMEOUT);
        settle(&bus, &mut saga, &mut seen, &[Service::Shipping]).await;
    }
    for (id, injected) in &orders {
        let instance = saga.instance(id).expect("load").expect("exists");
        assert_eq!(instance.status, SagaStatus::Compensated, "{instance:?}");
        if *injected == Injected::None {
            expect_chain(&bus, id)
                .has_count("shipment.create", 2)
                .contains_in_order([
                    "stock.reserved",
                    "stock.release",
                    "stock.released",
                    "payment.refund",
                    "payment.refunded",
                    "order.cancelled",
                ]);
        }
    }
}
