//! JoinGroup (key 11): enter a group and wait for the join phase to end (see
//! `groups::coordinator`). Group ids must be valid Herald names (`[A-Za-z0-9._-]`), since
//! their committed offsets are stored under that name; others get `INVALID_GROUP_ID`.

use std::time::Duration;

use herald_core::name::validate_name;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::ResponseError;

use super::{text, Session, Shared, NOT_COORDINATOR};
use crate::groups::coordinator::JoinRequest;

fn duration_ms(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub async fn handle(
    shared: &Shared,
    session: &Session,
    version: i16,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    if validate_name("group", &group).is_err() {
        return JoinGroupResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id);
    }
    if !shared.coordinates(&group) {
        return JoinGroupResponse::default()
            .with_error_code(NOT_COORDINATOR)
            .with_generation_id(-1)
            .with_member_id(request.member_id);
    }
    let session_timeout = duration_ms(request.session_timeout_ms);
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance_timeout = if version >= 1 {
        duration_ms(request.rebalance_timeout_ms)
    } else {
        session_timeout
    };
    let outcome = shared
        .coordinator
        .join(JoinRequest {
            group,
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.map(|s| s.to_string()),
            client_id: session.client_id.clone(),
            client_host: session.client_host.clone(),
            session_timeout,
            rebalance_timeout,
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: version >= 4,
        })
        .await;
    let members = outcome
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(text(id))
                .with_group_instance_id(if version >= 5 {
                    instance.map(text)
                } else {
                    None
                })
                .with_metadata(metadata)
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(outcome.error_code)
        .with_generation_id(outcome.generation)
        .with_protocol_name(outcome.protocol_name.map(text))
        .with_leader(text(outcome.leader))
        .with_member_id(text(outcome.member_id))
        .with_members(members);
    if version >= 7 {
        response = response.with_protocol_type(outcome.protocol_type.map(text));
    }
    if version < 7 && response.protocol_name.is_none() {
        // Not nullable before v7.
        response = response.with_protocol_name(Some(text("")));
    }
    response
}
