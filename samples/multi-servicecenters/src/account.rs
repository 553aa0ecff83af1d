//! account-server's HTTP API, copied from the Spring Boot app of the original demo
//! (`syncer/samples/multi-servicecenters/eureka/account-server`).
//!
//! - `GET /checkHealth` → 200 `I am healthy`
//! - `POST /login` with `{"user": .., "password": ..}` → 200 `welcome <user>`; an empty or
//!   missing `user` → 401 `user is empty`; an empty or missing `password` → 401
//!   `password is empty`; a body that is not such a JSON object → 400 with the reason.
//!
//! The original dereferenced a missing field and failed with a 500; here a missing field counts
//! as empty. The `Content-Type` is not checked, so `curl -d` without a header works too.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The answer of `GET /checkHealth`.
pub const HEALTHY: &str = "I am healthy";

/// The `POST /login` body. Unknown fields are ignored, as Jackson's Spring default does.
#[derive(Debug, Deserialize)]
struct LoginRequest {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The account-server routes; stateless.
pub fn router() -> Router {
    Router::new()
        .route("/checkHealth", get(check_health))
        .route("/login", post(login))
}

async fn check_health() -> &'static str {
    HEALTHY
}

async fn login(body: Bytes) -> (StatusCode, String) {
    let request: LoginRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(%error, "login body rejected");
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid login body: {error}"),
            );
        }
    };
    let user = request.user.unwrap_or_default();
    if user.is_empty() {
        return (StatusCode::UNAUTHORIZED, "user is empty".to_owned());
    }
    if request.password.unwrap_or_default().is_empty() {
        return (StatusCode::UNAUTHORIZED, "password is empty".to_owned());
    }
    (StatusCode::OK, format!("welcome {user}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(method: &str, uri: &str, body: &'static str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request builds");
        let response = router().oneshot(request).await.expect("router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body reads");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn login(body: &'static str) -> (StatusCode, String) {
        call("POST", "/login", body).await
    }

    #[tokio::test]
    async fn check_health_says_it_is_healthy() {
        assert_eq!(
            call("GET", "/checkHealth", "").await,
            (StatusCode::OK, "I am healthy".to_owned())
        );
    }

    #[tokio::test]
    async fn login_with_user_and_password_welcomes_the_user() {
        assert_eq!(
            login(r#"{"user":"Jack","password":"123456"}"#).await,
            (StatusCode::OK, "welcome Jack".to_owned())
        );
    }

    #[tokio::test]
    async fn login_ignores_unknown_fields() {
        assert_eq!(
            login(r#"{"user":"Jack","password":"x","remember":true}"#)
                .await
                .0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn login_with_empty_or_missing_user_is_unauthorized() {
        for body in [
            r#"{"user":"","password":"123456"}"#,
            r#"{"password":"123456"}"#,
            r#"{"user":null,"password":"123456"}"#,
            r#"{}"#,
        ] {
            assert_eq!(
                login(body).await,
                (StatusCode::UNAUTHORIZED, "user is empty".to_owned()),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn login_with_empty_or_missing_password_is_unauthorized() {
        for body in [r#"{"user":"Jack","password":""}"#, r#"{"user":"Jack"}"#] {
            assert_eq!(
                login(body).await,
                (StatusCode::UNAUTHORIZED, "password is empty".to_owned()),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn login_with_malformed_json_is_a_bad_request() {
        for body in ["", "{", "[1,2]", r#"{"user":5,"password":"x"}"#, "null"] {
            let (status, text) = login(body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(text.starts_with("invalid login body: "), "{body}: {text}");
        }
    }

    #[tokio::test]
    async fn login_only_accepts_post() {
        assert_eq!(
            call("GET", "/login", "").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
