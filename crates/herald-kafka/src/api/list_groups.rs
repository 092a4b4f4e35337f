//! ListGroups (key 16): groups with Kafka members, plus every group the broker knows
//! (HTTP groups and groups that only have committed offsets, reported as `Empty`).

use std::collections::BTreeMap;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{text, Shared};

pub fn handle(shared: &Shared, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut groups: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
    for name in shared.broker.list_groups() {
        groups.insert(name, (String::new(), "Empty"));
    }
    for summary in shared.coordinator.list() {
        groups.insert(summary.name, (summary.protocol_type, summary.state.name()));
    }
    let filter: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let listed = groups
        .into_iter()
        .filter(|(_, (_, state))| filter.is_empty() || filter.contains(&state.to_ascii_lowercase()))
        .map(|(name, (protocol_type, state))| {
            ListedGroup::default()
                .with_group_id(GroupId(text(name)))
                .with_protocol_type(text(protocol_type))
                .with_group_state(text(state))
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
