//! DeleteTopics (key 20): deletes topics by name (v6 by name too; topic ids are unknown
//! to Herald, so a request by id alone gets `UNKNOWN_TOPIC_ID`).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::ResponseError;

use super::{text, Shared};
use crate::error::kafka_code;

pub async fn handle(
    shared: &Shared,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), Default::default()))
            .collect()
    };
    let mut responses = Vec::with_capacity(names.len());
    for (name, topic_id) in names {
        let result = DeletableTopicResult::default().with_topic_id(topic_id);
        let Some(name) = name else {
            responses.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        let outcome = shared.broker.delete_topic(&name.0).await;
        let result = match outcome {
            Ok(()) => result.with_name(Some(name)),
            Err(e) => result
                .with_name(Some(name))
                .with_error_code(kafka_code(&e))
                .with_error_message(Some(text(e.to_string()))),
        };
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
