//! The shop's aggregates, each event-sourced in its own streams: orders (`order-<id>`),
//! customer accounts (`account-<customer>`), stock per SKU (`stock-<sku>`) and shipments
//! (`shipment-<order>`). Every decision is idempotent: a command already decided for an
//! order yields no new event, so redelivered or retried commands change nothing.
//! Every event carries the order it concerns (event-carried state transfer), so services
//! react to each other's events without asking anyone.

use std::collections::{BTreeMap, BTreeSet};

use herald_flow::Aggregate;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An order as placed; copied into every event about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInfo {
    pub order_id: String,
    pub customer: String,
    pub sku: String,
    pub quantity: u64,
    /// In cents.
    pub amount: u64,
    pub address: String,
}

/// The address the shipping service cannot deliver to (injected failure).
pub const UNDELIVERABLE_ADDRESS: &str = "nowhere";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShopError {
    #[error("order {0} already exists")]
    OrderExists(String),
    #[error("the order does not exist")]
    UnknownOrder,
    #[error("order {order} is already {status}")]
    OrderClosed { order: String, status: &'static str },
    #[error("invalid order: {0}")]
    InvalidOrder(String),
    #[error("account {0} is already open")]
    AccountExists(String),
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
}

// ---- order ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderStatus {
    #[default]
    New,
    Placed,
    Completed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "new",
            OrderStatus::Placed => "placed",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Default)]
