//! The CloudEvents 1.0 envelope and its JSON forms.
//!
//! Owns: parsing (structured, batch, binary-mode headers), validation and rendering.
//! Invariants: a `CloudEvent` that left [`CloudEvent::validate`] has every required
//! attribute present and well formed; `Data::Json` always holds valid JSON text.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::ValidationError;

/// The only CloudEvents spec version Herald speaks.
pub const SPEC_VERSION: &str = "1.0";
/// Extension holding the partition key (CloudEvents "partitioning" extension).
pub const EXT_PARTITION_KEY: &str = "partitionkey";
/// Extension holding the correlation id (defaults to the event's own id).
pub const EXT_CORRELATION_ID: &str = "correlationid";
/// Extension holding the id of the event that caused this one.
pub const EXT_CAUSATION_ID: &str = "causationid";
/// Longest extension attribute name accepted.
pub const EXTENSION_NAME_LENGTH_MAX: usize = 64;

/// The payload of an event: JSON (kept as its text) or opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Valid JSON text.
    Json(String),
    Binary(Bytes),
}

/// A CloudEvents extension attribute value (the spec's String, Boolean, Integer types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionValue {
    String(String),
    Bool(bool),
    Integer(i64),
}

impl ExtensionValue {
    /// The canonical string form (used for binary-mode headers).
    pub fn to_header_string(&self) -> String {
        match self {
            ExtensionValue::String(s) => s.clone(),
            ExtensionValue::Bool(b) => b.to_string(),
            ExtensionValue::Integer(i) => i.to_string(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            ExtensionValue::String(s) => Some(s),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            ExtensionValue::String(s) => Value::String(s.clone()),
            ExtensionValue::Bool(b) => Value::Bool(*b),
            ExtensionValue::Integer(i) => Value::from(*i),
        }
    }
}

/// A CloudEvents 1.0 event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub specversion: String,
    pub ty: String,
    pub subject: Option<String>,
    /// RFC 3339 timestamp, kept as the producer wrote it.
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub data: Option<Data>,
    pub extensions: BTreeMap<String, ExtensionValue>,
}

