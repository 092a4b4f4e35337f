//! Every handler at every advertised version: the response must encode (fields set only
//! where the version has them) and carry no unexpected error.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use herald_broker::{Broker, BrokerConfig, TopicConfig};
use herald_core::CloudEvent;
use indexmap::IndexMap;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::watch;

use super::{handle, Session, Shared};
use crate::api::api_versions::supported_range;
use crate::codec::encode_response;
use crate::KafkaOptions;

struct Fixture {
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
    shared: Shared,
    session: Session,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::open(BrokerConfig::new(dir.path()))
        .await
        .expect("broker");
    broker
        .create_topic("t", TopicConfig::with_partitions(2))
        .await
        .expect("topic");
    broker
        .publish("t", vec![CloudEvent::new("e1", "/s", "x")], Some(0))
        .await
        .expect("publish");
    let mut options = KafkaOptions::new("127.0.0.1:9092".parse().expect("addr"));
    options.groups.initial_rebalance_delay = Duration::ZERO;
    let (stop, stop_rx) = watch::channel(false);
    Fixture {
        _dir: dir,
        _stop: stop,
        shared: Shared::new(broker, options, stop_rx),
        session: Session {
            client_id: "tester".into(),
            ..Session::new("/127.0.0.1".into())
        },
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (min, max) = supported_range(key).expect("supported");
    min..=max
}

/// Runs a request through the dispatcher and encodes the answer at its version.
async fn call(f: &Fixture, key: ApiKey, version: i16, request: RequestKind) -> ResponseKind {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(s("tester")));
    let response = handle(&f.shared, &f.session, &header, request)
        .await
        .expect("a response");
    encode_response(key, version, 1, &response)
        .unwrap_or_else(|e| panic!("{key:?} v{version} does not encode: {e}"));
    response
}

pub(crate) fn batch(producer_id: i64, base_sequence: i32, count: i32) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut headers = IndexMap::new();
            headers.insert(s("trace"), Some(Bytes::from_static(b"abc")));
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                sequence: base_sequence + i,
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers,
            }
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        },
    )
    .expect("encode batch");
    out.freeze()
}

fn produce_request(producer_id: i64, base_sequence: i32) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s("t")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(1)
                .with_records(Some(batch(producer_id, base_sequence, 3)))])])
}

