//! The shop's aggregates, given/when/then (herald-testkit): decisions, injected failures,
//! idempotent redelivery, and refusals.

use herald_testkit::given;
use shop::domain::{
    Account, AccountCommand, AccountEvent, Order, OrderCommand, OrderEvent, OrderInfo, Shipment,
    ShipmentCommand, ShipmentEvent, ShopError, Stock, StockCommand, StockEvent,
};

fn order(id: &str) -> OrderInfo {
    OrderInfo {
        order_id: id.to_string(),
        customer: "c1".to_string(),
        sku: "sku1".to_string(),
        quantity: 2,
        amount: 1_500,
        address: "1 Main Street".to_string(),
    }
}

fn opened(balance: u64) -> AccountEvent {
    AccountEvent::Opened {
        customer: "c1".into(),
        balance,
    }
}

#[test]
fn an_order_is_placed_once_and_closed_once() {
    let o = order("o1");
    given::<Order>([])
        .when(OrderCommand::Place(o.clone()))
        .then([OrderEvent::Placed { order: o.clone() }]);
    given::<Order>([OrderEvent::Placed { order: o.clone() }])
        .when(OrderCommand::Place(o.clone()))
        .then_error(ShopError::OrderExists("o1".into()));
    let state = given::<Order>([OrderEvent::Placed { order: o.clone() }])
        .when(OrderCommand::Complete)
        .then([OrderEvent::Completed { order: o.clone() }]);
    assert_eq!(state.status.as_str(), "completed");
    // Redelivered completion: nothing new.
    given::<Order>([
        OrderEvent::Placed { order: o.clone() },
        OrderEvent::Completed { order: o.clone() },
    ])
    .when(OrderCommand::Complete)
    .then([]);
    given::<Order>([
        OrderEvent::Placed { order: o.clone() },
        OrderEvent::Completed { order: o.clone() },
    ])
    .when(OrderCommand::Cancel {
        reason: "late".into(),
    })
    .then_error_matches(|e| {
        matches!(
            e,
            ShopError::OrderClosed {
                status: "completed",
                ..
            }
        )
    });
    given::<Order>([])
        .when(OrderCommand::Complete)
        .then_error(ShopError::UnknownOrder);
}

#[test]
fn invalid_orders_are_refused() {
    let mut bad = order("o/1");
    given::<Order>([])
        .when(OrderCommand::Place(bad.clone()))
        .then_error_matches(|e| matches!(e, ShopError::InvalidOrder(_)));
    bad = order("o1");
    bad.quantity = 0;
    given::<Order>([])
        .when(OrderCommand::Place(bad))
        .then_error_matches(|e| matches!(e, ShopError::InvalidOrder(_)));
}

#[test]
fn payment_charges_declines_and_refunds_exactly_once() {
    let o = order("o1");
    let state = given::<Account>([opened(2_000)])
        .when(AccountCommand::Charge(o.clone()))
        .then([AccountEvent::Charged { order: o.clone() }]);
    assert_eq!(state.balance, 500);
    given::<Account>([opened(1_000)])
        .when(AccountCommand::Charge(o.clone()))
        .then([AccountEvent::Declined {
            order: o.clone(),
            reason: "insufficient funds".into(),
        }]);
    // A redelivered charge is not charged twice.
    given::<Account>([opened(5_000), AccountEvent::Charged { order: o.clone() }])
        .when(AccountCommand::Charge(o.clone()))
        .then([]);
    let state = given::<Account>([opened(5_000), AccountEvent::Charged { order: o.clone() }])
        .when(AccountCommand::Refund(o.clone()))
        .then([AccountEvent::Refunded { order: o.clone() }]);
    assert_eq!(state.balance, 5_000);
    given::<Account>([
        opened(5_000),
        AccountEvent::Charged { order: o.clone() },
        AccountEvent::Refunded { order: o.clone() },
    ])
    .when(AccountCommand::Refund(o.clone()))
    .then([]);
    // A refund of a charge that never happened is answered, and blocks a late charge.
    given::<Account>([opened(5_000)])
        .when(AccountCommand::Refund(o.clone()))
        .then([AccountEvent::RefundSkipped { order: o.clone() }]);
    given::<Account>([
        opened(5_000),
        AccountEvent::RefundSkipped { order: o.clone() },
    ])
    .when(AccountCommand::Charge(o.clone()))
    .then([]);
}

#[test]
fn inventory_reserves_rejects_and_releases_exactly_once() {
    let o = order("o1");
    let added = StockEvent::Added {
        sku: "sku1".into(),
        quantity: 3,
    };
    let state = given::<Stock>([added.clone()])
        .when(StockCommand::Reserve(o.clone()))
        .then([StockEvent::Reserved { order: o.clone() }]);
    assert_eq!(state.available, 1);
    given::<Stock>([added.clone(), StockEvent::Reserved { order: order("o0") }])
        .when(StockCommand::Reserve(o.clone()))
        .then([StockEvent::Rejected {
            order: o.clone(),
            reason: "out of stock".into(),
        }]);
    let state = given::<Stock>([added.clone(), StockEvent::Reserved { order: o.clone() }])
        .when(StockCommand::Release(o.clone()))
        .then([StockEvent::Released { order: o.clone() }]);
    assert_eq!(state.available, 3);
    given::<Stock>([
        added.clone(),
        StockEvent::Reserved { order: o.clone() },
        StockEvent::Released { order: o.clone() },
    ])
    .when(StockCommand::Release(o.clone()))
    .then([]);
    given::<Stock>([])
        .when(StockCommand::Add {
            sku: "x".into(),
            quantity: 0,
        })
        .then_error_matches(|e| matches!(e, ShopError::InvalidAmount(_)));
}

#[test]
fn shipping_fails_for_the_undeliverable_address_and_decides_once() {
    let o = order("o1");
    given::<Shipment>([])
        .when(ShipmentCommand::Ship(o.clone()))
        .then([ShipmentEvent::Created { order: o.clone() }]);
    let mut nowhere = order("o2");
    nowhere.address = "nowhere".into();
    given::<Shipment>([])
        .when(ShipmentCommand::Ship(nowhere.clone()))
        .then([ShipmentEvent::Failed {
            order: nowhere,
            reason: "address not deliverable".into(),
        }]);
    given::<Shipment>([ShipmentEvent::Created { order: o.clone() }])
        .when(ShipmentCommand::Ship(o))
        .then([]);
}
