//! Group commit at the HTTP edge: a request that may have changed the registry answers 2xx
//! only once its change is committed to the store (DESIGN.md decision 12, issue 13 finding
//! 11). One layer (`CommitLayer`) around every route does it, so no handler has to.
//!
//! After a handler answers a write request (any method but `GET`, `HEAD`, `OPTIONS`) with a
//! 2xx, `CommitLayer` takes the core's commit ticket ([`Core::ticket`]: every change noted so far,
//! the handler's own included) and waits for [`Core::committed`]. That also covers a write
//! answered from state another request created and has not committed yet (an idempotent
//! re-registration): its 2xx waits for that commit too. Error replies pass at once (they
//! change nothing). Heartbeats opt out with `lazy`: renewals are written every
//! [`LEASE_WRITE_INTERVAL`](crate::servicecenter::store::LEASE_WRITE_INTERVAL), and a lost
//! renewal costs lease time, never a record.
//!
//! When the commit fails (the store refused the batch, it took longer than
//! [`COMMIT_WAIT`](crate::servicecenter::core::COMMIT_WAIT), or the core is stopping), the
//! 2xx becomes service-center's `500011` "Registry service is unavailable", the code
//! service-center answers when etcd fails a write. The change then stays in the core's
//! memory and the writer keeps retrying it: it may or may not end up stored, and a client
//! that retries (registrations and deletes are idempotent) gets a definite answer.

use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use crate::servicecenter::core::Core;
use crate::servicecenter::error::{ScError, UNAVAILABLE_BACKEND};

/// A response extension: this answer's change may be written lazily (a heartbeat), so
/// [`gate`] does not wait for a commit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lazy;

/// Marks `resp` as [`Lazy`].
pub(crate) fn lazy(mut resp: Response) -> Response {
    resp.extensions_mut().insert(Lazy);
    resp
}

/// The layer that makes every write's 2xx wait for its commit (see the module docs): reads
/// (`GET`, `HEAD`, `OPTIONS`) pass straight through, with no allocation or clone; a write's
/// response is awaited, then, when it is a 2xx not marked [`Lazy`], held until the core's
/// store has committed every change noted so far ([`Core::committed`]), or turned into
/// `500011` when the store fails or takes longer than the commit wait.
#[derive(Clone)]
pub(crate) struct CommitLayer {
    core: Core,
}

impl CommitLayer {
    /// The layer for `core`.
    pub(crate) fn new(core: Core) -> CommitLayer {
        CommitLayer { core }
    }
}

impl<S> tower::Layer<S> for CommitLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            core: self.core.clone(),
        }
    }
}

/// The service of [`CommitLayer`] around the routes `S`.
#[derive(Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    core: Core,
}