fn produce_result(response: &ResponseKind) -> (i16, i64) {
    let ResponseKind::Produce(r) = response else {
        panic!("not a produce response")
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test]
async fn data_apis_at_every_version() {
    let f = fixture().await;
    for v in versions(ApiKey::ApiVersions) {
        call(
            &f,
            ApiKey::ApiVersions,
            v,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        )
        .await;
    }
    for v in versions(ApiKey::Metadata) {
        let topics = vec![MetadataRequestTopic::default().with_name(Some(TopicName(s("t"))))];
        let r = call(
            &f,
            ApiKey::Metadata,
            v,
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(topics))),
        )
        .await;
        let ResponseKind::Metadata(m) = r else {
            panic!()
        };
        assert_eq!(m.topics[0].partitions.len(), 2, "v{v}");
        call(
            &f,
            ApiKey::Metadata,
            v,
            RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
        )
        .await;
    }
    for v in versions(ApiKey::Produce) {
        let r = call(
            &f,
            ApiKey::Produce,
            v,
            RequestKind::Produce(produce_request(-1, -1)),
        )
        .await;
        assert_eq!(produce_result(&r).0, 0, "produce v{v}");
    }
    for v in versions(ApiKey::Fetch) {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(1)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let r = call(&f, ApiKey::Fetch, v, RequestKind::Fetch(request)).await;
        let ResponseKind::Fetch(fr) = r else { panic!() };
        let p = &fr.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut records = p.records.clone().expect("records");
        let sets = RecordBatchDecoder::decode_all(&mut records).expect("valid batches");
        let first = &sets[0].records[0];
        assert_eq!(first.key.as_deref(), Some(&b"key-0"[..]));
        assert_eq!(first.value.as_deref(), Some(&b"value-0"[..]));
        assert_eq!(
            first.headers.get(&s("trace")),
            Some(&Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(first.timestamp_type, TimestampType::LogAppend);
    }
    for v in versions(ApiKey::ListOffsets) {
        let partitions = [-1i64, -2, 0]
            .iter()
            .map(|t| {
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(*t)
            })
            .collect();
        let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(partitions)]);
        let r = call(
            &f,
            ApiKey::ListOffsets,
            v,
            RequestKind::ListOffsets(request),
        )
        .await;
        let ResponseKind::ListOffsets(lo) = r else {
            panic!()
        };
        let offsets: Vec<i64> = lo.topics[0].partitions.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![1, 0, 0], "v{v}");
    }
    for v in versions(ApiKey::CreateTopics) {
        let name = format!("created-{v}");
        let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(&name)))
            .with_num_partitions(3)
            .with_replication_factor(1)]);
        let r = call(
            &f,
            ApiKey::CreateTopics,
            v,
            RequestKind::CreateTopics(request),
        )
        .await;
        let ResponseKind::CreateTopics(c) = r else {
            panic!()
        };
        assert_eq!(c.topics[0].error_code, 0, "v{v}");
        assert_eq!(
            f.shared
                .broker
                .topic(&name)
                .expect("created")
                .partition_count(),
            3
        );
    }
    for v in versions(ApiKey::DeleteTopics) {
        let name = TopicName(s(&format!("created-{}", v.clamp(2, 7))));
        let request = if v >= 6 {
            DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_name(Some(name))])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name])
        };
        call(
            &f,
            ApiKey::DeleteTopics,
            v,
            RequestKind::DeleteTopics(request),
        )
        .await;
    }
    for v in versions(ApiKey::DescribeConfigs) {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t")),
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("0")),
        ]);
        let r = call(
            &f,
            ApiKey::DescribeConfigs,
            v,
            RequestKind::DescribeConfigs(request),
        )
        .await;
        let ResponseKind::DescribeConfigs(d) = r else {
            panic!()
        };
        assert!(d
            .results
            .iter()
            .all(|r| r.error_code == 0 && !r.configs.is_empty()));
    }
    for v in versions(ApiKey::InitProducerId) {
        let r = call(
            &f,
            ApiKey::InitProducerId,
            v,
            RequestKind::InitProducerId(
                InitProducerIdRequest::default().with_producer_id(ProducerId(-1)),
            ),
        )
        .await;
        let ResponseKind::InitProducerId(i) = r else {
            panic!()
        };
        assert_eq!(i.error_code, 0);
        assert!(i.producer_id.0 > 0);
    }
}

#[tokio::test]
async fn idempotent_produce_deduplicates_and_refuses_gaps() {
    let f = fixture().await;
    let ResponseKind::InitProducerId(init) = call(
        &f,
        ApiKey::InitProducerId,
        4,
        RequestKind::InitProducerId(
            InitProducerIdRequest::default().with_producer_id(ProducerId(-1)),
        ),
    )
    .await
    else {
        panic!()
    };
    let pid = init.producer_id.0;
    let first = call(
        &f,
        ApiKey::Produce,
        9,
        RequestKind::Produce(produce_request(pid, 0)),
    )
    .await;
    let retry = call(
        &f,
        ApiKey::Produce,
        9,
        RequestKind::Produce(produce_request(pid, 0)),
    )
    .await;
    assert_eq!(produce_result(&first), (0, 0));
    assert_eq!(
        produce_result(&retry),
        (0, 0),
        "a retry gets the original offset"
    );
    let next = call(
        &f,
        ApiKey::Produce,
        9,
        RequestKind::Produce(produce_request(pid, 3)),
    )
    .await;
    assert_eq!(produce_result(&next), (0, 3));
    let gap = call(
        &f,
        ApiKey::Produce,
        9,
        RequestKind::Produce(produce_request(pid, 10)),
    )
    .await;
    assert_eq!(
        produce_result(&gap).0,
        kafka_protocol::ResponseError::OutOfOrderSequenceNumber.code()
    );
    let log = f.shared.broker.topic("t").expect("t");
    assert_eq!(
        log.partition(1).expect("p1").next_offset(),
        6,
        "no duplicate appends"
    );
}

