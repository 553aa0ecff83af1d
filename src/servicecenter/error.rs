//! The one API error type of the built-in core's SC v4 surface.
//!
//! Renders service-center's own error body (`1.3.0:server/error/error.go`):
//! HTTP status = `errorCode / 1000`, body
//! `{"errorCode":"400012","errorMessage":"Micro-service does not exist","detail":"..."}`
//! with `errorCode` as a string and `detail` left out when empty. The codes and the body
//! are the wire crate's ([`syncer_wire_servicecenter::error`]), shared with the plugin.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use syncer_wire_servicecenter::error::*;

/// A service-center API error: a six-digit code and a specific detail.
///
/// No registry state was changed when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service-center error {code}: {detail}")]
pub struct ScError {
    /// The six-digit service-center error code, e.g. 400012.
    pub code: u32,
    /// The specific text; empty means "left out of the body".
    pub detail: String,
}

impl ScError {
    /// An error with `code` and a specific `detail`.
    pub fn new(code: u32, detail: impl Into<String>) -> ScError {
        ScError {
            code,
            detail: detail.into(),
        }
    }

    /// 400001 with a detail that names the offending field.
    pub fn invalid(detail: impl Into<String>) -> ScError {
        ScError::new(INVALID_PARAMS, detail)
    }

    /// The generic message service-center writes for `code` (servicecomb-notes c.2).
    pub fn message(code: u32) -> &'static str {
        message(code)
    }

    /// The HTTP status: `code / 1000`, 500 when that is not a valid status.
    pub fn status(&self) -> StatusCode {
        u16::try_from(self.code / 1000)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ScError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code, detail = %self.detail, "service-center request failed");
        } else {
            tracing::debug!(code = self.code, detail = %self.detail, "service-center request refused");
        }
        let body = ErrorBody::new(self.code, self.detail);
        let mut text = serde_json::to_string(&body).unwrap_or_default();
        text.push('\n');
        let mut resp = (
            status,
            [(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            )],
            text,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&self.code.to_string()) {
            resp.headers_mut().insert("x-response-status", v);
        }
        resp
    }
}
