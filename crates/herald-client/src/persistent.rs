//! Persistent subscriptions in the SDK (server-side checkpoint, competing consumers),
//! embedded (the in-process event store) or over HTTP (`/v1/persistent...`, see
//! `docs/http-api.md`).
//!
//! Owns: the mapping of each call to the two transports. Both give the same answers:
//! the remote side parses the JSON forms the server renders from the same types.

use std::time::Duration;

use herald_eventstore::{
    CreatePersistent, NackAction, ParkedEvent, PersistentEvent, PersistentInfo, ReceiptOutcome,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::streams::send;
use crate::{ClientError, Herald};

fn path(group: &str) -> String {
    format!("/v1/persistent/{group}")
}

fn protocol(what: &str) -> impl Fn(String) -> ClientError + '_ {
    move |e| ClientError::Protocol(format!("{what}: {e}"))
}

fn outcomes(answer: &Value) -> Result<Vec<(String, ReceiptOutcome)>, ClientError> {
    let results = answer
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| ClientError::Protocol(format!("no `results` in {answer}")))?;
    results
        .iter()
        .map(|r| {
            let receipt = r
                .get("receipt")
                .and_then(Value::as_str)
                .ok_or_else(|| ClientError::Protocol(format!("bad result {r}")))?;
            let outcome: ReceiptOutcome =
                serde_json::from_value(r.get("outcome").cloned().unwrap_or(Value::Null))
                    .map_err(|e| ClientError::Protocol(format!("bad outcome in {r}: {e}")))?;
            Ok((receipt.to_string(), outcome))
        })
        .collect()
}

fn array<'a>(answer: &'a Value, name: &str) -> Result<&'a Vec<Value>, ClientError> {
    answer
        .get(name)
        .and_then(Value::as_array)
        .ok_or_else(|| ClientError::Protocol(format!("no `{name}` array in {answer}")))
}

impl Herald {
    /// Creates a persistent subscription group on a stream, a category or `$all`.
    /// A taken name is a `409 subscription_exists` [`ClientError::Api`].
    pub async fn create_persistent(
        &self,
        request: CreatePersistent,
    ) -> Result<PersistentInfo, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.create_persistent(request).await?);
        }
        let request = self
            .remote()?
            .request(Method::POST, "/v1/persistent")
            .json(&request.to_json());
        let answer: Value = send(request, None).await?;
        PersistentInfo::from_json(&answer).map_err(protocol("subscription info"))
    }

    /// Every persistent subscription, sorted by group name.
    pub async fn list_persistent(&self) -> Result<Vec<PersistentInfo>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.list_persistent()?);
        }
        let answer: Value =
            send(self.remote()?.request(Method::GET, "/v1/persistent"), None).await?;
        array(&answer, "subscriptions")?
            .iter()
            .map(|v| PersistentInfo::from_json(v).map_err(protocol("subscription info")))
            .collect()
    }

    /// A group's settings, checkpoint and counts.
    pub async fn persistent_info(&self, group: &str) -> Result<PersistentInfo, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.persistent_info(group)?);
        }
        let answer: Value = send(self.remote()?.request(Method::GET, &path(group)), None).await?;
        PersistentInfo::from_json(&answer).map_err(protocol("subscription info"))
    }

    /// Deletes a group, its checkpoint and its parked list.
    pub async fn delete_persistent(&self, group: &str) -> Result<(), ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.delete_persistent(group).await?);
        }
        send::<Value>(self.remote()?.request(Method::DELETE, &path(group)), None)
            .await
            .map(|_| ())
    }

    /// Leases up to `max` events of `group` (each to one reader at a time) for
    /// `visibility_ms` (default: the group's), waiting up to `wait` for one.
    pub async fn read_persistent(
        &self,
        group: &str,
        max: usize,
        visibility_ms: Option<u64>,
        wait: Duration,
    ) -> Result<Vec<PersistentEvent>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store
                .read_persistent(group, max, visibility_ms, wait)
                .await?);
        }
        let mut body = json!({"max": max, "wait_ms": wait.as_millis() as u64});
        if let (Some(ms), Some(object)) = (visibility_ms, body.as_object_mut()) {
            object.insert("visibility_timeout_ms".into(), json!(ms));
        }
        let request = self
            .remote()?
            .request(Method::POST, &format!("{}/read", path(group)))
            .timeout(wait + Duration::from_secs(30))
            .json(&body);
        let answer: Value = send(request, None).await?;
        array(&answer, "events")?
            .iter()
            .map(|v| PersistentEvent::from_json(v).map_err(protocol("persistent event")))
            .collect()
    }

    /// Acknowledges leased events; returns once the acks are durable.
    pub async fn ack_persistent(
        &self,
        group: &str,
        receipts: &[String],
    ) -> Result<Vec<(String, ReceiptOutcome)>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.ack_persistent(group, receipts).await?);
        }
        let request = self
            .remote()?
            .request(Method::POST, &format!("{}/ack", path(group)))
            .json(&json!({ "receipts": receipts }));
        outcomes(&send::<Value>(request, None).await?)
    }

    /// Gives leased events back: retry (after a delay), park or skip.
    pub async fn nack_persistent(
        &self,
        group: &str,
        receipts: &[String],
        action: NackAction,
        reason: Option<&str>,
    ) -> Result<Vec<(String, ReceiptOutcome)>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store
                .nack_persistent(group, receipts, action, reason)
                .await?);
        }
        let delay_ms = match action {
            NackAction::Retry { delay_ms } => delay_ms,
            _ => 0,
        };
        let body = json!({
            "receipts": receipts,
            "action": action.as_str(),
            "delay_ms": delay_ms,
            "reason": reason,
        });
        let request = self
            .remote()?
            .request(Method::POST, &format!("{}/nack", path(group)))
            .json(&body);
        outcomes(&send::<Value>(request, None).await?)
    }

    /// Up to `max` parked events of `group` from parked index `from`.
    pub async fn list_parked(
        &self,
        group: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<ParkedEvent>, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.list_parked(group, from, max)?);
        }
        let request = self
            .remote()?
            .request(Method::GET, &format!("{}/parked", path(group)))
            .query(&[("from", from.to_string()), ("max", max.to_string())]);
        let answer: Value = send(request, None).await?;
        array(&answer, "parked")?
            .iter()
            .map(|v| ParkedEvent::from_json(v).map_err(protocol("parked event")))
            .collect()
    }

    /// Puts every parked event of `group` back into its queue; returns how many.
    pub async fn replay_parked(&self, group: &str) -> Result<u64, ClientError> {
        if let Some(store) = self.store()? {
            return Ok(store.replay_parked(group).await?);
        }
        let request = self
            .remote()?
            .request(Method::POST, &format!("{}/parked/replay", path(group)));
        let answer: Value = send(request, None).await?;
        answer
            .get("replayed")
            .and_then(Value::as_u64)
            .ok_or_else(|| ClientError::Protocol(format!("no `replayed` in {answer}")))
    }
}