pub struct Order {
    pub info: Option<OrderInfo>,
    pub status: OrderStatus,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    Place(OrderInfo),
    Complete,
    Cancel { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OrderEvent {
    Placed { order: OrderInfo },
    Completed { order: OrderInfo },
    Cancelled { order: OrderInfo, reason: String },
}

impl Aggregate for Order {
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = ShopError;

    fn event_type(event: &OrderEvent) -> &'static str {
        match event {
            OrderEvent::Placed { .. } => "order.placed",
            OrderEvent::Completed { .. } => "order.completed",
            OrderEvent::Cancelled { .. } => "order.cancelled",
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed { order } => {
                self.info = Some(order.clone());
                self.status = OrderStatus::Placed;
            }
            OrderEvent::Completed { .. } => self.status = OrderStatus::Completed,
            OrderEvent::Cancelled { reason, .. } => {
                self.status = OrderStatus::Cancelled;
                self.reason = Some(reason.clone());
            }
        }
    }

    fn handle(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, ShopError> {
        match (command, self.status, &self.info) {
            (OrderCommand::Place(order), OrderStatus::New, _) => {
                validate_order(order)?;
                Ok(vec![OrderEvent::Placed {
                    order: order.clone(),
                }])
            }
            (OrderCommand::Place(order), _, _) => {
                Err(ShopError::OrderExists(order.order_id.clone()))
            }
            (_, OrderStatus::New, _) | (_, _, None) => Err(ShopError::UnknownOrder),
            (OrderCommand::Complete, OrderStatus::Placed, Some(order)) => {
                Ok(vec![OrderEvent::Completed {
                    order: order.clone(),
                }])
            }
            (OrderCommand::Cancel { reason }, OrderStatus::Placed, Some(order)) => {
                Ok(vec![OrderEvent::Cancelled {
                    order: order.clone(),
                    reason: reason.clone(),
                }])
            }
            // Already decided the same way: nothing new (idempotent redelivery).
            (OrderCommand::Complete, OrderStatus::Completed, _)
            | (OrderCommand::Cancel { .. }, OrderStatus::Cancelled, _) => Ok(Vec::new()),
            (_, status, Some(order)) => Err(ShopError::OrderClosed {
                order: order.order_id.clone(),
                status: status.as_str(),
            }),
        }
    }
}

fn validate_order(order: &OrderInfo) -> Result<(), ShopError> {
    let valid_id = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !valid_id(&order.order_id) || !valid_id(&order.customer) || !valid_id(&order.sku) {
        return Err(ShopError::InvalidOrder(
            "order id, customer and sku must be 1-64 characters of [A-Za-z0-9_]".into(),
        ));
    }
    if order.quantity == 0 || order.amount == 0 {
        return Err(ShopError::InvalidOrder(
            "quantity and amount must be positive".into(),
        ));
    }
    Ok(())
}

// ---- account (payment) ----

#[derive(Debug, Default)]
pub struct Account {
    pub opened: bool,
    pub balance: u64,
    pub charged: BTreeMap<String, u64>,
    pub declined: BTreeSet<String>,
    pub refunded: BTreeSet<String>,
    pub refund_skipped: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    Open { customer: String, balance: u64 },
    Charge(OrderInfo),
    Refund(OrderInfo),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AccountEvent {
    Opened {
        customer: String,
        balance: u64,
    },
    Charged {
        order: OrderInfo,
    },
    Declined {
        order: OrderInfo,
        reason: String,
    },
    Refunded {
        order: OrderInfo,
    },
    /// A refund for an order this account never charged (a charge that timed out and
    /// never happened): nothing to give back, but the compensation is answered.
    RefundSkipped {
        order: OrderInfo,
    },
}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = ShopError;

    fn event_type(event: &AccountEvent) -> &'static str {
        match event {
            AccountEvent::Opened { .. } => "account.opened",
            AccountEvent::Charged { .. } => "payment.charged",
            AccountEvent::Declined { .. } => "payment.declined",
            AccountEvent::Refunded { .. } => "payment.refunded",
            AccountEvent::RefundSkipped { .. } => "payment.refund_skipped",
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { balance, .. } => {
                self.opened = true;
                self.balance = *balance;
            }
            AccountEvent::Charged { order } => {
                self.balance = self.balance.saturating_sub(order.amount);
                self.charged.insert(order.order_id.clone(), order.amount);
            }
            AccountEvent::Declined { order, .. } => {
                self.declined.insert(order.order_id.clone());
            }
            AccountEvent::Refunded { order } => {
                if let Some(amount) = self.charged.get(&order.order_id) {
                    self.balance += amount;
                }
                self.refunded.insert(order.order_id.clone());
            }
            AccountEvent::RefundSkipped { order } => {
                self.refund_skipped.insert(order.order_id.clone());
            }
        }
    }

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, ShopError> {
        match command {
            AccountCommand::Open { customer, balance } => {
                if self.opened {
                    return Err(ShopError::AccountExists(customer.clone()));
                }
                Ok(vec![AccountEvent::Opened {
                    customer: customer.clone(),
                    balance: *balance,
                }])
            }
            AccountCommand::Charge(order) => {
                let id = &order.order_id;
                if self.charged.contains_key(id)
                    || self.declined.contains(id)
                    || self.refund_skipped.contains(id)
                {
                    return Ok(Vec::new());
                }
                let reason = if !self.opened {
                    Some("no such account")
                } else if self.balance < order.amount {
                    Some("insufficient funds")
                } else {
                    None
                };
                Ok(vec![match reason {
                    Some(reason) => AccountEvent::Declined {
                        order: order.clone(),
                        reason: reason.to_string(),
                    },
                    None => AccountEvent::Charged {
                        order: order.clone(),
                    },
                }])
            }
            AccountCommand::Refund(order) => {
                let id = &order.order_id;
                if self.refunded.contains(id) || self.refund_skipped.contains(id) {
                    return Ok(Vec::new());
                }
                if self.charged.contains_key(id) {
                    Ok(vec![AccountEvent::Refunded {
                        order: order.clone(),
                    }])
                } else {
                    Ok(vec![AccountEvent::RefundSkipped {
                        order: order.clone(),
                    }])
                }
            }
        }
    }
}

// ---- stock (inventory) ----

#[derive(Debug, Default)]
pub struct Stock {
    pub available: u64,
    pub reserved: BTreeMap<String, u64>,
    pub rejected: BTreeSet<String>,
    pub released: BTreeSet<String>,
    pub release_skipped: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockCommand {
    Add { sku: String, quantity: u64 },
    Reserve(OrderInfo),
    Release(OrderInfo),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StockEvent {
    Added { sku: String, quantity: u64 },
    Reserved { order: OrderInfo },
    Rejected { order: OrderInfo, reason: String },
    Released { order: OrderInfo },
    ReleaseSkipped { order: OrderInfo },
}

impl Aggregate for Stock {
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = ShopError;

    fn event_type(event: &StockEvent) -> &'static str {
        match event {
            StockEvent::Added { .. } => "stock.added",
            StockEvent::Reserved { .. } => "stock.reserved",
            StockEvent::Rejected { .. } => "stock.rejected",
            StockEvent::Released { .. } => "stock.released",
            StockEvent::ReleaseSkipped { .. } => "stock.release_skipped",
        }
    }

    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Added { quantity, .. } => self.available += quantity,
            StockEvent::Reserved { order } => {
                self.available = self.available.saturating_sub(order.quantity);
                self.reserved.insert(order.order_id.clone(), order.quantity);
            }
            StockEvent::Rejected { order, .. } => {
                self.rejected.insert(order.order_id.clone());
            }
            StockEvent::Released { order } => {
                if let Some(quantity) = self.reserved.get(&order.order_id) {
                    self.available += quantity;
                }
                self.released.insert(order.order_id.clone());
            }
            StockEvent::ReleaseSkipped { order } => {
                self.release_skipped.insert(order.order_id.clone());
            }
        }
    }

