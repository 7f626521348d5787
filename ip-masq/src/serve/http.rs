//! The agent's HTTP listener: `/metrics` (Prometheus, OpenMetrics text),
//! `/healthz` (liveness) and `/readyz` (readiness).
//!
//! It runs on its own thread with its own single-threaded runtime. The run
//! loop calls iptables and the bpf syscalls synchronously, so sharing its
//! runtime would let a long reload stall every probe, and a slow scrape
//! delay the loop. Separate, a probe still answers while the loop works,
//! and `/healthz` can tell a stalled loop from a busy listener.
//!
//! hyper (HTTP/1.1 only) does the protocol: it is the maintained crate
//! everything else in the Rust HTTP ecosystem builds on, and with only the
//! `server` and `http1` features it adds little beyond the parser.

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::kernel::datapath;
use crate::serve::metrics;
use crate::serve::state;
use crate::serve::state::Shared;

/// Connections served at once; more wait in the accept queue. Probes and a
/// scraper need a handful.
const MAX_CONNECTIONS: usize = 32;
/// A client that has not sent its headers by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors starting the listener.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("cannot listen on {address} for metrics and health checks")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the HTTP thread")]
    Thread(#[source] std::io::Error),
}

/// Binds the listener now, so that a taken port stops the agent at start
/// with a clear error, and serves it on a new thread.
///
/// # Errors
/// Fails when the address cannot be bound or the thread not started.
pub fn start(
    address: SocketAddr,
    shared: Shared,
    pin_dir: PathBuf,
) -> Result<SocketAddr, HttpError> {
    let bind_err = |source| HttpError::Bind { address, source };
    let listener = StdTcpListener::bind(address).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    let context = Arc::new(Context { shared, pin_dir });
    std::thread::Builder::new()
        .name("ip-masq-http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    warn!(error = %err, "cannot start the HTTP runtime; metrics and health checks are off");
                    return;
                }
            };
            runtime.block_on(serve(listener, context));
        })
        .map_err(HttpError::Thread)?;
    Ok(bound)
}

struct Context {
    shared: Shared,
    pin_dir: PathBuf,
}

async fn serve(listener: StdTcpListener, context: Arc<Context>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            warn!(error = %err, "cannot register the HTTP listener; metrics and health checks are off");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of fds and the like: transient; retry shortly.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let context = Arc::clone(&context);
                async move { Ok::<_, Infallible>(route(&context, &request).await) }
            });
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = result {
                debug!(%peer, error = %err, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn route(context: &Context, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let status = context.shared.snapshot();
            let packets = match datapath::read_stats(&context.pin_dir) {
                Ok(packets) => Some(packets),
                Err(err) => {
                    debug!(error = %crate::error::error_chain(&err), "cannot read packet counters");
                    None
                }
            };
            let connections = match datapath::read_connection_stats(&context.pin_dir) {
                Ok(connections) => Some(connections),
                Err(err) => {
                    debug!(error = %crate::error::error_chain(&err), "cannot read connection counters");
                    None
                }
            };
            let mut response = text(
                StatusCode::OK,
                metrics::render(&status, packets, connections),
            );
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        "/healthz" => {
            let startup_complete = context.shared.snapshot().startup_complete;
            match state::liveness(startup_complete, context.shared.since_last_beat()) {
                Ok(()) => text(StatusCode::OK, "ok\n".into()),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            }
        }
        "/readyz" => {
            let shared = context.shared.clone();
            // iptables is a child process: keep it off the reactor.
            let rule_problems = tokio::task::spawn_blocking(move || shared.check_rules())
                .await
                .unwrap_or_else(|err| vec![format!("rules check failed: {err}")]);
            let reasons = state::not_ready_reasons(&context.shared.snapshot(), &rule_problems);
            if reasons.is_empty() {
                text(StatusCode::OK, "ok\n".into())
            } else {
                let mut body = String::from("not ready:\n");
                for reason in reasons {
                    body.push_str("- ");
                    body.push_str(&reason);
                    body.push('\n');
                }
                text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}
