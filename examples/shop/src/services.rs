//! The four services and who reacts to what. Each service is a reactor over `$all`: it
//! maps an event to a command on its own aggregate ([`route`]) and executes it with the
//! repository (expected-version append, idempotent decisions), so a replayed event after a
//! crash changes nothing. In the choreography variant services react to each other's
//! events; in the orchestration variant they only execute the saga's commands.

use clap::ValueEnum;
use herald_client::{CloudEvent, Herald};
use herald_flow::causation::json_data;
use herald_flow::store::{ExecuteError, Repository};
use herald_flow::{FlowError, Reactor, SourcedEvent};

use crate::domain::{
    Account, AccountCommand, Order, OrderCommand, OrderInfo, Shipment, ShipmentCommand, Stock,
    StockCommand,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// Services react to each other's events; no coordinator.
    Choreography,
    /// The orchestrator saga sends commands; services only answer them.
    Orchestration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Order,
    Payment,
    Inventory,
    Shipping,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Inventory => "inventory",
            Service::Shipping => "shipping",
        }
    }
}

/// A command on one aggregate instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Order(String, OrderCommand),
    Account(String, AccountCommand),
    Stock(String, StockCommand),
    Shipment(String, ShipmentCommand),
}

pub fn order_stream(order_id: &str) -> String {
    format!("order-{order_id}")
}

pub fn account_stream(customer: &str) -> String {
    format!("account-{customer}")
}

pub fn stock_stream(sku: &str) -> String {
    format!("stock-{sku}")
}

pub fn shipment_stream(order_id: &str) -> String {
    format!("shipment-{order_id}")
}

/// The order an event or command is about (`data.order`).
pub fn order_of(event: &CloudEvent) -> Option<OrderInfo> {
    let data = json_data(event);
    serde_json::from_value(data.get("order")?.clone()).ok()
}

fn reason_of(event: &CloudEvent, fallback: &str) -> String {
    json_data(event)
        .get("reason")
        .and_then(|r| r.as_str())
        .map_or_else(|| fallback.to_string(), |r| format!("{fallback}: {r}"))
}

/// What `service` does about `event` in `variant` (`None`: not its business).
pub fn route(service: Service, variant: Variant, event: &CloudEvent) -> Option<Action> {
    let ty = event.ty.as_str();
    let order = order_of(event)?;
    let id = order.order_id.clone();
    use Service as S;
    use Variant as V;
    let action = match (variant, service, ty) {
        (V::Choreography, S::Payment, "order.placed")
        | (V::Orchestration, S::Payment, "payment.charge") => {
            Action::Account(order.customer.clone(), AccountCommand::Charge(order))
        }
        (V::Choreography, S::Payment, "stock.rejected" | "stock.released")
        | (V::Orchestration, S::Payment, "payment.refund") => {
            Action::Account(order.customer.clone(), AccountCommand::Refund(order))
        }
        (V::Choreography, S::Inventory, "payment.charged")
        | (V::Orchestration, S::Inventory, "stock.reserve") => {
            Action::Stock(order.sku.clone(), StockCommand::Reserve(order))
        }
        (V::Choreography, S::Inventory, "shipment.failed")
        | (V::Orchestration, S::Inventory, "stock.release") => {
            Action::Stock(order.sku.clone(), StockCommand::Release(order))
        }
        (V::Choreography, S::Shipping, "stock.reserved")
        | (V::Orchestration, S::Shipping, "shipment.create") => {
            Action::Shipment(id, ShipmentCommand::Ship(order))
        }
        (V::Choreography, S::Order, "shipment.created")
        | (V::Orchestration, S::Order, "order.complete") => {
            Action::Order(id, OrderCommand::Complete)
        }
        (V::Choreography, S::Order, "payment.declined") => Action::Order(
            id,
            OrderCommand::Cancel {
                reason: reason_of(event, "payment declined"),
            },
        ),
        (V::Choreography, S::Order, "payment.refunded") => Action::Order(
            id,
            OrderCommand::Cancel {
                reason: "compensated: payment refunded".to_string(),
            },
        ),
        (V::Orchestration, S::Order, "order.cancel") => Action::Order(
            id,
            OrderCommand::Cancel {
                reason: "compensated by the saga".to_string(),
            },
        ),
        _ => return None,
    };
    Some(action)
}

/// One service: routes `$all` events to its aggregates.
pub struct ServiceReactor {
    service: Service,
    variant: Variant,
    name: String,
    orders: Repository<Order>,
    accounts: Repository<Account>,
    stock: Repository<Stock>,
    shipments: Repository<Shipment>,
}

impl ServiceReactor {
    pub fn new(herald: Herald, service: Service, variant: Variant) -> Self {
        let source = format!("/shop/{}", service.name());
        Self {
            service,
            variant,
            name: format!("shop-{}", service.name()),
            orders: Repository::new(herald.clone(), source.clone()),
            accounts: Repository::new(herald.clone(), source.clone()),
            stock: Repository::new(herald.clone(), source.clone()),
            shipments: Repository::new(herald, source),
        }
    }

    /// Executes one action caused by `cause`; returns the types of the events appended.
    pub async fn execute(
        &self,
        action: &Action,
        cause: &CloudEvent,
    ) -> Result<Vec<&'static str>, FlowError> {
        use herald_flow::Aggregate;
        let result = match action {
            Action::Order(id, command) => self
                .orders
                .execute_caused_by(&order_stream(id), command, cause)
                .await
                .map(|events| events.iter().map(Order::event_type).collect()),
            Action::Account(customer, command) => self
                .accounts
                .execute_caused_by(&account_stream(customer), command, cause)
                .await
                .map(|events| events.iter().map(Account::event_type).collect()),
            Action::Stock(sku, command) => self
                .stock
                .execute_caused_by(&stock_stream(sku), command, cause)
                .await
                .map(|events| events.iter().map(Stock::event_type).collect()),
            Action::Shipment(id, command) => self
                .shipments
                .execute_caused_by(&shipment_stream(id), command, cause)
                .await
                .map(|events| events.iter().map(Shipment::event_type).collect()),
        };
        match result {
            Ok(types) => Ok(types),
            // A refused command is a business outcome, not a failure of the service.
            Err(ExecuteError::Rejected(error)) => {
                tracing::warn!(service = self.service.name(), event = %cause.id, %error, "command refused");
                Ok(Vec::new())
            }
            Err(ExecuteError::Flow(error)) => Err(error),
        }
    }
}

impl Reactor for ServiceReactor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn react(&mut self, event: &SourcedEvent) -> Result<(), FlowError> {
        let Some(action) = route(self.service, self.variant, &event.event) else {
            return Ok(());
        };
        let produced = self.execute(&action, &event.event).await?;
        tracing::debug!(service = self.service.name(), cause = %event.event.ty, ?produced, "handled");
        Ok(())
    }
}
