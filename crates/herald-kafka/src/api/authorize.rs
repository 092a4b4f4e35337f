//! ACL enforcement for Kafka requests when the listener has a user store.
//!
//! Owns [`handle_authorized`]: it splits each request into the parts the session's
//! principal may touch and the parts it may not, lets the ordinary handler serve the
//! first, and answers the second with Kafka's authorization errors
//! (`TOPIC_AUTHORIZATION_FAILED`, `GROUP_AUTHORIZATION_FAILED`,
//! `CLUSTER_AUTHORIZATION_FAILED`), the way Kafka's own authorizer answers per topic.
//! Invariant: a denied topic or group is never read, written, created or described;
//! listings (Metadata without topics, ListGroups) show only what the principal may see.

use herald_auth::{Operation, ResourceKind};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    FindCoordinatorResponse, HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
    OffsetCommitResponse, OffsetFetchResponse, RequestHeader, RequestKind, ResponseKind,
    SyncGroupResponse,
};
use kafka_protocol::ResponseError;

use super::{handle, topic_name, Session, Shared};

const TOPIC_DENIED: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP_DENIED: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER_DENIED: i16 = ResponseError::ClusterAuthorizationFailed.code();
/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;

/// The principal's rights, or everything when auth is off.
struct Rights<'a> {
    shared: &'a Shared,
    session: &'a Session,
}

impl Rights<'_> {
    fn allows(&self, kind: ResourceKind, name: &str, operation: Operation) -> bool {
        match (&self.shared.options.auth, &self.session.principal) {
            (None, _) => true,
            (Some(store), Some(principal)) => store.allows(principal, kind, name, operation),
            (Some(_), None) => false,
        }
    }

    fn sees(&self, kind: ResourceKind, name: &str) -> bool {
        match (&self.shared.options.auth, &self.session.principal) {
            (None, _) => true,
            (Some(store), Some(principal)) => store.allows_any(principal, kind, name),
            (Some(_), None) => false,
        }
    }

    fn topic(&self, name: &str, operation: Operation) -> bool {
        self.allows(ResourceKind::Topic, name, operation)
    }

    /// Producing to a topic that does not exist yet also creates it.
    fn produce(&self, name: &str) -> bool {
        self.topic(name, Operation::Produce)
            && (self.shared.broker.topic(name).is_ok() || self.topic(name, Operation::Create))
    }

    fn group(&self, name: &str) -> bool {
        self.allows(ResourceKind::Group, name, Operation::Consume)
    }
}

