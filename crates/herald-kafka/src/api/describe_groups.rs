//! DescribeGroups (key 15): state, protocol and members of Kafka groups. A group known
//! only by its committed offsets is `Empty`; an unknown group is `Dead`.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{text, Shared, NOT_COORDINATOR};

pub fn handle(shared: &Shared, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            if !shared.coordinates(&group_id.0) {
                return described.with_error_code(NOT_COORDINATOR);
            }
            match shared.coordinator.describe(&group_id.0) {
                Some(summary) => described
                    .with_group_state(text(summary.state.name()))
                    .with_protocol_type(text(summary.protocol_type))
                    .with_protocol_data(text(summary.protocol_name))
                    .with_members(
                        summary
                            .members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(text(m.member_id))
                                    .with_group_instance_id(m.group_instance_id.map(text))
                                    .with_client_id(text(m.client_id))
                                    .with_client_host(text(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                None if shared.broker.describe_group(&group_id.0).is_ok() => {
                    described.with_group_state(text("Empty"))
                }
                None => described.with_group_state(text("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
