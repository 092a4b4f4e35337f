//! FindCoordinator (key 10): Herald coordinates every consumer group itself.
//!
//! Transaction coordinators (`key_type` 1) are refused with `UNSUPPORTED_VERSION`:
//! Herald does not support transactions.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{text, Shared, NODE_ID};

/// `key_type` of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(
    shared: &Shared,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let (host, port) = shared.advertised();
    let error_code = if request.key_type == KEY_TYPE_GROUP {
        0
    } else {
        ResponseError::UnsupportedVersion.code()
    };
    let message = (error_code != 0).then(|| text("Herald does not support transactions"));
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key: StrBytes| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(if error_code == 0 { NODE_ID } else { -1 }))
                    .with_host(if error_code == 0 {
                        host.clone()
                    } else {
                        text("")
                    })
                    .with_port(if error_code == 0 { port } else { -1 })
                    .with_error_code(error_code)
                    .with_error_message(message.clone())
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    if error_code != 0 {
        return FindCoordinatorResponse::default()
            .with_error_code(error_code)
            .with_error_message(message)
            .with_node_id(BrokerId(-1))
            .with_host(text(""))
            .with_port(-1);
    }
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(host)
        .with_port(port)
}
