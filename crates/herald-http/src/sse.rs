//! `GET /v1/topics/{topic}/sse`: a topic (one partition or all) as Server-Sent Events.
//!
//! One reader task per partition feeds a bounded channel, so a slow client slows its
//! readers down instead of making the server buffer without bound.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use herald_broker::{Broker, SeekPosition};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::params::{opt_u32, seek, QueryMap};
use crate::AppState;

/// Events buffered per SSE connection before readers wait for the client.
const SSE_BUFFER_EVENTS: usize = 256;
const SSE_FETCH_EVENTS: usize = 256;
const SSE_WAIT: Duration = Duration::from_secs(10);

pub async fn stream(
    State(state): State<AppState>,
    Path(topic_name): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let topic = state.broker.topic(&topic_name)?;
    let partitions: Vec<u32> = match opt_u32(&query, "partition")? {
        Some(p) => {
            topic.partition(p)?;
            vec![p]
        }
        None => (0..topic.partition_count()).collect(),
    };
    let position = seek(&query, SeekPosition::Latest)?;
    let (tx, rx) = mpsc::channel(SSE_BUFFER_EVENTS);
    for partition in partitions {
        let log = topic.partition(partition)?;
        let start = Broker::resolve_position(log, position)
            .await?
            .clamp(log.start_offset(), log.next_offset());
        tokio::spawn(pump(
            state.broker.clone(),
            topic_name.clone(),
            partition,
            start,
            tx.clone(),
        ));
    }
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}

async fn pump(
    broker: Broker,
    topic: String,
    partition: u32,
    mut offset: u64,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    loop {
        if tx.is_closed() {
            return;
        }
        let result = broker
            .fetch(
                &topic,
                partition,
                SeekPosition::Offset(offset),
                SSE_FETCH_EVENTS,
                SSE_WAIT,
            )
            .await;
        let batch = match result {
            Ok(b) => b,
            Err(herald_broker::BrokerError::OffsetOutOfRange { start, .. }) if offset < start => {
                offset = start;
                continue;
            }
            Err(e) => {
                let _ = tx
                    .send(Ok(Event::default().event("error").data(e.to_string())))
                    .await;
                return;
            }
        };
        for record in batch.events {
            offset = record.offset + 1;
            let event = Event::default()
                .id(format!("{}:{}", record.partition, record.offset))
                .event("event")
                .data(record.to_json().to_string());
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    }
}