impl CloudEvent {
    /// A new event with the required attributes; everything else empty.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            specversion: SPEC_VERSION.to_string(),
            ty: ty.into(),
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            data: None,
            extensions: BTreeMap::new(),
        }
    }

    /// Sets JSON data (and `datacontenttype` to `application/json` if unset).
    pub fn with_json_data(mut self, data: &Value) -> Self {
        self.data = Some(Data::Json(data.to_string()));
        if self.datacontenttype.is_none() {
            self.datacontenttype = Some("application/json".to_string());
        }
        self
    }

    /// Sets a string extension attribute.
    pub fn with_extension(mut self, name: &str, value: impl Into<String>) -> Self {
        self.extensions
            .insert(name.to_string(), ExtensionValue::String(value.into()));
        self
    }

    /// The partition key (`partitionkey` extension), if any.
    pub fn partition_key(&self) -> Option<String> {
        self.extensions
            .get(EXT_PARTITION_KEY)
            .map(ExtensionValue::to_header_string)
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.extensions
            .get(EXT_CORRELATION_ID)
            .and_then(|v| v.as_str())
    }

    pub fn causation_id(&self) -> Option<&str> {
        self.extensions
            .get(EXT_CAUSATION_ID)
            .and_then(|v| v.as_str())
    }

    /// The W3C `traceparent` extension (distributed-tracing extension), if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.extensions
            .get(crate::trace::EXT_TRACEPARENT)
            .and_then(|v| v.as_str())
    }

    /// The W3C `tracestate` extension, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.extensions
            .get(crate::trace::EXT_TRACESTATE)
            .and_then(|v| v.as_str())
    }

    /// Fills Herald's defaults: `correlationid` = own `id` when absent.
    pub fn apply_defaults(&mut self) {
        if !self.extensions.contains_key(EXT_CORRELATION_ID) {
            self.extensions.insert(
                EXT_CORRELATION_ID.to_string(),
                ExtensionValue::String(self.id.clone()),
            );
        }
    }

    /// Checks every attribute; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        require_text("id", &self.id)?;
        require_text("source", &self.source)?;
        require_text("type", &self.ty)?;
        if self.specversion != SPEC_VERSION {
            return Err(ValidationError::new(
                "specversion",
                format!("must be \"{SPEC_VERSION}\", got {:?}", self.specversion),
            ));
        }
        if let Some(subject) = &self.subject {
            require_text("subject", subject)?;
        }
        if let Some(time) = &self.time {
            chrono::DateTime::parse_from_rfc3339(time).map_err(|e| {
                ValidationError::new("time", format!("must be an RFC 3339 timestamp: {e}"))
            })?;
        }
        if let Some(ct) = &self.datacontenttype {
            validate_media_type(ct)?;
        }
        if let Some(schema) = &self.dataschema {
            require_text("dataschema", schema)?;
        }
        for (name, value) in &self.extensions {
            validate_extension_name(name)?;
            if let ExtensionValue::String(s) = value {
                if s.chars().any(char::is_control) {
                    return Err(ValidationError::new(
                        name.as_str(),
                        "must not contain control characters",
                    ));
                }
            }
        }
        validate_trace_context(&self.extensions)?;
        for id_ext in [EXT_CORRELATION_ID, EXT_CAUSATION_ID, EXT_PARTITION_KEY] {
            if let Some(v) = self.extensions.get(id_ext) {
                match v {
                    ExtensionValue::String(s) if !s.is_empty() => {}
                    ExtensionValue::Integer(_) if id_ext == EXT_PARTITION_KEY => {}
                    _ => {
                        return Err(ValidationError::new(id_ext, "must be a non-empty string"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses one structured-mode event from a JSON value and validates it.
    pub fn from_json_value(value: Value) -> Result<Self, ValidationError> {
        let Value::Object(map) = value else {
            return Err(ValidationError::new(
                "event",
                format!("must be a JSON object, got {}", json_kind(&value)),
            ));
        };
        let event = Self::from_json_map(map)?;
        event.validate()?;
        Ok(event)
    }

    /// Parses a structured-mode body (`application/cloudevents+json`).
    pub fn parse_structured(body: &[u8]) -> Result<Self, ValidationError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ValidationError::new("body", format!("malformed JSON: {e}")))?;
        Self::from_json_value(value)
    }

    /// Parses a batch body (`application/cloudevents-batch+json`: a JSON array).
    /// Errors name the index: `[3].type`.
    pub fn parse_batch(body: &[u8]) -> Result<Vec<Self>, ValidationError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ValidationError::new("body", format!("malformed JSON: {e}")))?;
        let Value::Array(items) = value else {
            return Err(ValidationError::new(
                "body",
                format!("a batch must be a JSON array, got {}", json_kind(&value)),
            ));
        };
        if items.is_empty() {
            return Err(ValidationError::new(
                "body",
                "a batch must hold at least one event",
            ));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                Self::from_json_value(item)
                    .map_err(|e| ValidationError::new(format!("[{i}].{}", e.field), e.message))
            })
            .collect()
    }

    /// Builds an event from binary-mode parts: `ce-*` headers (names matched case-insensitively,
    /// values already percent-decoded by the caller if needed), the `content-type` and the body.
    pub fn from_binary<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Self, ValidationError> {
        let mut map = Map::new();
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if let Some(attr) = lower.strip_prefix("ce-") {
                if attr == "data" || attr == "data_base64" {
                    return Err(ValidationError::new(
                        name,
                        "is not a valid binary-mode header",
                    ));
                }
                map.insert(attr.to_string(), Value::String(value.to_string()));
            }
        }
        let mut event = Self::from_json_map(map)?;
        if let Some(ct) = content_type {
            event.datacontenttype = Some(ct.to_string());
        }
        if !body.is_empty() {
            let is_json = content_type.is_some_and(is_json_media_type);
            event.data = Some(if is_json {
                let v: Value = serde_json::from_slice(&body).map_err(|e| {
                    ValidationError::new(
                        "data",
                        format!("content-type is JSON but body is not: {e}"),
                    )
                })?;
                Data::Json(v.to_string())
            } else {
                Data::Binary(body)
            });
        }
        event.validate()?;
        Ok(event)
    }

    fn from_json_map(mut map: Map<String, Value>) -> Result<Self, ValidationError> {
        let id = take_string(&mut map, "id")?.unwrap_or_default();
        let source = take_string(&mut map, "source")?.unwrap_or_default();
        let ty = take_string(&mut map, "type")?.unwrap_or_default();
        let specversion = take_string(&mut map, "specversion")?
            .ok_or_else(|| ValidationError::new("specversion", "is required (must be \"1.0\")"))?;
        let subject = take_string(&mut map, "subject")?;
        let time = take_string(&mut map, "time")?;
        let datacontenttype = take_string(&mut map, "datacontenttype")?;
        let dataschema = take_string(&mut map, "dataschema")?;
        let json_data = map.remove("data");
        let base64_data = map.remove("data_base64");
        let data = match (json_data, base64_data) {
            (Some(_), Some(Value::Null)) | (Some(Value::Null), None) | (None, None) => None,
            (Some(v), None) => Some(Data::Json(v.to_string())),
            (None | Some(Value::Null), Some(Value::String(b64))) => {
                Some(Data::Binary(Bytes::from(
                    base64_decode(&b64).map_err(|m| ValidationError::new("data_base64", m))?,
                )))
            }
            (None | Some(Value::Null), Some(other)) => {
                return Err(ValidationError::new(
                    "data_base64",
                    format!("must be a base64 string, got {}", json_kind(&other)),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ValidationError::new(
                    "data",
                    "`data` and `data_base64` are mutually exclusive",
                ));
            }
        };
        let mut extensions = BTreeMap::new();
        for (name, value) in map {
            let value = match value {
                Value::Null => continue,
                Value::String(s) => ExtensionValue::String(s),
                Value::Bool(b) => ExtensionValue::Bool(b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => ExtensionValue::Integer(i),
                    None => {
                        return Err(ValidationError::new(
                            name,
                            "extension numbers must be integers",
                        ))
                    }
                },
                other => {
                    return Err(ValidationError::new(
                        name,
                        format!(
                            "extension attributes must be a string, boolean or integer, got {}",
                            json_kind(&other)
                        ),
                    ))
                }
            };
            extensions.insert(name, value);
        }
        Ok(Self {
            id,
            source,
            specversion,
            ty,
            subject,
            time,
            datacontenttype,
            dataschema,
            data,
            extensions,
        })
    }

    /// The structured-mode JSON object of this event.
    pub fn to_json_value(&self) -> Value {
        let mut map = Map::new();
        map.insert(
            "specversion".into(),
            Value::String(self.specversion.clone()),
        );
        map.insert("id".into(), Value::String(self.id.clone()));
        map.insert("source".into(), Value::String(self.source.clone()));
        map.insert("type".into(), Value::String(self.ty.clone()));
        for (name, value) in [
            ("subject", &self.subject),
            ("time", &self.time),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ] {
            if let Some(v) = value {
                map.insert(name.into(), Value::String(v.clone()));
            }
        }
        for (name, value) in &self.extensions {
            map.insert(name.clone(), value.to_json());
        }
        match &self.data {
            None => {}
            Some(Data::Json(text)) => {
                // Invariant: Data::Json holds valid JSON text.
                let v = serde_json::from_str(text).unwrap_or(Value::Null);
                map.insert("data".into(), v);
            }
            Some(Data::Binary(bytes)) => {
                map.insert("data_base64".into(), Value::String(base64_encode(bytes)));
            }
        }
        Value::Object(map)
    }

    /// Approximate in-memory / on-wire size, used for limits.
    pub fn approximate_size(&self) -> usize {
        let data = match &self.data {
            None => 0,
            Some(Data::Json(s)) => s.len(),
            Some(Data::Binary(b)) => b.len(),
        };
        let ext: usize = self
            .extensions
            .iter()
            .map(|(k, v)| k.len() + v.to_header_string().len())
            .sum();
        self.id.len()
            + self.source.len()
            + self.ty.len()
            + self.subject.as_ref().map_or(0, String::len)
            + self.time.as_ref().map_or(0, String::len)
            + self.datacontenttype.as_ref().map_or(0, String::len)
            + self.dataschema.as_ref().map_or(0, String::len)
            + data
            + ext
    }
}

