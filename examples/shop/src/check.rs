//! The consistency check of a shop run: reads every event of `$all` and verifies that each
//! order ended completed or fully compensated, with no lost or doubled effect, that money
//! and stock add up, and (optionally) that the order-summary read model agrees.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herald_client::{Direction, Herald, RecordedEvent};
use herald_flow::aggregate::decode;
use serde::Serialize;

use crate::domain::{
    Account, AccountEvent, Order, OrderInfo, Shipment, ShipmentEvent, Stock, StockEvent,
    UNDELIVERABLE_ADDRESS,
};
use crate::projection::SummaryRow;
use crate::setup::{POOR_CUSTOMER, SCARCE_SKU};

const PAGE: usize = 1000;

/// Effects recorded for one order across all services.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Effects {
    pub charged: u32,
    pub declined: u32,
    pub refunded: u32,
    pub refund_skipped: u32,
    pub reserved: u32,
    pub rejected: u32,
    pub released: u32,
    pub release_skipped: u32,
    pub shipped: u32,
    pub ship_failed: u32,
}

/// The outcome of a check.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub orders: usize,
    pub completed: usize,
    pub cancelled: usize,
    pub pending: usize,
    pub balance_initial: u64,
    pub balance_final: u64,
    pub revenue: u64,
    pub stock_initial: u64,
    pub stock_final: u64,
    pub stock_shipped: u64,
    pub events: usize,
    pub problems: Vec<String>,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty() && self.pending == 0
    }
}

/// Every event of `$all`.
pub async fn read_everything(herald: &Herald) -> anyhow::Result<Vec<RecordedEvent>> {
    let mut all = Vec::new();
    let mut from = 0u64;
    loop {
        let page = herald.read_all(from, PAGE, Direction::Forwards).await?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        // The server may cap a page below PAGE: stop only on an empty page.
        from = last.position + 1;
        all.extend(page);
    }
}

/// What the order should end as, from the failures injected into it.
pub fn expected_status(order: &OrderInfo) -> &'static str {
    if order.customer == POOR_CUSTOMER
        || order.sku == SCARCE_SKU
        || order.address == UNDELIVERABLE_ADDRESS
    {
        "cancelled"
    } else {
        "completed"
    }
}

/// Checks the store's events (and the read model rows, when given).
pub fn check(records: &[RecordedEvent], summary: Option<&[SummaryRow]>) -> Report {
    let mut report = Report {
        events: records.len(),
        ..Report::default()
    };
    let mut streams: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for record in records {
        streams
            .entry(record.stream.as_str())
            .or_default()
            .push(record);
    }
    let mut orders: BTreeMap<String, Order> = BTreeMap::new();
    let mut order_events: BTreeMap<String, i64> = BTreeMap::new();
    let mut effects: BTreeMap<String, Effects> = BTreeMap::new();
    for (stream, events) in &streams {
        if let Some(id) = stream.strip_prefix("order-") {
            let mut order = Order::default();
            for record in events {
                match decode::<Order>(&record.event) {
                    Ok(event) => herald_flow::Aggregate::apply(&mut order, &event),
                    Err(e) => report
                        .problems
                        .push(format!("{stream}: undecodable event: {e}")),
                }
            }
            order_events.insert(id.to_string(), events.len() as i64);
            orders.insert(id.to_string(), order);
        } else if stream.starts_with("account-") {
            let mut account = Account::default();
            for record in events {
                let Ok(event) = decode::<Account>(&record.event) else {
                    report.problems.push(format!("{stream}: undecodable event"));
                    continue;
                };
                herald_flow::Aggregate::apply(&mut account, &event);
                match &event {
                    AccountEvent::Opened { balance, .. } => report.balance_initial += balance,
                    AccountEvent::Charged { order } => effect(&mut effects, order).charged += 1,
                    AccountEvent::Declined { order, .. } => {
                        effect(&mut effects, order).declined += 1
                    }
                    AccountEvent::Refunded { order } => effect(&mut effects, order).refunded += 1,
                    AccountEvent::RefundSkipped { order } => {
                        effect(&mut effects, order).refund_skipped += 1
                    }
                }
            }
            report.balance_final += account.balance;
        } else if stream.starts_with("stock-") {
            let mut stock = Stock::default();
            for record in events {
                let Ok(event) = decode::<Stock>(&record.event) else {
                    report.problems.push(format!("{stream}: undecodable event"));
                    continue;
                };
                herald_flow::Aggregate::apply(&mut stock, &event);
                match &event {
                    StockEvent::Added { quantity, .. } => report.stock_initial += quantity,
                    StockEvent::Reserved { order } => effect(&mut effects, order).reserved += 1,
                    StockEvent::Rejected { order, .. } => effect(&mut effects, order).rejected += 1,
                    StockEvent::Released { order } => effect(&mut effects, order).released += 1,
                    StockEvent::ReleaseSkipped { order } => {
                        effect(&mut effects, order).release_skipped += 1
                    }
                }
            }
            report.stock_final += stock.available;
        } else if stream.starts_with("shipment-") {
            for record in events {
                let Ok(event) = decode::<Shipment>(&record.event) else {
                    report.problems.push(format!("{stream}: undecodable event"));
                    continue;
                };
                match &event {
                    ShipmentEvent::Created { order } => effect(&mut effects, order).shipped += 1,
                    ShipmentEvent::Failed { order, .. } => {
                        effect(&mut effects, order).ship_failed += 1
                    }
                }
            }
        }
    }
    report.orders = orders.len();
    for (id, order) in &orders {
        let Some(info) = &order.info else {
            report
                .problems
                .push(format!("order {id}: stream without order.placed"));
            continue;
        };
        let e = effects.get(id).cloned().unwrap_or_default();
        check_order(&mut report, id, order, info, &e);
    }
    for id in effects.keys() {
        if !orders.contains_key(id) {
            report
                .problems
                .push(format!("effects for unknown order {id}"));
        }
    }
    if report.balance_initial != report.balance_final + report.revenue {
        report.problems.push(format!(
            "money does not add up: initial {} != final {} + revenue {}",
            report.balance_initial, report.balance_final, report.revenue
        ));
    }
    if report.stock_initial != report.stock_final + report.stock_shipped {
        report.problems.push(format!(
            "stock does not add up: initial {} != final {} + shipped {}",
            report.stock_initial, report.stock_final, report.stock_shipped
        ));
    }
    if let Some(rows) = summary {
        check_summary(&mut report, &orders, &order_events, rows);
    }
    report
}