impl<S> tower::Service<Request> for Gate<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Gated<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let core = (!matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS))
            .then(|| self.core.clone());
        Gated::Answering {
            inner: self.inner.call(req),
            core,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Gate`]: the handler's answer, then, for a write's 2xx not marked
    /// [`Lazy`], the commit wait (boxed only then: a read, a heartbeat or an error reply
    /// allocates nothing here).
    #[project = GatedProj]
    pub(crate) enum Gated<F> {
        /// The handler is answering; `core` is set for a write.
        Answering {
            #[pin]
            inner: F,
            core: Option<Core>,
        },
        /// A write's 2xx, held until its commit.
        Committing {
            commit: futures::future::BoxFuture<'static, Response>,
        },
    }
}

impl<F> std::future::Future for Gated<F>
where
    F: std::future::Future<Output = Result<Response, std::convert::Infallible>>,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        loop {
            match self.as_mut().project() {
                GatedProj::Answering { inner, core } => {
                    let resp = match inner.poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(resp)) => resp,
                        Poll::Ready(Err(never)) => match never {},
                    };
                    let Some(core) = core.take() else {
                        return Poll::Ready(Ok(resp));
                    };
                    if !resp.status().is_success() || resp.extensions().get::<Lazy>().is_some() {
                        return Poll::Ready(Ok(resp));
                    }
                    let commit = Box::pin(async move { committed(&core, resp).await });
                    self.set(Gated::Committing { commit });
                }
                GatedProj::Committing { commit } => return commit.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// `resp`, a write's 2xx, once what it answers is committed (see [`CommitLayer`]), or
/// `500011` when the commit fails.
async fn committed(core: &Core, resp: Response) -> Response {
    match core.committed(core.ticket()).await {
        Ok(()) => resp,
        Err(e) => ScError::new(
            UNAVAILABLE_BACKEND,
            format!(
                "{e}; the change is kept in memory and written when the store accepts it, \
                 so it may or may not be stored: retry the request"
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    use crate::servicecenter::store::StoreConfig;

    use super::*;

    /// Sends one request through the router: its status and body.
    async fn call(
        core: Core,
        method: &'static str,
        uri: String,
        body: String,
    ) -> (StatusCode, String) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = crate::servicecenter::router(core)
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Sends a write while nothing writes the store (no `Core::run`): it must not answer
    /// until `Core::flush` commits; then it answers 2xx. Returns the body.
    async fn answered_after_commit(
        core: &Core,
        method: &'static str,
        uri: String,
        body: &str,
    ) -> String {
        let what = format!("{method} {uri}");
        let mut pending = tokio::spawn(call(core.clone(), method, uri, body.to_owned()));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut pending)
                .await
                .is_err(),
            "{what} answered before its change was committed"
        );
        core.flush().await.unwrap();
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("answered once committed")
            .unwrap();
        assert!(status.is_success(), "{what}: {status} {body}");
        body
    }

    /// Sends a request that must answer without a commit (none comes meanwhile).
    async fn answered_at_once(
        core: &Core,
        method: &'static str,
        uri: String,
        body: &str,
    ) -> StatusCode {
        let what = format!("{method} {uri}");
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(5),
            call(core.clone(), method, uri, body.to_owned()),
        )
        .await
        .unwrap_or_else(|_| panic!("{what} waited for a commit"));
        assert!(status.is_success(), "{what}: {status} {body}");
        status
    }

    #[tokio::test]
    async fn writes_answer_after_their_commit_and_heartbeats_and_reads_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(StoreConfig::Embedded {
            data_dir: dir.path().to_owned(),
        })
        .await
        .unwrap();
        let created = answered_after_commit(
            &core,
            "POST",
            "/v4/default/registry/microservices".into(),
            r#"{"service":{"appId":"a","serviceName":"s","version":"1.0.0"}}"#,
        )
        .await;
        let sid = serde_json::from_str::<serde_json::Value>(&created).unwrap()["serviceId"]
            .as_str()
            .unwrap()
            .to_owned();
        let inst = format!("/v4/default/registry/microservices/{sid}/instances");
        let body =
            r#"{"instance":{"instanceId":"i1","hostName":"h","endpoints":["rest://1.2.3.4:80"]}}"#;
        answered_after_commit(&core, "POST", inst.clone(), body).await;
        answered_after_commit(&core, "PUT", format!("{inst}/i1/status?value=DOWN"), "").await;
        let body = r#"{"instance":{"instanceId":"e1","hostName":"h1","app":"APP","ipAddr":"10.0.0.1","port":{"$":9090,"@enabled":true},"dataCenterInfo":{"name":"MyOwn"}}}"#;
        answered_after_commit(&core, "POST", "/eureka/apps/APP".into(), body).await;

        // While a change waits for its commit, heartbeats and reads answer at once.
        let body =
            r#"{"instance":{"instanceId":"i2","hostName":"h","endpoints":["rest://1.2.3.4:81"]}}"#;
        let mut pending = tokio::spawn(call(core.clone(), "POST", inst.clone(), body.to_owned()));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut pending)
                .await
                .is_err()
        );
        answered_at_once(&core, "PUT", format!("{inst}/i1/heartbeat"), "").await;
        let batch = format!(r#"{{"instances":[{{"serviceId":"{sid}","instanceId":"i1"}}]}}"#);
        answered_at_once(
            &core,
            "PUT",
            "/v4/default/registry/heartbeats".into(),
            &batch,
        )
        .await;
        answered_at_once(&core, "PUT", "/eureka/apps/APP/e1".into(), "").await;
        answered_at_once(&core, "GET", format!("{inst}/i1"), "").await;
        core.flush().await.unwrap();
        let (s, b) = pending.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}
