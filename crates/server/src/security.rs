//! Who may call the API: the client address (believing `X-Forwarded-For` only from trusted proxies), the
//! IP allow-list and the heartbeat token.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use subtle::ConstantTimeEq;
use tracing::warn;

use crate::routes::error_body;

/// The header that carries the heartbeat token.
pub const TOKEN_HEADER: &str = "x-heartbeat-token";

/// Access rules. Everything is off by default, as in the original service.
#[derive(Clone, Default)]
pub struct Security {
    /// When set, every route but `/healthz` and the dashboard's needs this value in `X-Heartbeat-Token`.
    pub token: Option<String>,
    /// The token the dashboard's login page asks for (`FLOWRUN_UI_TOKEN`); when unset, [`Security::token`]
    /// is asked for; when both are unset the dashboard is open.
    pub ui_token: Option<String>,
    /// When set, only clients in these networks are served (others get 403).
    pub allowed: Option<Vec<IpNet>>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// Shows whether each token is set, never its value: settings end up in `{:?}` output.
impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |token: &Option<String>| token.as_ref().map(|_| "<set>");
        f.debug_struct("Security")
            .field("token", &set(&self.token))
            .field("ui_token", &set(&self.ui_token))
            .field("allowed", &self.allowed)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|net| net.contains(&ip))
}

impl Security {
    /// The client's address: the peer, unless the peer is a trusted proxy, in which case the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. `None` when a believed header is
    /// malformed, so an allow-list refuses rather than guesses.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        if !contains(&self.trusted_proxies, peer) {
            return Some(peer);
        }
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let text = value.to_str().ok()?;
            for hop in text.split(',') {
                hops.push(hop.trim().parse::<IpAddr>().ok()?.to_canonical());
            }
        }
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            client = hop;
            if !contains(&self.trusted_proxies, hop) {
                break;
            }
        }
        Some(client)
    }

    /// The dashboard's token: [`Security::ui_token`], else the heartbeat token.
    pub fn dashboard_token(&self) -> Option<&str> {
        self.ui_token.as_deref().or(self.token.as_deref())
    }

    /// Whether the request reached the proxy in front of us over https: `X-Forwarded-Proto: https`, believed
    /// only from a trusted proxy (the server itself speaks plain HTTP).
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        contains(&self.trusted_proxies, peer.to_canonical())
            && headers
                .get("x-forwarded-proto")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }

    fn token_matches(&self, token: &str, headers: &HeaderMap) -> bool {
        headers
            .get(TOKEN_HEADER)
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes())))
    }
}

/// Middleware: allow-list (403), then token (401). `/healthz` is open so load balancers can probe it; the
/// dashboard's pages (see [`crate::ui`]) pass the allow-list here and check their own session cookie
/// instead of the header. Rejections are logged with the source address and never the token.
pub async fn guard(
    State(security): State<std::sync::Arc<Security>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let client = security.client_ip(peer.ip(), request.headers());
    let source = client.map_or_else(
        || format!("{} (malformed X-Forwarded-For)", peer.ip()),
        |ip| ip.to_string(),
    );
    let path = request.uri().path().to_owned();
    if let Some(allowed) = &security.allowed
        && !client.is_some_and(|ip| contains(allowed, ip))
    {
        warn!(source_ip = %source, peer = %peer.ip(), %path, "rejected: address not in FLOWRUN_ALLOWED_IPS");
        if crate::ui::is_ui_path(&path) {
            return crate::ui::forbidden_page();
        }
        return (StatusCode::FORBIDDEN, error_body("Forbidden")).into_response();
    }
    if crate::ui::is_ui_path(&path) {
        return next.run(request).await;
    }
    if let Some(token) = &security.token
        && !security.token_matches(token, request.headers())
    {
        let reason = if request.headers().contains_key(TOKEN_HEADER) {
            "wrong"
        } else {
            "missing"
        };
        warn!(source_ip = %source, %path, "rejected: {reason} X-Heartbeat-Token");
        return (StatusCode::UNAUTHORIZED, error_body("Unauthorized")).into_response();
    }
    next.run(request).await
}

/// Parses a comma-separated list of IPs and CIDRs (`10.0.0.0/8, 192.168.1.7, ::1`).
pub fn parse_networks(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{item}` is not an IP address or CIDR"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(raw: &str) -> Vec<IpNet> {
        parse_networks(raw).expect("valid networks")
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).expect("header"));
        headers
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let security = Security {
            trusted_proxies: nets("10.0.0.1"),
            ..Security::default()
        };
        assert_eq!(
            security.client_ip(ip("203.0.113.9"), &xff("10.9.9.9")),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let security = Security {
            trusted_proxies: nets("10.0.0.0/24"),
            ..Security::default()
        };
        let headers = xff("1.1.1.1, 198.51.100.4, 10.0.0.7");
        assert_eq!(
            security.client_ip(ip("10.0.0.1"), &headers),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(
            security.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(security.client_ip(ip("10.0.0.1"), &xff("not-an-ip")), None);
    }

    #[test]
    fn networks_accept_ips_and_cidrs_and_name_bad_entries() {
        assert_eq!(nets("10.0.0.0/8, 127.0.0.1,::1").len(), 3);
        assert_eq!(
            parse_networks("10.0.0.0/8,nope"),
            Err("`nope` is not an IP address or CIDR".into())
        );
        assert!(
            contains(&nets("127.0.0.1"), ip("::ffff:127.0.0.1")),
            "IPv4-mapped peers match"
        );
    }
}