fn effect<'a>(effects: &'a mut BTreeMap<String, Effects>, order: &OrderInfo) -> &'a mut Effects {
    effects.entry(order.order_id.clone()).or_default()
}

fn check_order(report: &mut Report, id: &str, order: &Order, info: &OrderInfo, e: &Effects) {
    use crate::domain::OrderStatus;
    let mut problem = |text: String| report.problems.push(format!("order {id}: {text} ({e:?})"));
    let doubled = [
        e.charged,
        e.declined,
        e.refunded,
        e.refund_skipped,
        e.reserved,
        e.rejected,
    ]
    .iter()
    .chain([e.released, e.release_skipped, e.shipped, e.ship_failed].iter())
    .any(|&n| n > 1);
    if doubled {
        problem("an effect happened more than once".into());
    }
    match order.status {
        OrderStatus::Completed => {
            if (e.charged, e.refunded, e.reserved, e.released, e.shipped) != (1, 0, 1, 0, 1) {
                problem("completed but not exactly charged, reserved and shipped once".into());
            }
            report.completed += 1;
            report.revenue += info.amount;
            report.stock_shipped += info.quantity;
        }
        OrderStatus::Cancelled => {
            if e.charged != e.refunded || e.reserved != e.released || e.shipped != 0 {
                problem("cancelled but not fully compensated".into());
            }
            report.cancelled += 1;
        }
        OrderStatus::New | OrderStatus::Placed => {
            report.pending += 1;
            return;
        }
    }
    let expected = expected_status(info);
    if order.status.as_str() != expected {
        problem(format!(
            "ended {} but its injected failures say {expected}",
            order.status.as_str()
        ));
    }
}

fn check_summary(
    report: &mut Report,
    orders: &BTreeMap<String, Order>,
    order_events: &BTreeMap<String, i64>,
    rows: &[SummaryRow],
) {
    if rows.len() != orders.len() {
        report.problems.push(format!(
            "read model has {} orders, the store {}",
            rows.len(),
            orders.len()
        ));
    }
    for row in rows {
        let Some(order) = orders.get(&row.order_id) else {
            report
                .problems
                .push(format!("read model has unknown order {}", row.order_id));
            continue;
        };
        let events = order_events.get(&row.order_id).copied().unwrap_or(0);
        if row.status != order.status.as_str() || row.events != events {
            report.problems.push(format!(
                "read model row {:?} disagrees with the store (status {}, {events} events)",
                row,
                order.status.as_str()
            ));
        }
    }
}

/// Re-checks until no order is pending (or `timeout`), then returns the last report.
pub async fn wait_and_check(
    herald: &Herald,
    expected_orders: usize,
    timeout: Duration,
    summary: impl AsyncFn() -> Option<Vec<SummaryRow>>,
) -> anyhow::Result<Report> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = read_everything(herald).await?;
        let rows = summary().await;
        let report = check(&records, rows.as_deref());
        let settled = report.pending == 0 && report.orders >= expected_orders;
        if (settled && report.problems.is_empty()) || Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
