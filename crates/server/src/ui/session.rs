//! Dashboard sessions: a cookie signed with HMAC-SHA256 under a key derived from the UI token, and the
//! CSRF token tied to it.
//!
//! The cookie value is `v1.<expires, unix seconds>.<nonce, hex>.<signature, hex>`. The expiry is inside the
//! signed text, so a cookie kept past its `Max-Age` is still refused. The key is derived from the token
//! alone, so servers sharing a token accept each other's sessions and changing the token ends them all.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "flowrun_session";

/// How long a session lasts after logging in.
pub const SESSION_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(12);

/// The version tag at the start of every cookie value, so the format can change without misreading.
const VERSION: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// The secret that signs sessions and CSRF tokens.
#[derive(Clone)]
pub struct SessionKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// A session whose cookie was checked (or just minted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The cookie value, as the browser sends it back.
    value: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

impl SessionKey {
    /// The key of servers configured with `token`. A label keeps it distinct from any other use of the
    /// same token.
    pub fn from_token(token: &str) -> Self {
        let mut mac = mac_with(token.as_bytes());
        mac.update(b"flowrun dashboard session key v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// A key of this process alone, for a dashboard without a token: its sessions exist only to carry
    /// the CSRF token, and end when the process does.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut key = [0; 32];
        getrandom::fill(&mut key)?;
        Ok(Self { key })
    }

    /// A new session that expires at `expires_at`.
    pub fn mint(&self, expires_at: DateTime<Utc>) -> Result<Session, getrandom::Error> {
        let mut nonce = [0; 16];
        getrandom::fill(&mut nonce)?;
        let body = format!("{VERSION}.{}.{}", expires_at.timestamp(), hex(&nonce));
        let signature = self.sign(&body);
        Ok(Session {
            value: format!("{body}.{signature}"),
            expires_at: DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at),
        })
    }

    /// The session a cookie value stands for, if its signature is this key's and it has not expired at
    /// `now`.
    pub fn verify(&self, value: &str, now: DateTime<Utc>) -> Option<Session> {
        let (body, signature) = value.rsplit_once('.')?;
        let expected = self.sign(body);
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some(VERSION), Some(expires), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expires_at = DateTime::from_timestamp(expires.parse().ok()?, 0)?;
        (expires_at > now).then(|| Session {
            value: value.to_owned(),
            expires_at,
        })
    }

    /// The CSRF token of `session`: only this key can make it, and it is worthless with another session.
    pub fn csrf_token(&self, session: &Session) -> String {
        self.sign(&format!("csrf.{}", session.value))
    }

    /// Whether `given` is the CSRF token of `session`, compared in constant time.
    pub fn csrf_matches(&self, session: &Session, given: &str) -> bool {
        bool::from(self.csrf_token(session).as_bytes().ct_eq(given.as_bytes()))
    }

    fn sign(&self, text: &str) -> String {
        let mut mac = mac_with(&self.key);
        mac.update(text.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

impl Session {
    /// The cookie value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

fn mac_with(key: &[u8]) -> HmacSha256 {
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

/// Whether a token typed at the login page is `token`. Both are hashed first, so the comparison takes the
/// same time whatever their lengths.
pub fn token_matches(token: &str, given: &str) -> bool {
    bool::from(Sha256::digest(token.as_bytes()).ct_eq(&Sha256::digest(given.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("time")
    }

    #[test]
    fn a_minted_session_verifies_until_it_expires() {
        let key = SessionKey::from_token("t0ken");
        let session = key.mint(at(2_000)).expect("mint");
        assert_eq!(key.verify(session.value(), at(1_999)), Some(session.clone()));
        assert_eq!(key.verify(session.value(), at(2_000)), None);
    }

    #[test]
    fn a_session_from_another_token_or_with_a_changed_expiry_is_refused() {
        let key = SessionKey::from_token("t0ken");
        let session = key.mint(at(2_000)).expect("mint");
        assert_eq!(
            SessionKey::from_token("other").verify(session.value(), at(0)),
            None
        );
        let stretched = session.value().replacen("2000", "9999", 1);
        assert_eq!(key.verify(&stretched, at(0)), None);
        assert_eq!(key.verify("garbage", at(0)), None);
        assert_eq!(key.verify("", at(0)), None);
    }

    #[test]
    fn servers_sharing_a_token_accept_each_others_sessions() {
        let session = SessionKey::from_token("shared").mint(at(2_000)).expect("mint");
        assert!(
            SessionKey::from_token("shared")
                .verify(session.value(), at(0))
                .is_some()
        );
    }

    #[test]
    fn a_csrf_token_belongs_to_one_session() {
        let key = SessionKey::from_token("t0ken");
        let one = key.mint(at(2_000)).expect("mint");
        let two = key.mint(at(2_000)).expect("mint");
        assert!(key.csrf_matches(&one, &key.csrf_token(&one)));
        assert!(!key.csrf_matches(&two, &key.csrf_token(&one)));
        assert!(!key.csrf_matches(&one, ""));
    }

    #[test]
    fn the_login_token_must_match_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("s3cret", "s3cret "));
    }
}
