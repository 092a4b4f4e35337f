//! Heartbeat (key 12): keeps a member's session alive; `REBALANCE_IN_PROGRESS` asks it to
//! rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::Shared;

pub fn handle(shared: &Shared, request: HeartbeatRequest) -> HeartbeatResponse {
    let code = shared.coordinator.heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(code)
}