    fn handle(&self, command: &StockCommand) -> Result<Vec<StockEvent>, ShopError> {
        match command {
            StockCommand::Add { sku, quantity } => {
                if *quantity == 0 {
                    return Err(ShopError::InvalidAmount(
                        "stock to add must be positive".into(),
                    ));
                }
                Ok(vec![StockEvent::Added {
                    sku: sku.clone(),
                    quantity: *quantity,
                }])
            }
            StockCommand::Reserve(order) => {
                let id = &order.order_id;
                if self.reserved.contains_key(id)
                    || self.rejected.contains(id)
                    || self.release_skipped.contains(id)
                {
                    return Ok(Vec::new());
                }
                if self.available < order.quantity {
                    return Ok(vec![StockEvent::Rejected {
                        order: order.clone(),
                        reason: "out of stock".to_string(),
                    }]);
                }
                Ok(vec![StockEvent::Reserved {
                    order: order.clone(),
                }])
            }
            StockCommand::Release(order) => {
                let id = &order.order_id;
                if self.released.contains(id) || self.release_skipped.contains(id) {
                    return Ok(Vec::new());
                }
                if self.reserved.contains_key(id) {
                    Ok(vec![StockEvent::Released {
                        order: order.clone(),
                    }])
                } else {
                    Ok(vec![StockEvent::ReleaseSkipped {
                        order: order.clone(),
                    }])
                }
            }
        }
    }
}

// ---- shipment ----

#[derive(Debug, Default)]
pub struct Shipment {
    pub decided: bool,
    pub shipped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentCommand {
    Ship(OrderInfo),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ShipmentEvent {
    Created { order: OrderInfo },
    Failed { order: OrderInfo, reason: String },
}

impl Aggregate for Shipment {
    type Command = ShipmentCommand;
    type Event = ShipmentEvent;
    type Error = ShopError;

    fn event_type(event: &ShipmentEvent) -> &'static str {
        match event {
            ShipmentEvent::Created { .. } => "shipment.created",
            ShipmentEvent::Failed { .. } => "shipment.failed",
        }
    }

    fn apply(&mut self, event: &ShipmentEvent) {
        self.decided = true;
        self.shipped = matches!(event, ShipmentEvent::Created { .. });
    }

    fn handle(&self, command: &ShipmentCommand) -> Result<Vec<ShipmentEvent>, ShopError> {
        let ShipmentCommand::Ship(order) = command;
        if self.decided {
            return Ok(Vec::new());
        }
        if order.address == UNDELIVERABLE_ADDRESS {
            return Ok(vec![ShipmentEvent::Failed {
                order: order.clone(),
                reason: "address not deliverable".to_string(),
            }]);
        }
        Ok(vec![ShipmentEvent::Created {
            order: order.clone(),
        }])
    }
}
