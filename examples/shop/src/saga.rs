//! The orchestration variant's saga: charge payment, reserve stock, create the shipment;
//! on a failure, release stock and refund payment (reverse order), then cancel the order.

use std::time::Duration;

use herald_flow::{CompensationDefinition, SagaDefinition, StepDefinition};

/// The checkout saga; `timeout` and `attempts` apply to every step and compensation.
pub fn checkout(timeout: Duration, attempts: u32) -> SagaDefinition {
    SagaDefinition::new("checkout", "order.placed")
        .step(
            StepDefinition::new("payment", "payment.charge")
                .succeeds_on("payment.charged")
                .fails_on("payment.declined")
                .timeout(timeout)
                .attempts(attempts)
                .compensate_with(
                    CompensationDefinition::new("payment.refund", "payment.refunded")
                        .done_on("payment.refund_skipped")
                        .timeout(timeout)
                        .attempts(attempts),
                ),
        )
        .step(
            StepDefinition::new("stock", "stock.reserve")
                .succeeds_on("stock.reserved")
                .fails_on("stock.rejected")
                .timeout(timeout)
                .attempts(attempts)
                .compensate_with(
                    CompensationDefinition::new("stock.release", "stock.released")
                        .done_on("stock.release_skipped")
                        .timeout(timeout)
                        .attempts(attempts),
                ),
        )
        .step(
            StepDefinition::new("shipping", "shipment.create")
                .succeeds_on("shipment.created")
                .fails_on("shipment.failed")
                .timeout(timeout)
                .attempts(attempts),
        )
        .on_completed("order.complete")
        .on_compensated("order.cancel")
}
