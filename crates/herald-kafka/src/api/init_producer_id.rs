//! InitProducerId (key 22): producer ids for idempotent producers (see `producer`).
//!
//! A transactional id is refused with `UNSUPPORTED_VERSION`: Herald does not support
//! transactions.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Shared;

pub async fn handle(shared: &Shared, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let current =
        (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    let (id, epoch) = shared.producers.init(current).await;
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}
