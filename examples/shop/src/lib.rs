//! The Herald example shop: Order -> Payment -> Inventory -> Shipping.
//!
//! - [`domain`]: the event-sourced aggregates (order, account, stock, shipment).
//! - [`services`]: which service reacts to which event or command, per variant.
//! - [`saga`]: the orchestration variant's checkout saga.
//! - [`projection`]: the order-summary read model.
//! - [`setup`]: accounts, stock and seeded orders with injected failures.
//! - [`check`]: the end-of-run consistency check.
//!
//! The binary (`shop`) runs each service as its own process against `herald serve`.

pub mod check;
pub mod domain;
pub mod projection;
pub mod saga;
pub mod services;
pub mod setup;
