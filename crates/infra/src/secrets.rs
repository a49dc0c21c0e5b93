//! Keeping database passwords out of every message: masked URLs for display, and scrubbing of driver text
//! that may repeat the URL or the password whatever the driver decides to say.

use url::Url;

/// What a secret is replaced with in every message.
pub const MASK: &str = "<masked>";

/// Query-string parameters whose value is a secret (compared without regard to case).
const SECRET_PARAMS: [&str; 6] = ["password", "pass", "pwd", "sslpassword", "secret", "token"];

fn is_secret_param(key: &str) -> bool {
    SECRET_PARAMS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// `url` with its password, and the value of every password-like query parameter (`?password=…`), shown
/// as `<masked>`, for errors and logs.
///
/// A URL that does not parse keeps only its scheme when it could hold a secret: where the password ends
/// is then anyone's guess.
pub fn mask_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => mask_parsed(parsed),
        Err(_) if url.contains('@') || !secrets_in(url).is_empty() => match url.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:{MASK}"),
            None => MASK.to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// A webhook URL as it may be shown: scheme, host and port, the rest `<masked>`. Incoming-webhook URLs carry
/// their secret in the path or query, so all of it goes.
pub fn mask_webhook(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => {
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let host = parsed.host_str().unwrap_or_default();
            let rest = if parsed.path() == "/" && parsed.query().is_none() {
                String::new()
            } else {
                format!("/{MASK}")
            };
            format!("{}://{host}{port}{rest}", parsed.scheme())
        }
        Err(_) => MASK.to_owned(),
    }
}

fn mask_parsed(mut parsed: Url) -> String {
    // `<` and `>` would be percent-encoded inside a URL; put a placeholder in and swap it afterwards.
    const PLACEHOLDER: &str = "FLOWRUNMASKEDSECRET";
    if parsed.password().is_some() && parsed.set_password(Some(PLACEHOLDER)).is_err() {
        return format!("{}:{MASK}", parsed.scheme());
    }
    if parsed.query_pairs().any(|(key, _)| is_secret_param(&key)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_param(&key) {
                    PLACEHOLDER.to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string().replace(PLACEHOLDER, MASK)
}

/// Every secret `url` holds, raw and percent-decoded, longest first: the password of its user part and
/// the values of password-like query parameters. Works on URLs that do not parse, where a driver is most
/// likely to repeat them.
fn secrets_in(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        // The password may itself hold `@`, `/`, `?` or `#`: every `@` could end the user part.
        for (at, _) in rest.match_indices('@') {
            if let Some((_, password)) = rest[..at].split_once(':') {
                found.push(password.to_owned());
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split(['&', '#']) {
            if let Some((key, value)) = pair.split_once('=')
                && is_secret_param(key)
            {
                found.push(value.to_owned());
            }
        }
    }
    let decoded: Vec<String> = found
        .iter()
        .filter_map(|s| percent_decode(s))
        .filter(|d| !found.contains(d))
        .collect();
    found.extend(decoded);
    found.retain(|s| !s.is_empty());
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found.dedup();
    found
}

fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') && !text.contains('+') {
        return None;
    }
    let decoded: String = url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())?;
    Some(decoded)
}

/// `text` (a driver's message, say) with the URL `url` shown masked and every secret of `url` replaced by
/// `<masked>`, whatever form the text repeats it in.
pub fn scrub(text: &str, url: &str) -> String {
    let masked = mask_url(url);
    let text = if url.is_empty() {
        text.to_owned()
    } else {
        text.replace(url, &masked)
    };
    // A password that is also the scheme or the user name (`postgres://postgres:postgres@…`) is left
    // alone: masking every `postgres` would both mangle the text and tell the reader what the password is.
    let visible: Vec<String> = Url::parse(url)
        .map(|u| vec![u.scheme().to_owned(), u.username().to_owned()])
        .unwrap_or_default();
    let secrets: Vec<String> = secrets_in(url)
        .into_iter()
        .filter(|s| !visible.contains(s))
        .collect();
    // The masked URL is already safe: scrub around it, so its scheme and user name stay readable.
    let scrub_part = |part: &str| {
        secrets
            .iter()
            .fold(part.to_owned(), |out, secret| out.replace(secret.as_str(), MASK))
    };
    if masked.is_empty() {
        return scrub_part(&text);
    }
    text.split(masked.as_str())
        .map(scrub_part)
        .collect::<Vec<_>>()
        .join(&masked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKY: [&str; 4] = [
        "postgres://app:s3cr#tPW@127.0.0.1:5432/db",
        "postgres://app:s3cr/tPW@127.0.0.1:5432/db",
        "postgres://app:s3cr?tPW@127.0.0.1:5432/db",
        "mysql://app:p@ss:w0rd@127.0.0.1:3306/db",
    ];

    #[test]
    fn passwords_in_the_user_part_are_masked() {
        assert_eq!(
            mask_url("postgres://u:secret@h:5432/db"),
            "postgres://u:<masked>@h:5432/db"
        );
        assert_eq!(
            mask_url("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(mask_url("sqlite://flowrun.db"), "sqlite://flowrun.db");
        assert!(!mask_url("postgres://u:se%cret@[bad/db").contains("se%cret"));
    }

    #[test]
    fn passwords_in_the_query_string_are_masked() {
        let masked = mask_url("postgres://app@127.0.0.1/db?sslmode=disable&password=HUNTER2");
        assert_eq!(
            masked,
            "postgres://app@127.0.0.1/db?sslmode=disable&password=<masked>"
        );
        assert!(!mask_url("postgres://app@127.0.0.1/db?PassWord=HUNTER2").contains("HUNTER2"));
    }

    #[test]
    fn urls_that_do_not_parse_keep_no_secret() {
        for url in TRICKY {
            let masked = mask_url(url);
            assert!(!masked.contains("tPW") && !masked.contains("w0rd"), "{masked}");
        }
        assert!(!mask_url("postgres://h:99999999/db?password=HUNTER2").contains("HUNTER2"));
    }

    #[test]
    fn driver_text_loses_the_url_and_the_password_in_any_form() {
        let passwords = ["s3cr#tPW", "s3cr/tPW", "s3cr?tPW", "p@ss:w0rd"];
        for (url, password) in TRICKY.into_iter().zip(passwords) {
            let text = format!("invalid port number in {url}; password {password} rejected");
            let clean = scrub(&text, url);
            assert!(!clean.contains(password), "{clean}");
        }
        let url = "postgres://app:s3cr%23tPW@127.0.0.1/db";
        assert!(!scrub("password s3cr#tPW rejected", url).contains("s3cr#tPW"));
        let url = "postgres://app@127.0.0.1/db?password=HUNTER2";
        assert_eq!(scrub("bad HUNTER2", url), "bad <masked>");
    }

    #[test]
    fn the_masked_url_stays_readable() {
        let url = "postgres://app:pg@127.0.0.1/db";
        assert_eq!(
            scrub(&format!("cannot connect to {url}: pg said no"), url),
            "cannot connect to postgres://app:<masked>@127.0.0.1/db: <masked> said no"
        );
        let url = "postgres://postgres:postgres@127.0.0.1/db";
        assert_eq!(
            scrub(&format!("{url}: role \"postgres\""), url),
            "postgres://postgres:<masked>@127.0.0.1/db: role \"postgres\""
        );
    }
}
