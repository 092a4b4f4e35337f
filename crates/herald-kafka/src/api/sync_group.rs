//! SyncGroup (key 14): the leader hands in the assignment, every member gets its part.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{text, Shared, NOT_COORDINATOR};

pub async fn handle(shared: &Shared, version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
    if !shared.coordinates(&request.group_id.0) {
        return SyncGroupResponse::default().with_error_code(NOT_COORDINATOR);
    }
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let outcome = shared
        .coordinator
        .sync(
            &request.group_id.0,
            &request.member_id,
            request.generation_id,
            assignments,
        )
        .await;
    let response = SyncGroupResponse::default()
        .with_error_code(outcome.error_code)
        .with_assignment(outcome.assignment);
    if version < 5 {
        return response;
    }
    response
        .with_protocol_type(outcome.protocol_type.map(text))
        .with_protocol_name(outcome.protocol_name.map(text))
}
