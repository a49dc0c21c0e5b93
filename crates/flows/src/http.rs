//! The `Http` class: one HTTP request, its status and the head of its answer recorded.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowrun_domain::{Flow, FlowClass, FlowError, RunContext};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;
use url::Url;

/// How much of a response body the run's output keeps.
pub const BODY_HEAD_BYTES: usize = 4 * 1024;

/// What replaces the password of a URL in messages and output.
const MASK: &str = "<masked>";

/// The settings of [`Http`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HttpSettings {
    /// The request method.
    #[serde(default = "default_method")]
    pub method: String,
    /// The URL (`http` or `https`). A password in it is sent, but shown as `<masked>` everywhere.
    pub url: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body: a string is sent as it is; any other JSON value is sent as JSON (with
    /// `Content-Type: application/json` unless `headers` sets one); none when absent or null.
    #[serde(default)]
    pub body: Option<Value>,
    /// The statuses that make the run a success; any 2xx when absent.
    #[serde(default)]
    pub expect_status: Option<Vec<u16>>,
    /// Seconds the whole request may take, from connecting to reading the body's head.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 0))]
    pub timeout_secs: f64,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_timeout() -> f64 {
    30.0
}

/// Makes one HTTP request. Records `METHOD url -> status` and the first [`BODY_HEAD_BYTES`] of the
/// response body in the run's output; an unexpected status, a refused connection, a DNS, TLS or timeout
/// error fails the run saying which. TLS is rustls, verifying against the operating system's roots.
#[derive(Debug)]
pub struct Http {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Value>,
    expect_status: Option<Vec<StatusCode>>,
    timeout: Duration,
}

impl FlowClass for Http {
    const NAME: &'static str = "Http";
    type Settings = HttpSettings;

    fn build(settings: HttpSettings) -> Result<Self, String> {
        let method = Method::from_bytes(settings.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("`method`: `{}` is not an HTTP method", settings.method))?;
        // A reference to a variable this process does not have is left in place when a configuration is
        // only checked; the URL is then checked when the flow runs.
        if !settings.url.contains("${env:") {
            parse_url(&settings.url).map_err(|e| format!("`url`: {e}"))?;
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`headers`: `{name}` is not a header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("`headers.{name}`: not a valid header value"))?;
            headers.insert(header, value);
        }
        let expect_status = settings
            .expect_status
            .map(|codes| {
                codes
                    .into_iter()
                    .map(|code| {
                        StatusCode::from_u16(code)
                            .map_err(|_| format!("`expect_status`: {code} is not an HTTP status"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let seconds = settings.timeout_secs;
        let timeout = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| format!("`timeout_secs` must be a positive number, got {seconds}"))?;
        Ok(Self {
            method,
            url: settings.url,
            headers,
            body: settings.body,
            expect_status,
            timeout,
        })
    }
}

/// Why an [`Http`] run failed. Callers can downcast a run's error to it. URLs in it are masked.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum HttpError {
    /// The URL does not parse, or is not http(s).
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, masked.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The server refused the connection.
    #[error("connection refused to {url}")]
    ConnectionRefused {
        /// The URL, masked.
        url: String,
    },
    /// The host name did not resolve.
    #[error("DNS lookup failed for {url}: {reason}")]
    Dns {
        /// The URL, masked.
        url: String,
        /// The resolver's reason.
        reason: String,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS error with {url}: {reason}")]
    Tls {
        /// The URL, masked.
        url: String,
        /// rustls's reason.
        reason: String,
    },
    /// The request took longer than `timeout_secs`.
    #[error("timed out after {seconds} s: {method} {url}")]
    Timeout {
        /// The method.
        method: String,
        /// The URL, masked.
        url: String,
        /// The configured timeout.
        seconds: f64,
    },
    /// Any other failure to send the request or read the answer.
    #[error("{method} {url} failed: {reason}")]
    Request {
        /// The method.
        method: String,
        /// The URL, masked.
        url: String,
        /// The cause chain.
        reason: String,
    },
    /// The answer's status is not one of the expected ones.
    #[error("unexpected status {status} (expected {expected}) from {method} {url}")]
    UnexpectedStatus {
        /// The method.
        method: String,
        /// The URL, masked.
        url: String,
        /// The status and its reason (`503 Service Unavailable`).
        status: String,
        /// The expected statuses (`2xx`, or a list).
        expected: String,
    },
    /// The run was asked to stop before the answer came.
    #[error("stopped before {method} {url} was answered")]
    Stopped {
        /// The method.
        method: String,
        /// The URL, masked.
        url: String,
    },
}

fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| e.to_string())?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(format!("scheme `{other}` is not http or https")),
    }
}

/// `url` with its password shown as `<masked>`; a URL that does not parse keeps only its scheme when it
/// has an `@` (where its password would end is anyone's guess).
pub fn mask_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_none() {
                return parsed.to_string();
            }
            // `<` and `>` would be percent-encoded inside a URL: set a placeholder and swap it afterwards.
            const PLACEHOLDER: &str = "FLOWRUNMASKEDPASSWORD";
            if parsed.set_password(Some(PLACEHOLDER)).is_err() {
                return format!("{}:{MASK}", parsed.scheme());
            }
            parsed.to_string().replacen(PLACEHOLDER, MASK, 1)
        }
        Err(_) if url.contains('@') => match url.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:{MASK}"),
            None => MASK.to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

impl Http {
    fn expected(&self) -> String {
        match &self.expect_status {
            None => "2xx".to_owned(),
            Some(codes) => codes
                .iter()
                .map(|c| c.as_u16().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn accepts(&self, status: StatusCode) -> bool {
        match &self.expect_status {
            None => status.is_success(),
            Some(codes) => codes.contains(&status),
        }
    }

    async fn request(&self, context: &RunContext) -> Result<(), HttpError> {
        let masked = mask_url(&self.url);
        let method = self.method.to_string();
        let url = parse_url(&self.url).map_err(|reason| HttpError::InvalidUrl {
            url: masked.clone(),
            reason,
        })?;
        let client = client(self.timeout).map_err(|error| HttpError::Request {
            method: method.clone(),
            url: masked.clone(),
            reason: format!("could not set up the HTTP client: {error}"),
        })?;
        let mut request = client
            .request(self.method.clone(), url)
            .headers(self.headers.clone());
        match &self.body {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => request = request.body(text.clone()),
            Some(json) => {
                if !self.headers.contains_key(CONTENT_TYPE) {
                    request = request.header(CONTENT_TYPE, "application/json");
                }
                request = request.body(json.to_string());
            }
        }
        let failed = |error: reqwest::Error| self.classify(error, &method, &masked);
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status();
        context.log(format!("{method} {masked} -> {status}"));
        let mut head = Vec::new();
        let mut cut = false;
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            let room = BODY_HEAD_BYTES - head.len();
            head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                cut = true;
                break;
            }
        }
        if !head.is_empty() {
            let text = String::from_utf8_lossy(&head);
            context.log(text.trim_end_matches('\n'));
            if cut {
                context.log(format!("… (body cut at {BODY_HEAD_BYTES} bytes)"));
            }
        }
        if self.accepts(status) {
            Ok(())
        } else {
            Err(HttpError::UnexpectedStatus {
                method,
                url: masked,
                status: status.to_string(),
                expected: self.expected(),
            })
        }
    }

    /// Says which of the usual failures a request error is.
    fn classify(&self, error: reqwest::Error, method: &str, url: &str) -> HttpError {
        // reqwest's text names the request URL, which may hold a password.
        let error = error.without_url();
        let url = url.to_owned();
        let method = method.to_owned();
        if error.is_timeout() {
            return HttpError::Timeout {
                method,
                url,
                seconds: self.timeout.as_secs_f64(),
            };
        }
        let chain: Vec<&(dyn StdError + 'static)> = std::iter::successors(
            Some(&error as &(dyn StdError + 'static)),
            |e: &&(dyn StdError + 'static)| (*e).source(),
        )
        .collect();
        if let Some(tls) = chain.iter().find_map(|e| tls_error(*e)) {
            return HttpError::Tls {
                url,
                reason: tls.to_string(),
            };
        }
        let refused = chain.iter().any(|e| {
            std::iter::successors(e.downcast_ref::<std::io::Error>(), |io| {
                io.get_ref()?.downcast_ref::<std::io::Error>()
            })
            .any(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        if refused {
            return HttpError::ConnectionRefused { url };
        }
        let reason = chain
            .iter()
            .skip(1)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        if error.is_connect() && chain.iter().any(|e| e.to_string().starts_with("dns error")) {
            return HttpError::Dns { url, reason };
        }
        let reason = if reason.is_empty() {
            error.to_string()
        } else {
            format!("{error}: {reason}")
        };
        HttpError::Request { method, url, reason }
    }
}

/// The rustls error inside `error`, which arrives wrapped in `io::Error`s (whose `source` skips what they
/// wrap, so the cause chain alone does not reach it).
fn tls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: &(dyn StdError + 'static) = error;
    loop {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = current.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// A client with rustls on the ring provider and the operating system's roots.
fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| e.to_string())?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .user_agent(concat!("flowrun/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.without_url().to_string())
}

#[async_trait]
impl Flow for Http {
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
        let context = &*context;
        tokio::select! {
            result = self.request(context) => result.map_err(FlowError::new),
            () = context.cancelled() => Err(FlowError::new(HttpError::Stopped {
                method: self.method.to_string(),
                url: mask_url(&self.url),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_url("https://user:s3cret@example.com/x?y=1"),
            "https://user:<masked>@example.com/x?y=1"
        );
        assert_eq!(mask_url("http://example.com/"), "http://example.com/");
        assert_eq!(mask_url("http://user:pw@[::1"), "http:<masked>");
    }
}
