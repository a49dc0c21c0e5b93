//! The HTTP accept loop, with the limits `axum::serve` does not offer: a client that connects and sends
//! nothing, sends its request slowly, or opens connections by the hundred cannot hold the server's
//! resources for longer than the timeouts below, nor more than `max_connections` of them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Limits on client connections. Every value is configurable through the environment (see
/// `docs/operations.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a client has to send a complete request line and headers. It also bounds how long an idle
    /// keep-alive connection waits for its next request. `FLOWRUN_HEADER_TIMEOUT_SECS`.
    pub header_timeout: Duration,
    /// A connection that moves no byte either way for this long, while no request of it is being handled,
    /// is closed (a client sending its body or reading its answer too slowly). `FLOWRUN_IDLE_TIMEOUT_SECS`.
    pub idle_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog. `FLOWRUN_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes. `FLOWRUN_MAX_HEADER_BYTES`.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes. `FLOWRUN_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// hyper's own parser stops at this many bytes of request head; it is above
/// [`ConnectionLimits::max_header_bytes`] so that our JSON answer, not hyper's empty one, is what clients
/// normally meet.
pub(crate) const HYPER_MAX_HEAD_BYTES: usize = 256 * 1024;

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets open connections
/// finish their current request and waits for them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_sender, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: at the cap, clients queue in the backlog instead of
        // costing a task and a buffer each.
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, router, limits, stop).await;
            drop(permit);
        });
    }
    let _ = stop_sender.send(true);
    // Every connection holds a slot until it ends: all slots back means all connections are done.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked::new(stream, Arc::clone(&activity)));
    let in_flight = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let guard = InFlight::enter(Arc::clone(&in_flight));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HYPER_MAX_HEAD_BYTES)
        // One buffer per response keeps the recognition of hyper's own error answers simple.
        .writev(false);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let idle_check = Instant::now() + limits.idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(idle_check) => {
                if activity.idle_for() >= limits.idle_timeout && activity.in_flight() == 0 {
                    debug!(%peer, "closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    last_millis: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests handed to the router so far: a response head beyond this count is one hyper wrote itself.
    requests: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_millis: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request being handled; the connection is not idle meanwhile, however long the handler takes.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.requests.fetch_add(1, Ordering::SeqCst);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A socket that records when it last moved a byte, and gives hyper's own error answers a JSON body.
///
/// hyper answers a request it cannot parse (a bad request line 400, a request target over 64 KiB 414, a
/// head over its buffer 431) itself, with an empty body, before any handler could make it JSON. Such an
/// answer is the only response head written without a request handed to the router; it is replaced on
/// its way out by the same head with `{"error": reason}`.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    heads_written: u64,
    replacement: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
}

impl Tracked {
    fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        activity.touch();
        Self {
            inner,
            activity,
            heads_written: 0,
            replacement: None,
        }
    }
}

/// The status line of a final (not 1xx) response head at the start of `buf`.
fn final_response_head(buf: &[u8]) -> Option<&str> {
    if !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..end]).ok()?;
    let code = line.split(' ').nth(1)?;
    (!code.starts_with('1')).then_some(line)
}

/// The JSON answer standing in for hyper's empty one with `status_line`.
fn json_answer(status_line: &str) -> Vec<u8> {
    let reason = status_line.splitn(3, ' ').nth(2).unwrap_or("Bad Request");
    let body = serde_json::json!({ "error": reason }).to_string();
    format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for Tracked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let head = final_response_head(buf);
        if this.replacement.is_none()
            && let Some(status_line) = head
            && this.heads_written >= this.activity.requests.load(Ordering::SeqCst)
        {
            this.replacement = Some(Replacement {
                bytes: json_answer(status_line),
                written: 0,
            });
        }
        if let Some(replacement) = &mut this.replacement {
            while replacement.written < replacement.bytes.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &replacement.bytes[replacement.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        replacement.written += n;
                        this.activity.touch();
                    }
                    other => return other,
                }
            }
            // hyper closes the connection after such an answer: whatever it writes is accounted for.
            return Poll::Ready(Ok(buf.len()));
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
            if head.is_some() {
                this.heads_written += 1;
            }
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Longest request target (path and query) answered; longer ones get a JSON 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The connection limits as command-line flags and environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Seconds a client has to send its request line and headers (also the keep-alive idle time).
    #[arg(long, env = "FLOWRUN_HEADER_TIMEOUT_SECS", default_value_t = 10.0)]
    pub header_timeout_secs: f64,
    /// Seconds a connection may move no byte (while no request of it is handled) before it is closed.
    #[arg(long, env = "FLOWRUN_IDLE_TIMEOUT_SECS", default_value_t = 60.0)]
    pub idle_timeout_secs: f64,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "FLOWRUN_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Largest request line plus headers, in bytes (431 above).
    #[arg(long, env = "FLOWRUN_MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..=(HYPER_MAX_HEAD_BYTES as i64 / 2)))]
    pub max_header_bytes: u32,
    /// Largest request body, in bytes (413 above).
    #[arg(long, env = "FLOWRUN_MAX_BODY_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(0..=(64 * 1024 * 1024)))]
    pub max_body_bytes: u32,
}

/// A connection limit that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name} must be a positive number of seconds, got {value}")]
pub struct InvalidLimit {
    name: &'static str,
    value: f64,
}

fn positive_secs(name: &'static str, value: f64) -> Result<Duration, InvalidLimit> {
    Some(value)
        .filter(|v| v.is_finite() && *v > 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or(InvalidLimit { name, value })
}

impl LimitArgs {
    /// The limits, checked.
    pub fn limits(&self) -> Result<ConnectionLimits, InvalidLimit> {
        Ok(ConnectionLimits {
            header_timeout: positive_secs("FLOWRUN_HEADER_TIMEOUT_SECS", self.header_timeout_secs)?,
            idle_timeout: positive_secs("FLOWRUN_IDLE_TIMEOUT_SECS", self.idle_timeout_secs)?,
            max_connections: self.max_connections as usize,
            max_header_bytes: self.max_header_bytes as usize,
            max_body_bytes: self.max_body_bytes as usize,
        })
    }
}

/// `router` with the request-size limits of `limits` applied: oversized bodies (413), targets (414) and
/// headers (431) are refused with a JSON error before any handler runs.
pub fn with_limits(router: Router, limits: ConnectionLimits) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(limits, refuse_oversized))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
}

async fn refuse_oversized(
    axum::extract::State(limits): axum::extract::State<ConnectionLimits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let refuse =
        |status: StatusCode, message: &str| (status, crate::routes::error_body(message)).into_response();
    let target = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return refuse(StatusCode::URI_TOO_LONG, "URI Too Long");
    }
    let head: usize = target
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head > limits.max_header_bytes {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request Header Fields Too Large",
        );
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
    }
    next.run(request).await
}