fn take_string(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ValidationError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ValidationError::new(
            field,
            format!("must be a string, got {}", json_kind(&other)),
        )),
    }
}

fn require_text(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(
            field,
            "is required and must be a non-empty string",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn validate_media_type(ct: &str) -> Result<(), ValidationError> {
    let essence = ct.split(';').next().unwrap_or("").trim();
    let mut parts = essence.split('/');
    let ok = matches!((parts.next(), parts.next(), parts.next()),
        (Some(t), Some(s), None) if !t.is_empty() && !s.is_empty()
            && !essence.contains(char::is_whitespace));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "datacontenttype",
            format!("must be a media type like `application/json`, got {ct:?}"),
        ))
    }
}

/// True for `application/json`, `text/json` and any `+json` media type.
pub fn is_json_media_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

fn validate_extension_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= EXTENSION_NAME_LENGTH_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            name,
            format!(
                "is not a valid attribute name: CloudEvents attribute names are 1..={EXTENSION_NAME_LENGTH_MAX} lower-case letters or digits"
            ),
        ))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Standard alphabet, padding optional on decode, trailing bits ignored (what the
/// hand-written decoder accepted before; the URL-safe alphabet is tried second).
const B64_STANDARD: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
const B64_URL_SAFE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

/// Appends standard padded base64 of `input` to `out` (no intermediate `String`).
pub fn base64_encode_into(input: &[u8], out: &mut String) {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode_string(input, out);
}

/// Standard or URL-safe base64 (padding optional, whitespace not allowed).
pub fn base64_decode(input: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let trimmed = input.trim_end_matches('=');
    if input.len() - trimmed.len() > 2 {
        return Err("too much padding".into());
    }
    match B64_STANDARD.decode(trimmed) {
        Ok(bytes) => Ok(bytes),
        Err(first) if trimmed.bytes().any(|c| c == b'-' || c == b'_') => B64_URL_SAFE
            .decode(trimmed)
            .map_err(|_| format!("invalid base64: {first}")),
        Err(e) => Err(format!("invalid base64: {e}")),
    }
}

/// The distributed-tracing extension: `traceparent` must be a valid W3C traceparent,
/// `tracestate` a valid tracestate; both strings.
fn validate_trace_context(
    extensions: &BTreeMap<String, ExtensionValue>,
) -> Result<(), ValidationError> {
    use crate::trace::{validate_tracestate, TraceParent, EXT_TRACEPARENT, EXT_TRACESTATE};
    if let Some(value) = extensions.get(EXT_TRACEPARENT) {
        let text = value.as_str().ok_or_else(|| {
            ValidationError::new(EXT_TRACEPARENT, "must be a string (W3C traceparent)")
        })?;
        TraceParent::parse(text).map_err(|e| ValidationError::new(EXT_TRACEPARENT, e))?;
    }
    if let Some(value) = extensions.get(EXT_TRACESTATE) {
        let text = value.as_str().ok_or_else(|| {
            ValidationError::new(EXT_TRACESTATE, "must be a string (W3C tracestate)")
        })?;
        validate_tracestate(text).map_err(|e| ValidationError::new(EXT_TRACESTATE, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"specversion": "1.0", "id": "e1", "source": "/shop", "type": "order.created"})
    }

    #[test]
    fn parses_and_renders_structured() {
        let mut v = minimal();
        v["data"] = json!({"total": 42});
        v["subject"] = json!("order-1");
        v["partitionkey"] = json!("cust-9");
        v["retries"] = json!(3);
        let ev = CloudEvent::from_json_value(v.clone()).expect("valid");
        assert_eq!(ev.partition_key().as_deref(), Some("cust-9"));
        assert_eq!(
            ev.extensions.get("retries"),
            Some(&ExtensionValue::Integer(3))
        );
        assert_eq!(ev.to_json_value(), v);
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in ["id", "source", "type", "specversion"] {
            let mut v = minimal();
            v.as_object_mut().expect("object").remove(field);
            let err = CloudEvent::from_json_value(v).expect_err(field);
            assert_eq!(err.field, field);
        }
    }

    #[test]
    fn malformed_attributes_are_named() {
        let cases = [
            ("specversion", json!("0.3")),
            ("time", json!("yesterday")),
            ("id", json!(5)),
            ("datacontenttype", json!("json")),
            ("Bad_Name", json!("x")),
            ("nested", json!({"a": 1})),
            ("correlationid", json!("")),
        ];
        for (field, value) in cases {
            let mut v = minimal();
            v[field] = value;
            let err = CloudEvent::from_json_value(v).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn batch_errors_name_the_index() {
        let body = serde_json::to_vec(
            &json!([minimal(), {"specversion": "1.0", "id": "x", "source": "s"}]),
        )
        .expect("json");
        let err = CloudEvent::parse_batch(&body).expect_err("bad batch");
        assert_eq!(err.field, "[1].type");
        assert_eq!(
            CloudEvent::parse_batch(b"[]").expect_err("empty").field,
            "body"
        );
        assert_eq!(
            CloudEvent::parse_batch(b"{").expect_err("malformed").field,
            "body"
        );
    }

    #[test]
    fn binary_mode_from_headers() {
        let headers = [
            ("ce-id", "1"),
            ("Ce-Source", "/s"),
            ("ce-type", "t"),
            ("ce-specversion", "1.0"),
            ("ce-partitionkey", "k"),
            ("content-length", "3"),
        ];
        let ev = CloudEvent::from_binary(headers, Some("text/plain"), Bytes::from_static(b"abc"))
            .expect("valid");
        assert_eq!(ev.data, Some(Data::Binary(Bytes::from_static(b"abc"))));
        assert_eq!(ev.partition_key().as_deref(), Some("k"));
        let json_ev = CloudEvent::from_binary(
            [
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("ce-specversion", "1.0"),
            ],
            Some("application/json"),
            Bytes::from_static(b"{\"a\": 1}"),
        )
        .expect("valid");
        assert_eq!(json_ev.data, Some(Data::Json("{\"a\":1}".into())));
    }

    #[test]
    fn base64_round_trip() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).expect("valid"), data);
        }
        assert!(base64_decode("a$==").is_err());
        assert!(base64_decode("QQ===").is_err(), "three padding characters");
        assert!(
            base64_decode("Q").is_err(),
            "one character cannot hold a byte"
        );
    }

    #[test]
    fn base64_accepts_unpadded_and_url_safe_input() {
        assert_eq!(base64_decode("aGk").expect("unpadded"), b"hi");
        assert_eq!(base64_decode("aGk=").expect("padded"), b"hi");
        assert_eq!(base64_decode("-_8").expect("url-safe"), vec![0xfb, 0xff]);
        assert_eq!(base64_decode("+/8").expect("standard"), vec![0xfb, 0xff]);
        let mut out = String::from("x");
        base64_encode_into(b"hi", &mut out);
        assert_eq!(out, "xaGk=");
    }

    #[test]
    fn correlation_defaults_to_own_id() {
        let mut ev = CloudEvent::new("e1", "/s", "t");
        ev.apply_defaults();
        assert_eq!(ev.correlation_id(), Some("e1"));
    }
}
