//! Heartbeat (key 12): keeps a member's session alive; `REBALANCE_IN_PROGRESS` asks it to
//! rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{Shared, NOT_COORDINATOR};

pub fn handle(shared: &Shared, request: HeartbeatRequest) -> HeartbeatResponse {
    if !shared.coordinates(&request.group_id.0) {
        return HeartbeatResponse::default().with_error_code(NOT_COORDINATOR);
    }
    let code = shared.coordinator.heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(code)
}
