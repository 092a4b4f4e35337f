//! `POST /v1/filters/test` (also `/filters/test`): `{"pattern": ..., "event": ...}` →
//! `{"matches": bool, "explanation": ...}`. Stateless; needs no subscription.

use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::body::LimitedBody;
use crate::bus::json_body;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    pattern: Value,
    event: Value,
}

pub async fn test(LimitedBody(body): LimitedBody) -> Result<Json<Value>, ApiError> {
    let request: TestRequest = json_body(&body)?;
    Ok(Json(herald_bus::test_filter(
        &request.pattern,
        &request.event,
    )?))
}