#[tokio::test]
async fn group_apis_at_every_version() {
    let f = fixture().await;
    for v in versions(ApiKey::FindCoordinator) {
        let request = FindCoordinatorRequest::default()
            .with_key(s("g"))
            .with_coordinator_keys(vec![s("g")]);
        call(
            &f,
            ApiKey::FindCoordinator,
            v,
            RequestKind::FindCoordinator(request),
        )
        .await;
    }
    for v in versions(ApiKey::JoinGroup) {
        let group = format!("g{v}");
        let join = |member: &str| {
            RequestKind::JoinGroup(
                JoinGroupRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(5_000)
                    .with_member_id(s(member))
                    .with_protocol_type(s("consumer"))
                    .with_protocols(vec![JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(b"md"))]),
            )
        };
        let ResponseKind::JoinGroup(mut joined) = call(&f, ApiKey::JoinGroup, v, join("")).await
        else {
            panic!()
        };
        if v >= 4 {
            assert_eq!(
                joined.error_code,
                kafka_protocol::ResponseError::MemberIdRequired.code()
            );
            let id = joined.member_id.to_string();
            let ResponseKind::JoinGroup(again) = call(&f, ApiKey::JoinGroup, v, join(&id)).await
            else {
                panic!()
            };
            joined = again;
        }
        assert_eq!(joined.error_code, 0, "join v{v}");
        assert_eq!(joined.leader, joined.member_id);
        assert_eq!(joined.members.len(), 1);
        let member = joined.member_id.clone();
        let generation = joined.generation_id;
        let sync_version = v.min(5);
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation)
            .with_member_id(member.clone())
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(member.clone())
                .with_assignment(Bytes::from_static(b"assigned"))]);
        let ResponseKind::SyncGroup(synced) = call(
            &f,
            ApiKey::SyncGroup,
            sync_version,
            RequestKind::SyncGroup(sync),
        )
        .await
        else {
            panic!()
        };
        assert_eq!(synced.error_code, 0);
        assert_eq!(&synced.assignment[..], b"assigned");
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation)
            .with_member_id(member.clone());
        let ResponseKind::Heartbeat(hb) = call(
            &f,
            ApiKey::Heartbeat,
            v.min(4),
            RequestKind::Heartbeat(heartbeat),
        )
        .await
        else {
            panic!()
        };
        assert_eq!(hb.error_code, 0);
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(member.clone())
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1)])]);
        let commit_version = v.clamp(2, 8);
        let ResponseKind::OffsetCommit(oc) = call(
            &f,
            ApiKey::OffsetCommit,
            commit_version,
            RequestKind::OffsetCommit(commit),
        )
        .await
        else {
            panic!()
        };
        assert_eq!(oc.topics[0].partitions[0].error_code, 0);
        assert_eq!(f.shared.broker.committed_offset(&group, "t", 0), Some(1));
        for fetch_version in versions(ApiKey::OffsetFetch) {
            let request = OffsetFetchRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1])]))
                .with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0, 1])]))]);
            let ResponseKind::OffsetFetch(of) = call(
                &f,
                ApiKey::OffsetFetch,
                fetch_version,
                RequestKind::OffsetFetch(request),
            )
            .await
            else {
                panic!()
            };
            let offsets: Vec<i64> = if fetch_version >= 8 {
                of.groups[0].topics[0]
                    .partitions
                    .iter()
                    .map(|p| p.committed_offset)
                    .collect()
            } else {
                of.topics[0]
                    .partitions
                    .iter()
                    .map(|p| p.committed_offset)
                    .collect()
            };
            assert_eq!(offsets, vec![1, -1], "offset fetch v{fetch_version}");
        }
        for list_version in versions(ApiKey::ListGroups) {
            call(
                &f,
                ApiKey::ListGroups,
                list_version,
                RequestKind::ListGroups(ListGroupsRequest::default()),
            )
            .await;
        }
        for describe_version in versions(ApiKey::DescribeGroups) {
            let ResponseKind::DescribeGroups(d) = call(
                &f,
                ApiKey::DescribeGroups,
                describe_version,
                RequestKind::DescribeGroups(
                    DescribeGroupsRequest::default().with_groups(vec![GroupId(s(&group))]),
                ),
            )
            .await
            else {
                panic!()
            };
            assert_eq!(d.groups[0].group_state.as_str(), "Stable");
        }
        let leave_version = v.min(5);
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_member_id(member.clone())
            .with_members(vec![
                MemberIdentity::default().with_member_id(member.clone())
            ]);
        let ResponseKind::LeaveGroup(left) = call(
            &f,
            ApiKey::LeaveGroup,
            leave_version,
            RequestKind::LeaveGroup(leave),
        )
        .await
        else {
            panic!()
        };
        assert_eq!(left.error_code, 0);
        assert!(left.members.iter().all(|m| m.error_code == 0));
    }
}

#[test]
fn not_coordinator_is_kafkas_code() {
    assert_eq!(
        super::NOT_COORDINATOR,
        kafka_protocol::ResponseError::NotCoordinator.code()
    );
}
