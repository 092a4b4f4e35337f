//! `GET /v1/subscriptions/{name}/sse` and `GET /v1/subscriptions/{name}/ws`: the live
//! events of a `stream` subscription (after its filter), one record JSON per message
//! (the shape of `/v1/topics/{t}/sse`).
//!
//! Each connection reads from its bounded buffer in the bus; a client that falls
//! behind is disconnected (SSE: a final `event: error`; WebSocket: close code 1008) or
//! loses events, per the subscription's `slow_subscriber` policy. Nothing else buffers.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use futures::Stream;
use herald_bus::StreamReceiver;

use crate::bus::bus;
use crate::error::ApiError;
use crate::AppState;

const TOO_SLOW: &str = "disconnected: this client fell behind the subscription's buffer";

pub async fn sse(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let receiver = bus(&state)?.connect_stream(&name)?;
    let stream = futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver: StreamReceiver = receiver?;
        match receiver.events.recv().await {
            Some(payload) => Some((
                Ok(Event::default().event("event").data(payload.as_ref())),
                Some(receiver),
            )),
            None if receiver.too_slow.load(Ordering::Acquire) => {
                Some((Ok(Event::default().event("error").data(TOO_SLOW)), None))
            }
            None => None,
        }
    });
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}

pub async fn websocket(
    State(state): State<AppState>,
    Path(name): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let receiver = bus(&state)?.connect_stream(&name)?;
    Ok(upgrade.on_upgrade(move |socket| pump(socket, receiver)))
}

async fn pump(mut socket: WebSocket, mut receiver: StreamReceiver) {
    loop {
        tokio::select! {
            payload = receiver.events.recv() => match payload {
                Some(payload) => {
                    if socket.send(Message::Text(payload.as_ref().into())).await.is_err() {
                        return;
                    }
                }
                None => {
                    let frame = receiver.too_slow.load(Ordering::Acquire).then(|| CloseFrame {
                        code: 1008,
                        reason: "too slow".into(),
                    });
                    let _ = socket.send(Message::Close(frame)).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
