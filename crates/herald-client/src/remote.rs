//! The HTTP transport of the SDK (see `docs/http-api.md`).

use std::time::Duration;

use herald_broker::{
    EventRecord, FetchResult, JoinOptions, OffsetReset, PublishReceipt, ScheduledReceipt,
    SeekPosition, TopicConfig,
};
use herald_core::CloudEvent;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::{ClientError, GroupInfo, TopicInfo};

#[derive(Clone)]
pub(crate) struct Remote {
    http: reqwest::Client,
    base: String,
}

#[derive(serde::Deserialize)]
struct Receipt {
    id: String,
    partition: u32,
    offset: u64,
    #[serde(default)]
    duplicate: bool,
}

impl Remote {
    pub fn new(base_url: &str, options: &crate::ConnectOptions) -> Result<Self, ClientError> {
        let http = crate::http_client(options)?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        let body = if bytes.is_empty() {
            b"null".as_slice()
        } else {
            &bytes
        };
        serde_json::from_slice(body)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&bytes))))
    }

    pub async fn create_topic(
        &self,
        name: &str,
        config: &TopicConfig,
    ) -> Result<TopicInfo, ClientError> {
        let mut body =
            serde_json::to_value(config).map_err(|e| ClientError::Protocol(e.to_string()))?;
        body["name"] = json!(name);
        self.send(self.request(Method::POST, "/v1/topics").json(&body))
            .await
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        #[derive(serde::Deserialize)]
        struct List {
            topics: Vec<TopicInfo>,
        }
        Ok(self
            .send::<List>(self.request(Method::GET, "/v1/topics"))
            .await?
            .topics)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        self.send(self.request(Method::GET, &format!("/v1/topics/{name}")))
            .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.send::<Value>(self.request(Method::DELETE, &format!("/v1/topics/{name}")))
            .await
            .map(|_| ())
    }

    pub async fn publish(
        &self,
        topic: &str,
        events: &[CloudEvent],
    ) -> Result<Vec<PublishReceipt>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Published {
            events: Vec<Receipt>,
        }
        let body: Vec<Value> = events.iter().map(CloudEvent::to_json_value).collect();
        let request = self
            .request(Method::POST, &format!("/v1/topics/{topic}/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(&body).map_err(|e| ClientError::Protocol(e.to_string()))?);
        let published: Published = self.send(request).await?;
        Ok(published
            .events
            .into_iter()
            .map(|r| PublishReceipt {
                id: r.id,
                partition: r.partition,
                offset: r.offset,
                duplicate: r.duplicate,
            })
            .collect())
    }

    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        position: SeekPosition,
        max: usize,
        wait: Duration,
    ) -> Result<FetchResult, ClientError> {
        let mut query = vec![
            ("partition".to_string(), partition.to_string()),
            ("max".into(), max.to_string()),
            ("wait_ms".into(), wait.as_millis().to_string()),
        ];
        match position {
            SeekPosition::Offset(o) => query.push(("offset".into(), o.to_string())),
            SeekPosition::Earliest => query.push(("offset".into(), "earliest".into())),
            SeekPosition::Latest => query.push(("offset".into(), "latest".into())),
            SeekPosition::Time(ms) => query.push(("from_time".into(), format_time(ms))),
        }
        let page: Value = self
            .send(
                self.request(Method::GET, &format!("/v1/topics/{topic}/events"))
                    .query(&query),
            )
            .await?;
        Ok(FetchResult {
            events: records_from_json(&page["events"])?,
            next_offset: u64_field(&page, "next_offset")?,
            start_offset: u64_field(&page, "start_offset")?,
            end_offset: u64_field(&page, "end_offset")?,
        })
    }

    pub async fn join_group(
        &self,
        group: &str,
        options: &JoinOptions,
    ) -> Result<String, ClientError> {
        let reset = match options.auto_offset_reset {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        };
        let body = json!({"topics": options.topics, "session_timeout_ms": options.session_timeout.as_millis() as u64, "auto_offset_reset": reset});
        let joined: Value = self
            .send(
                self.request(Method::POST, &format!("/v1/groups/{group}/members"))
                    .json(&body),
            )
            .await?;
        joined["member_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol("join response without member_id".into()))
    }

    pub async fn member_fetch(
        &self,
        group: &str,
        member: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<EventRecord>, ClientError> {
        let query = [
            ("max", max.to_string()),
            ("wait_ms", wait.as_millis().to_string()),
        ];
        let page: Value = self
            .send(
                self.request(
                    Method::GET,
                    &format!("/v1/groups/{group}/members/{member}/events"),
                )
                .query(&query),
            )
            .await?;
        records_from_json(&page["events"])
    }

    pub async fn member_commit(&self, group: &str, member: &str) -> Result<(), ClientError> {
        self.send::<Value>(
            self.request(
                Method::POST,
                &format!("/v1/groups/{group}/members/{member}/commit"),
            )
            .json(&json!({})),
        )
        .await
        .map(|_| ())
    }

    pub async fn member_leave(&self, group: &str, member: &str) -> Result<(), ClientError> {
        self.send::<Value>(self.request(
            Method::DELETE,
            &format!("/v1/groups/{group}/members/{member}"),
        ))
        .await
        .map(|_| ())
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        #[derive(serde::Deserialize)]
        struct List {
            groups: Vec<GroupInfo>,
        }
        Ok(self
            .send::<List>(self.request(Method::GET, "/v1/groups"))
            .await?
            .groups)
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        self.send(self.request(Method::GET, &format!("/v1/groups/{group}")))
            .await
    }

    pub async fn publish_delayed(
        &self,
        topic: &str,
        events: &[CloudEvent],
        deliver_at_ms: i64,
    ) -> Result<Vec<ScheduledReceipt>, ClientError> {
        let body: Vec<Value> = events.iter().map(CloudEvent::to_json_value).collect();
        let request = self
            .request(Method::POST, &format!("/v1/topics/{topic}/events"))
            .query(&[("deliver_at", format_time(deliver_at_ms))])
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(&body).map_err(|e| ClientError::Protocol(e.to_string()))?);
        let published: Value = self.send(request).await?;
        let Some(items) = published["events"].as_array() else {
            return Err(ClientError::Protocol(
                "publish response without `events`".into(),
            ));
        };
        items
            .iter()
            .map(|item| {
                let id = item["id"].as_str().unwrap_or_default().to_string();
                let delivered = match (item["partition"].as_u64(), item["offset"].as_u64()) {
                    (Some(p), Some(o)) => Some(PublishReceipt {
                        id: id.clone(),
                        partition: p as u32,
                        offset: o,
                        duplicate: item["duplicate"].as_bool().unwrap_or(false),
                    }),
                    _ => None,
                };
                let at = item["scheduled_for"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map_or(deliver_at_ms, |t| t.timestamp_millis());
                Ok(ScheduledReceipt {
                    id,
                    deliver_at_ms: at,
                    delivered,
                })
            })
            .collect()
    }

    pub async fn register_schema(&self, ty: &str, schema: &Value) -> Result<u32, ClientError> {
        let reply: Value = self
            .send(
                self.request(Method::POST, &format!("/v1/schemas/{ty}"))
                    .json(schema),
            )
            .await?;
        reply["version"]
            .as_u64()
            .map(|v| v as u32)
            .ok_or_else(|| ClientError::Protocol("no version in reply".into()))
    }

    pub async fn schema(
        &self,
        ty: &str,
        version: Option<u32>,
    ) -> Result<(u32, Value), ClientError> {
        let path = match version {
            Some(v) => format!("/v1/schemas/{ty}/versions/{v}"),
            None => format!("/v1/schemas/{ty}"),
        };
        let reply: Value = self.send(self.request(Method::GET, &path)).await?;
        let version = reply["version"]
            .as_u64()
            .ok_or_else(|| ClientError::Protocol("no version in reply".into()))?;
        Ok((version as u32, reply["schema"].clone()))
    }

    pub async fn list_schemas(&self) -> Result<Vec<Value>, ClientError> {
        let reply: Value = self.send(self.request(Method::GET, "/v1/schemas")).await?;
        Ok(reply["schemas"].as_array().cloned().unwrap_or_default())
    }

    pub async fn delete_schema(&self, ty: &str) -> Result<(), ClientError> {
        self.send::<Value>(self.request(Method::DELETE, &format!("/v1/schemas/{ty}")))
            .await
            .map(|_| ())
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        self.send::<Value>(self.request(Method::DELETE, &format!("/v1/groups/{group}")))
            .await
            .map(|_| ())
    }

    pub async fn reset_group(
        &self,
        group: &str,
        topic: &str,
        to: SeekPosition,
    ) -> Result<GroupInfo, ClientError> {
        let to = match to {
            SeekPosition::Offset(o) => json!({"offset": o}),
            SeekPosition::Earliest => json!("earliest"),
            SeekPosition::Latest => json!("latest"),
            SeekPosition::Time(ms) => json!({"time": format_time(ms)}),
        };
        self.send(
            self.request(Method::POST, &format!("/v1/groups/{group}/reset"))
                .json(&json!({"topic": topic, "to": to})),
        )
        .await
    }
}

fn format_time(ms: i64) -> String {
    herald_broker::record::format_time_ms(ms)
}

pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    ClientError::Api {
        status: status.as_u16(),
        code: error
            .and_then(|e| e["code"].as_str())
            .unwrap_or("http_error")
            .to_string(),
        message: error
            .and_then(|e| e["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body))),
        field: error.and_then(|e| e["field"].as_str()).map(str::to_string),
    }
}

fn u64_field(v: &Value, name: &str) -> Result<u64, ClientError> {
    v[name]
        .as_u64()
        .ok_or_else(|| ClientError::Protocol(format!("missing `{name}`")))
}

/// Parses the HTTP record shape back into [`EventRecord`]s.
pub(crate) fn records_from_json(v: &Value) -> Result<Vec<EventRecord>, ClientError> {
    let Value::Array(items) = v else {
        return Err(ClientError::Protocol("`events` is not an array".into()));
    };
    items
        .iter()
        .map(|item| {
            let timestamp_ms = item["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
                .unwrap_or(0);
            let event = CloudEvent::from_json_value(item["event"].clone())
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            Ok(EventRecord {
                topic: item["topic"].as_str().unwrap_or_default().to_string(),
                partition: item["partition"].as_u64().unwrap_or(0) as u32,
                offset: u64_field(item, "offset")?,
                timestamp_ms,
                key: item["key"]
                    .as_str()
                    .map(|k| bytes::Bytes::copy_from_slice(k.as_bytes())),
                event,
            })
        })
        .collect()
}
