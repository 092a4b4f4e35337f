//! FindCoordinator (key 10): the node that coordinates a consumer group: this gateway on
//! embedded storage; on JetStream storage the live gateway chosen for the group by the
//! shared node registry (the same answer on every gateway).
//!
//! Transaction coordinators (`key_type` 1) are refused with `UNSUPPORTED_VERSION`:
//! Herald does not support transactions.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{text, Shared};

/// `key_type` of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

/// The coordinator of one key, or an error code with its message.
fn find(shared: &Shared, key_type: i8, key: &str) -> Result<(i32, StrBytes, i32), (i16, StrBytes)> {
    if key_type != KEY_TYPE_GROUP {
        return Err((
            ResponseError::UnsupportedVersion.code(),
            text("Herald does not support transactions"),
        ));
    }
    shared.coordinator_of(key).ok_or_else(|| {
        (
            ResponseError::CoordinatorNotAvailable.code(),
            text("no live Herald gateway to coordinate the group"),
        )
    })
}

pub fn handle(
    shared: &Shared,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key: StrBytes| {
                let found = find(shared, request.key_type, &key);
                let coordinator = Coordinator::default().with_key(key);
                match found {
                    Ok((id, host, port)) => coordinator
                        .with_node_id(BrokerId(id))
                        .with_host(host)
                        .with_port(port),
                    Err((code, message)) => coordinator
                        .with_node_id(BrokerId(-1))
                        .with_host(text(""))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(Some(message)),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match find(shared, request.key_type, &request.key) {
        Ok((id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(id))
            .with_host(host)
            .with_port(port),
        Err((code, message)) => FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_error_message(Some(message))
            .with_node_id(BrokerId(-1))
            .with_host(text(""))
            .with_port(-1),
    }
}
