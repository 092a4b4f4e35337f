//! LeaveGroup (key 13): members leave (one per request before v3, a batch from v3).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{Shared, NOT_COORDINATOR};

pub fn handle(shared: &Shared, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
    if !shared.coordinates(&request.group_id.0) {
        return LeaveGroupResponse::default().with_error_code(NOT_COORDINATOR);
    }
    if version < 3 {
        let codes = shared
            .coordinator
            .leave(&request.group_id.0, &[request.member_id.to_string()]);
        return LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0));
    }
    let ids: Vec<String> = request
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect();
    let codes = shared.coordinator.leave(&request.group_id.0, &ids);
    let members = request
        .members
        .into_iter()
        .zip(codes)
        .map(|(m, code)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