/// [`handle`] with ACLs applied. Callers use it only when auth is on.
pub async fn handle_authorized(
    shared: &Shared,
    session: &Session,
    header: &RequestHeader,
    request: RequestKind,
) -> Option<ResponseKind> {
    let rights = Rights { shared, session };
    let version = header.request_api_version;
    match request {
        RequestKind::Produce(mut r) => {
            let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topic_data)
                .into_iter()
                .partition(|t| rights.produce(&t.name.0));
            r.topic_data = allowed;
            let response = handle(shared, session, header, RequestKind::Produce(r)).await;
            let Some(ResponseKind::Produce(mut response)) = response else {
                return response;
            };
            for topic in denied {
                let partitions = topic
                    .partition_data
                    .iter()
                    .map(|p| {
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(TOPIC_DENIED)
                            .with_base_offset(-1)
                    })
                    .collect();
                response.responses.push(
                    TopicProduceResponse::default()
                        .with_name(topic.name)
                        .with_partition_responses(partitions),
                );
            }
            Some(ResponseKind::Produce(response))
        }
        RequestKind::Fetch(mut r) => {
            let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| rights.topic(&t.topic.0, Operation::Consume));
            r.topics = allowed;
            let response = handle(shared, session, header, RequestKind::Fetch(r)).await;
            let Some(ResponseKind::Fetch(mut response)) = response else {
                return response;
            };
            for topic in denied {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_error_code(TOPIC_DENIED)
                            .with_high_watermark(-1)
                    })
                    .collect();
                response.responses.push(
                    FetchableTopicResponse::default()
                        .with_topic(topic.topic)
                        .with_partitions(partitions),
                );
            }
            Some(ResponseKind::Fetch(response))
        }
        RequestKind::ListOffsets(mut r) => {
            let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| rights.topic(&t.name.0, Operation::Consume));
            r.topics = allowed;
            let response = handle(shared, session, header, RequestKind::ListOffsets(r)).await;
            let Some(ResponseKind::ListOffsets(mut response)) = response else {
                return response;
            };
            for topic in denied {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(TOPIC_DENIED)
                            .with_offset(-1)
                            .with_timestamp(-1)
                    })
                    .collect();
                response.topics.push(
                    ListOffsetsTopicResponse::default()
                        .with_name(topic.name)
                        .with_partitions(partitions),
                );
            }
            Some(ResponseKind::ListOffsets(response))
        }
        RequestKind::Metadata(mut r) => {
            let mut extra = Vec::new();
            let mut all_denied = false;
            // Metadata v0 with no topics means "all topics", like a null list later on.
            let asks_all = r
                .topics
                .as_ref()
                .is_none_or(|t| version == 0 && t.is_empty());
            if !asks_all {
                let topics = r.topics.take().unwrap_or_default();
                let requested = topics.len();
                let mut allowed = Vec::new();
                for topic in topics {
                    let Some(name) = topic.name.as_ref().map(|n| n.0.to_string()) else {
                        continue;
                    };
                    if !rights.sees(ResourceKind::Topic, &name) {
                        extra.push(error_topic(&name, TOPIC_DENIED));
                    } else if shared.broker.topic(&name).is_err()
                        && !rights.topic(&name, Operation::Create)
                    {
                        // May see it but not create it: it stays unknown.
                        extra.push(error_topic(
                            &name,
                            ResponseError::UnknownTopicOrPartition.code(),
                        ));
                    } else {
                        allowed.push(topic);
                    }
                }
                all_denied = requested > 0 && allowed.is_empty();
                r.topics = Some(allowed);
            }
            let response = handle(shared, session, header, RequestKind::Metadata(r)).await;
            let Some(ResponseKind::Metadata(mut response)) = response else {
                return response;
            };
            if all_denied {
                response.topics.clear();
            }
            response.topics.retain(|t| {
                t.name
                    .as_ref()
                    .is_some_and(|n| rights.sees(ResourceKind::Topic, &n.0))
            });
            response.topics.extend(extra);
            Some(ResponseKind::Metadata(response))
        }
        RequestKind::CreateTopics(mut r) => {
            let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| rights.topic(&t.name.0, Operation::Create));
            r.topics = allowed;
            let response = handle(shared, session, header, RequestKind::CreateTopics(r)).await;
            let Some(ResponseKind::CreateTopics(mut response)) = response else {
                return response;
            };
            for topic in denied {
                response.topics.push(
                    CreatableTopicResult::default()
                        .with_name(topic.name)
                        .with_error_code(TOPIC_DENIED)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
            }
            Some(ResponseKind::CreateTopics(response))
        }
        RequestKind::DeleteTopics(mut r) => {
            let mut denied = Vec::new();
            r.topic_names.retain(|n| {
                let ok = rights.topic(&n.0, Operation::Delete);
                if !ok {
                    denied.push(n.clone());
                }
                ok
            });
            r.topics.retain(|t| {
                let ok = t
                    .name
                    .as_ref()
                    .is_some_and(|n| rights.topic(&n.0, Operation::Delete));
                if !ok {
                    denied.extend(t.name.clone());
                }
                ok
            });
            let response = handle(shared, session, header, RequestKind::DeleteTopics(r)).await;
            let Some(ResponseKind::DeleteTopics(mut response)) = response else {
                return response;
            };
            for name in denied {
                response.responses.push(
                    DeletableTopicResult::default()
                        .with_name(Some(name))
                        .with_error_code(TOPIC_DENIED),
                );
            }
            Some(ResponseKind::DeleteTopics(response))
        }
        RequestKind::DescribeConfigs(mut r) => {
            let mut denied = Vec::new();
            r.resources.retain(|res| {
                let ok = if res.resource_type == RESOURCE_TOPIC {
                    rights.sees(ResourceKind::Topic, &res.resource_name)
                } else {
                    rights.allows(
                        ResourceKind::Cluster,
                        herald_auth::acl::CLUSTER_RESOURCE,
                        Operation::Admin,
                    )
                };
                if !ok {
                    denied.push((res.resource_type, res.resource_name.clone()));
                }
                ok
            });
            let response = handle(shared, session, header, RequestKind::DescribeConfigs(r)).await;
            let Some(ResponseKind::DescribeConfigs(mut response)) = response else {
                return response;
            };
            for (kind, name) in denied {
                let code = if kind == RESOURCE_TOPIC {
                    TOPIC_DENIED
                } else {
                    CLUSTER_DENIED
                };
                response.results.push(
                    DescribeConfigsResult::default()
                        .with_error_code(code)
                        .with_resource_type(kind)
                        .with_resource_name(name),
                );
            }
            Some(ResponseKind::DescribeConfigs(response))
        }
        RequestKind::FindCoordinator(mut r) => {
            // key_type 0 = group; transactions are refused by InitProducerId anyway.
            if version < 4 {
                if r.key_type == 0 && !rights.sees(ResourceKind::Group, &r.key) {
                    return Some(ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default()
                            .with_error_code(GROUP_DENIED)
                            .with_node_id(kafka_protocol::messages::BrokerId(-1))
                            .with_port(-1),
                    ));
                }
                return handle(shared, session, header, RequestKind::FindCoordinator(r)).await;
            }
            let mut denied = Vec::new();
            if r.key_type == 0 {
                r.coordinator_keys.retain(|k| {
                    let ok = rights.sees(ResourceKind::Group, k);
                    if !ok {
                        denied.push(k.clone());
                    }
                    ok
                });
            }
            let response = handle(shared, session, header, RequestKind::FindCoordinator(r)).await;
            let Some(ResponseKind::FindCoordinator(mut response)) = response else {
                return response;
            };
            for key in denied {
                response.coordinators.push(
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(kafka_protocol::messages::BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(GROUP_DENIED),
                );
            }
            Some(ResponseKind::FindCoordinator(response))
        }
        RequestKind::JoinGroup(r) if !rights.group(&r.group_id.0) => Some(ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(GROUP_DENIED)
                .with_generation_id(-1),
        )),
        RequestKind::SyncGroup(r) if !rights.group(&r.group_id.0) => Some(ResponseKind::SyncGroup(
            SyncGroupResponse::default().with_error_code(GROUP_DENIED),
        )),
        RequestKind::Heartbeat(r) if !rights.group(&r.group_id.0) => Some(ResponseKind::Heartbeat(
            HeartbeatResponse::default().with_error_code(GROUP_DENIED),
        )),
        RequestKind::LeaveGroup(r) if !rights.group(&r.group_id.0) => Some(
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(GROUP_DENIED)),
        ),
        RequestKind::OffsetCommit(mut r) => {
            let group_ok = rights.group(&r.group_id.0);
            let mut denied = Vec::new();
            r.topics.retain(|t| {
                let ok = group_ok && rights.topic(&t.name.0, Operation::Consume);
                if !ok {
                    denied.push(t.clone());
                }
                ok
            });
            let response = if r.topics.is_empty() {
                Some(ResponseKind::OffsetCommit(OffsetCommitResponse::default()))
            } else {
                handle(shared, session, header, RequestKind::OffsetCommit(r)).await
            };
            let Some(ResponseKind::OffsetCommit(mut response)) = response else {
                return response;
            };
            let code = if group_ok { TOPIC_DENIED } else { GROUP_DENIED };
            for topic in denied {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect();
                response.topics.push(
                    OffsetCommitResponseTopic::default()
                        .with_name(topic.name)
                        .with_partitions(partitions),
                );
            }
            Some(ResponseKind::OffsetCommit(response))
        }
        RequestKind::OffsetFetch(mut r) => {
            if version < 8 {
                if !rights.group(&r.group_id.0) {
                    return Some(ResponseKind::OffsetFetch(
                        OffsetFetchResponse::default().with_error_code(GROUP_DENIED),
                    ));
                }
                return handle(shared, session, header, RequestKind::OffsetFetch(r)).await;
            }
            let mut denied = Vec::new();
            r.groups.retain(|g| {
                let ok = rights.group(&g.group_id.0);
                if !ok {
                    denied.push(g.group_id.clone());
                }
                ok
            });
            let response = handle(shared, session, header, RequestKind::OffsetFetch(r)).await;
            let Some(ResponseKind::OffsetFetch(mut response)) = response else {
                return response;
            };
            for group in denied {
                response.groups.push(
                    OffsetFetchResponseGroup::default()
                        .with_group_id(group)
                        .with_error_code(GROUP_DENIED),
                );
            }
            Some(ResponseKind::OffsetFetch(response))
        }
        RequestKind::DescribeGroups(mut r) => {
            let mut denied = Vec::new();
            r.groups.retain(|g| {
                let ok = rights.sees(ResourceKind::Group, &g.0);
                if !ok {
                    denied.push(g.clone());
                }
                ok
            });
            let response = handle(shared, session, header, RequestKind::DescribeGroups(r)).await;
            let Some(ResponseKind::DescribeGroups(mut response)) = response else {
                return response;
            };
            for group in denied {
                response.groups.push(
                    DescribedGroup::default()
                        .with_group_id(group)
                        .with_error_code(GROUP_DENIED),
                );
            }
            Some(ResponseKind::DescribeGroups(response))
        }
        RequestKind::ListGroups(r) => {
            let response = handle(shared, session, header, RequestKind::ListGroups(r)).await;
            let Some(ResponseKind::ListGroups(mut response)) = response else {
                return response;
            };
            response
                .groups
                .retain(|g| rights.sees(ResourceKind::Group, &g.group_id.0));
            Some(ResponseKind::ListGroups(response))
        }
        other => handle(shared, session, header, other).await,
    }
}

fn error_topic(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(code)
        .with_partitions(Vec::new())
}
