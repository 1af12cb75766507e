//! The HTTP server: hyper's HTTP/1 connections, each bounded in time and in header size, and a
//! bound on how many are open at once.
//!
//! hyper's own header-read timeout also starts when a keep-alive connection goes idle, so it
//! cannot tell a client that is slow to send a request from a connection kept open between
//! requests; a load balancer needs the second to be long (Google's global external Application
//! Load Balancer keeps idle connections to backends for 600 s and asks backends to keep theirs
//! longer). So each connection's clock is kept here instead:
//! - a new connection must send a complete request head within HEADER_READ_TIMEOUT;
//! - between requests, a connection may stay silent for IDLE_TIMEOUT; once the next request's
//!   first byte arrives, its head must be complete within HEADER_READ_TIMEOUT;
//! - while a request is being answered, REQUEST_TIMEOUT (in the router) bounds it.
//!
//! Past MAX_CONNECTIONS open connections no more are accepted: new ones wait in the listen
//! backlog until one closes, while those already open are served as before.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, serve::Listener};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};
use tower::ServiceExt as _;

/// The bounds on each connection and on their number.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From a connection's opening, or its next request's first byte, to that request's head
    /// being complete.
    pub header_read_timeout: Duration,
    /// How long a connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers); larger ones are answered 431.
    pub max_header_bytes: usize,
    /// Largest number of open connections.
    pub max_connections: usize,
}

/// hyper refuses a read buffer smaller than this (`MINIMUM_MAX_BUFFER_SIZE`, hyper 1.12.0
/// `src/proto/h1/io.rs`).
const HYPER_MINIMUM_BUFFER_BYTES: usize = 8192;

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets requests in
/// flight finish, closes every other connection at once (idle ones, and those still sending a
/// request head: a stalled client cannot hold the shutdown) and returns when all are closed.
pub async fn serve(
    mut listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            // axum's `Listener` retries on errors of one connection and backs off on others
            // (such as running out of file descriptors).
            (stream, _peer) = Listener::accept(&mut listener) => stream,
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            limits,
            stopping.clone(),
            slot,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    // Each open connection holds a slot until it closes.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let answering = activity.request_started();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                drop(answering);
                response
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Kept here (see the module's comment); hyper's would also cut idle connections short.
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(HYPER_MINIMUM_BUFFER_BYTES));
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    // One timer per connection, set again only when it fires: then at the connection's deadline
    // when that is near, else a check period ahead. Every deadline a connection gets (a request
    // head's first byte, an answer sent) is at least a check period after the moment it gets
    // it, so the timer never fires late, and requests cost no timer of their own. Re-arming it
    // on every change of the connection's state woke the connection's task from within itself
    // three times per request, and each such wake-up also woke another worker thread of the
    // runtime to look for work (docs/service.md).
    let check_period = limits.header_read_timeout.min(limits.idle_timeout);
    let timer = tokio::time::sleep_until(activity.deadline(&limits).unwrap_or_else(Instant::now));
    tokio::pin!(timer);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                break;
            }
            _ = stopping.changed(), if !shutting_down => {
                shutting_down = true;
                // hyper closes an idle connection now and one answering a request after its
                // response, but would wait for a request head being sent.
                connection.as_mut().graceful_shutdown();
                if activity.sending_head() {
                    break;
                }
            }
            () = timer.as_mut() => {
                let now = Instant::now();
                let next_check = now + check_period;
                match activity.deadline(&limits) {
                    Some(due) if due <= now => {
                        tracing::debug!("connection closed: no complete request head in time");
                        break;
                    }
                    Some(due) => timer.as_mut().reset(due.min(next_check)),
                    None => timer.as_mut().reset(next_check),
                }
            }
        }
    }
}

/// What a connection is doing, as far as its timeouts care.
struct Activity {
    state: Mutex<State>,
}

struct State {
    /// Requests being answered (one at a time in HTTP/1).
    answering: usize,
    /// When the first byte of a request head not yet complete arrived.
    head_started: Option<Instant>,
    /// When the connection opened or last finished answering.
    idle_since: Instant,
    /// Whether a request was answered on this connection.
    answered_any: bool,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(State {
                answering: 0,
                head_started: None,
                idle_since: Instant::now(),
                answered_any: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain values, consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is to be closed unless something happens first; `None` while a
    /// request is being answered.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let state = self.state();
        if state.answering > 0 {
            return None;
        }
        Some(match state.head_started {
            Some(started) => started + limits.header_read_timeout,
            None if state.answered_any => state.idle_since + limits.idle_timeout,
            None => state.idle_since + limits.header_read_timeout,
        })
    }

    fn sending_head(&self) -> bool {
        let state = self.state();
        state.answering == 0 && state.head_started.is_some()
    }

    fn bytes_received(&self) {
        let mut state = self.state();
        if state.answering == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
        }
    }

    fn request_started(self: &Arc<Self>) -> Answering {
        {
            let mut state = self.state();
            state.answering += 1;
            state.head_started = None;
        }
        Answering(Arc::clone(self))
    }
}

/// A request being answered; dropping it (answered, or cancelled) makes the connection idle.
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.answering = state.answering.saturating_sub(1);
        state.idle_since = Instant::now();
        state.answered_any = true;
    }
}

/// A connection's socket that reports the bytes it receives to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
