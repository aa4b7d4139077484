//! Connections: the accept loop and what bounds each connection, so slow or idle clients cannot
//! hold the service.
//!
//! - At most `max_connections` are open; one over the cap is closed as soon as it is accepted,
//!   while the open ones are served.
//! - A request's headers must arrive within `header_timeout`: from the connection's opening (its
//!   TLS handshake included), or from the first byte after an idle pause.
//! - A connection idle between requests is closed after `idle_timeout`.
//! - A request's body must arrive within `body_timeout` of its headers ([`DeadlineBody`]).
//!
//! hyper's own header timer also runs while a kept-alive connection is idle, so it cannot give a
//! short header limit and a long idle one: each connection's phase is tracked here instead (its
//! reads and its requests) and one timer per connection closes it when its phase's limit passes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower_service::Service;

use crate::api::Api;
use crate::engine::metrics::ReasonLabel;

/// What bounds connections (`--max-connections`, `--header-timeout-ms`, `--body-timeout-ms`,
/// `--idle-timeout-ms`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// How long a request's headers may take.
    pub header_timeout: Duration,
    /// How long a request's body may take, from its headers.
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    /// The defaults: 10,000 connections, headers in 10 s, bodies in 30 s, idle 60 s.
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Accepts connections on `listener` and serves `api` on each until `stop` completes; answers
/// the handle that waits for the open ones to finish.
pub async fn accept_until(
    listener: TcpListener,
    api: Api,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl Future<Output = ()>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => return graceful,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            api.metrics().connections_refused.inc();
            tracing::debug!(max = limits.max_connections, "connection refused: too many open");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (api, tls, watcher) = (api.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let activity = Arc::new(Activity::new());
            match tls {
                None => serve(stream, api, limits, activity, watcher).await,
                // The handshake counts against the header timeout: a client that stalls in it
                // is as slow as one that stalls in its headers.
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve(stream, api, limits, activity, watcher).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => {
                        let reason = "header_timeout";
                        api.metrics().connections_timed_out.get_or_create(&ReasonLabel { reason }).inc();
                    }
                },
            }
            drop(permit);
        });
    }
}

/// Serves one connection until it ends, or until its phase's limit passes.
async fn serve<S>(
    stream: S,
    api: Api,
    limits: Limits,
    activity: Arc<Activity>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timed_out = api.metrics().connections_timed_out.clone();
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            activity.enter(Phase::Busy);
            let watched = Arc::clone(&activity);
            let request = request.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout, watched)));
            let (mut api, activity) = (api.clone(), Arc::clone(&activity));
            async move {
                let mut response = api.call(request).await;
                // Answered before its body was read to the end (refused early: too large,
                // unauthorised): the rest of the body would be read as the next request, so
                // the connection closes after this answer, and says so, so that no client
                // sends on it again.
                if !activity.body_done.load(Ordering::Acquire) {
                    if let Ok(response) = response.as_mut() {
                        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                }
                activity.enter(Phase::Idle);
                response
            }
        })
    };
    let io = TokioIo::new(Watched { inner: stream, activity: Arc::clone(&activity) });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // This module keeps the header and idle limits (see above); hyper's timer would do neither.
    builder.header_read_timeout(None);
    let connection = watcher.watch(builder.serve_connection(io, service));
    tokio::select! {
        served = connection => if let Err(e) = served {
            tracing::debug!(error = %e, "connection ended with an error");
        },
        phase = activity.overdue(limits) => {
            let reason = if phase == Phase::Idle { "idle_timeout" } else { "header_timeout" };
            tracing::debug!(reason, "connection closed: the client was too slow or idle");
            timed_out.get_or_create(&ReasonLabel { reason }).inc();
        }
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Reading a request's headers (`header_timeout`).
    Head = 0,
    /// Between requests (`idle_timeout`).
    Idle = 1,
    /// Serving a request (its body has its own deadline; the engine bounds the rest).
    Busy = 2,
}

/// A connection's phase and when it began, shared by its reads, its requests and its timer.
struct Activity {
    opened: Instant,
    phase: AtomicU8,
    /// When the phase began, in milliseconds since `opened`.
    since_ms: AtomicU64,
    /// Whether the request being served has had its body read to the end.
    body_done: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
            body_done: AtomicBool::new(true),
        }
    }

    fn enter(&self, phase: Phase) {
        let since = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(since, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Head,
            1 => Phase::Idle,
            _ => Phase::Busy,
        }
    }

    /// A byte arrived: an idle connection is now reading a request's headers.
    fn read(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head);
        }
    }

    /// Completes when the connection has stayed in one phase past that phase's limit.
    async fn overdue(&self, limits: Limits) -> Phase {
        loop {
            let phase = self.phase();
            let limit = match phase {
                Phase::Head => limits.header_timeout,
                Phase::Idle => limits.idle_timeout,
                Phase::Busy => {
                    tokio::time::sleep(limits.header_timeout).await;
                    continue;
                }
            };
            let began = self.opened + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
            let deadline = began + limit;
            if Instant::now() >= deadline && self.phase() == phase {
                return phase;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A connection's stream, telling its [`Activity`] when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The request body took longer than the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs_f64())]
pub struct BodyTimeout(pub Duration);

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTimeout`] when it is not complete by its deadline.
    /// The timer is armed only when the body is not there at once: a small body that came with
    /// its headers costs none.
    pub struct DeadlineBody {
        #[pin]
        inner: Incoming,
        deadline: Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        limit: Duration,
        activity: Arc<Activity>,
    }
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration, activity: Arc<Activity>) -> DeadlineBody {
        activity.body_done.store(hyper::body::Body::is_end_stream(&inner), Ordering::Release);
        DeadlineBody { inner, deadline: Instant::now() + limit, timer: None, limit, activity }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_none() {
                this.activity.body_done.store(true, Ordering::Release);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = *this.deadline;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(*this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
