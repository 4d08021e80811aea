//! A layer under the Kubernetes client that logs every failed API call with its verb and object
//! (method and path): a reconcile error alone says "422 Invalid" and not which request it was.

use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Clone, Copy, Default)]
pub struct LogFailedCalls;

impl<S> Layer<S> for LogFailedCalls {
    type Service = LoggedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoggedService { inner }
    }
}

#[derive(Clone)]
pub struct LoggedService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LoggedService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let verb = request.method().clone();
        let path = request.uri().path().to_string();
        let watching = request.uri().query().is_some_and(|q| q.contains("watch=true"));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let status = response.status().as_u16();
            match status {
                // Not failures: a get_opt of an absent object; a lost claim race (and other
                // optimistic-concurrency conflicts) is retried by design.
                404 | 409 => tracing::debug!(%verb, path, status, "API request refused"),
                // An expired watch is resumed by the watcher.
                410 if watching => tracing::debug!(%verb, path, status, "watch expired"),
                400.. => tracing::warn!(%verb, path, status, "API request failed"),
                _ => {}
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[tokio::test]
    async fn responses_pass_through_unchanged() {
        let inner = tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::builder().status(422).body(()).unwrap()) });
        let mut service = LogFailedCalls.layer(inner);
        let response = service.call(Request::builder().method("PATCH").uri("/apis/x/v1/namespaces/n/things/t").body(()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 422);
    }
}
