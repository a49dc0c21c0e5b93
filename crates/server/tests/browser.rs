//! The dashboard: its access rules over plain HTTP (login, session cookie, CSRF, security headers), and
//! the pages in a real headless Chromium driven through chromedriver (WebDriver).
//!
//! The browser test needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian: `apt-get install
//! chromium chromium-driver`); without them it prints `skipped: …` and passes, unless
//! `FLOWRUN_TEST_REQUIRE_BROWSER=1`. With `FLOWRUN_SCREENSHOTS=DIR` it saves PNGs of the pages there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use fantoccini::{Client, ClientBuilder, Locator};
use flowrun_app::{App, MigratePolicy, Settings, builtin_registry};
use flowrun_domain::{FlowName, NewDataFlow, RunFilter, Schedule};
use flowrun_server::ui::CONTENT_SECURITY_POLICY;
use flowrun_server::ui::session::SessionKey;
use flowrun_server::{Security, parse_networks, router};
use flowrun_test_support::{Kind, TestDatabase, fresh_database};
use serde_json::{Value, json};

const TOKEN: &str = "dashboard-test-token";

/// A server on 127.0.0.1 with a few flows, on its own SQLite database.
struct Dashboard {
    addr: SocketAddr,
    app: App,
    _db: TestDatabase,
}

impl Dashboard {
    async fn start(security: Security) -> Self {
        let db = fresh_database(Kind::Sqlite).await;
        let app = App::open(
            &Settings::new(db.url.clone()),
            builtin_registry(),
            MigratePolicy::Always,
        )
        .await
        .expect("open");
        for (name, description, configuration, every) in [
            ("noop", "does nothing", json!("Noop"), 3600),
            (
                "nap",
                "sleeps a second",
                json!({"class_name": "Sleep", "seconds": 1}),
                900,
            ),
            (
                "long-nap",
                "sleeps a minute",
                json!({"class_name": "Sleep", "seconds": 60}),
                86_400,
            ),
            (
                "broken",
                "always fails",
                json!({"class_name": "Fail", "message": "disk full on /var/backups"}),
                1800,
            ),
        ] {
            create(&app, name, description, configuration, every).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let routes = router(app.clone(), security);
        tokio::spawn(async move {
            let service = routes.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.expect("serve");
        });
        Self { addr, app, _db: db }
    }

    async fn with_token() -> Self {
        Self::start(Security {
            token: Some(TOKEN.into()),
            ..Security::default()
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn runs_of(&self, name: &str) -> Vec<flowrun_domain::RunRecord> {
        let flow = self
            .app
            .flows
            .find_by_name(name)
            .await
            .expect("read")
            .expect("the flow");
        self.app
            .runs
            .list_runs(RunFilter {
                data_flow_id: Some(flow.id),
                limit: 100,
                ..RunFilter::default()
            })
            .await
            .expect("runs")
    }
}

async fn create(app: &App, name: &str, description: &str, configuration: Value, every: u64) {
    let new = NewDataFlow::new(
        FlowName::parse(name).expect("name"),
        description,
        true,
        configuration,
        Schedule::Every(Duration::from_secs(every)),
    )
    .expect("a valid flow");
    app.flows.create(new, Utc::now()).await.expect("create");
}

// ----- plain HTTP -----

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The session cookie this answer sets, as `name=value`.
    fn session_cookie(&self) -> Option<String> {
        let set = self.header("set-cookie")?;
        set.split(';').next().map(str::to_owned)
    }

    /// The CSRF token in the page's first form.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of the value")].to_owned()
    }
}

/// One request on its own connection, run off the async threads.
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        text.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.write_all(text.as_bytes()).expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read");
        let raw = String::from_utf8(raw).expect("utf-8");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        let body = if chunked { dechunk(body) } else { body.to_owned() };
        Reply {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("request thread")
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Logs in with `token`; the session cookie as `name=value`.
async fn login(addr: SocketAddr, token: &str) -> String {
    let reply = http(
        addr,
        "POST",
        "/ui/login",
        &[],
        &format!("token={token}&next=%2Fui"),
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    reply.session_cookie().expect("a session cookie")
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_redirect_to_the_login_page_which_refuses_a_wrong_token() {
    let dashboard = Dashboard::with_token().await;
    let addr = dashboard.addr;

    let root = http(addr, "GET", "/", &[], "").await;
    assert_eq!((root.status, root.header("location")), (303, Some("/ui")));
    let page = http(addr, "GET", "/ui/flows/nap?page=1", &[], "").await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.header("location"),
        Some("/ui/login?next=%2Fui%2Fflows%2Fnap%3Fpage%3D1")
    );

    let wrong = http(addr, "POST", "/ui/login", &[], "token=not-it&next=%2Fui").await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.header("set-cookie").is_none(),
        "no session for a wrong token"
    );
    assert!(wrong.body.contains("not the one"), "{}", wrong.body);

    let right = http(
        addr,
        "POST",
        "/ui/login",
        &[],
        &format!("token={TOKEN}&next=%2Fui%2Fflows%2Fnap"),
    )
    .await;
    assert_eq!(
        (right.status, right.header("location")),
        (303, Some("/ui/flows/nap"))
    );
    let set = right.header("set-cookie").expect("a cookie");
    for part in [
        "flowrun_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set.contains(part), "{part} missing from {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP from an untrusted peer: no Secure flag in {set}"
    );

    let cookie = right.session_cookie().expect("cookie");
    let flows = http(addr, "GET", "/ui", &[("Cookie", &cookie)], "").await;
    assert_eq!(flows.status, 200);
    for name in ["noop", "nap", "long-nap", "broken"] {
        assert!(flows.body.contains(name), "{name} is listed");
    }

    let offsite = http(
        addr,
        "POST",
        "/ui/login",
        &[],
        &format!("token={TOKEN}&next=https%3A%2F%2Fevil.example%2F"),
    )
    .await;
    assert_eq!(
        offsite.header("location"),
        Some("/ui"),
        "a login never sends the browser elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_that_sends_too_many_wrong_tokens_is_refused_even_the_right_one() {
    let dashboard = Dashboard::with_token().await;
    let addr = dashboard.addr;
    for attempt in 1..=10 {
        let wrong = http(addr, "POST", "/ui/login", &[], "token=guess&next=%2Fui").await;
        assert_eq!(wrong.status, 401, "attempt {attempt}");
    }
    let right = http(
        addr,
        "POST",
        "/ui/login",
        &[],
        &format!("token={TOKEN}&next=%2Fui"),
    )
    .await;
    assert_eq!(right.status, 429, "{}", right.body);
    assert!(right.header("set-cookie").is_none(), "no session while refused");
    assert!(right.body.contains("Too many wrong tokens"), "{}", right.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_without_the_right_csrf_token_is_refused_and_changes_nothing() {
    let dashboard = Dashboard::with_token().await;
    let addr = dashboard.addr;
    let cookie = login(addr, TOKEN).await;
    let other = login(addr, TOKEN).await;
    let page = http(addr, "GET", "/ui/flows/noop", &[("Cookie", &cookie)], "").await;
    let csrf = page.csrf();
    let others_csrf = http(addr, "GET", "/ui/flows/noop", &[("Cookie", &other)], "")
        .await
        .csrf();
    assert_ne!(csrf, others_csrf, "each session has its own CSRF token");

    for body in [
        String::new(),
        "csrf=".into(),
        "csrf=0123abcd".into(),
        format!("csrf={others_csrf}"),
    ] {
        let refused = http(addr, "POST", "/ui/flows/noop/run", &[("Cookie", &cookie)], &body).await;
        assert_eq!(refused.status, 403, "body {body:?}");
        assert!(
            refused
                .body
                .contains("expired or did not come from this dashboard")
        );
        let refused = http(
            addr,
            "POST",
            "/ui/flows/noop/disable",
            &[("Cookie", &cookie)],
            &body,
        )
        .await;
        assert_eq!(refused.status, 403, "body {body:?}");
    }
    let without_session = http(addr, "POST", "/ui/flows/noop/run", &[], &format!("csrf={csrf}")).await;
    assert_eq!(
        without_session.status, 403,
        "a CSRF token is nothing without its session"
    );
    assert!(
        dashboard.runs_of("noop").await.is_empty(),
        "no refused POST started a run"
    );
    let noop = dashboard
        .app
        .flows
        .find_by_name("noop")
        .await
        .expect("read")
        .expect("flow");
    assert!(noop.enabled, "no refused POST disabled the flow");

    let accepted = http(
        addr,
        "POST",
        "/ui/flows/noop/disable",
        &[("Cookie", &cookie)],
        &format!("csrf={csrf}&back=%2Fui%2Fflows%2Fnoop"),
    )
    .await;
    assert_eq!(
        (accepted.status, accepted.header("location")),
        (303, Some("/ui/flows/noop?notice=disabled"))
    );
    let noop = dashboard
        .app
        .flows
        .find_by_name("noop")
        .await
        .expect("read")
        .expect("flow");
    assert!(!noop.enabled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cookie_with_a_bad_signature_or_past_its_expiry_is_refused() {
    let dashboard = Dashboard::with_token().await;
    let addr = dashboard.addr;
    let key = SessionKey::from_token(TOKEN);
    let now = Utc::now();
    let cookie = |value: &str| format!("flowrun_session={value}");

    let good = key.mint(now + chrono::TimeDelta::hours(1)).expect("mint");
    let ok = http(addr, "GET", "/ui", &[("Cookie", &cookie(good.value()))], "").await;
    assert_eq!(
        ok.status, 200,
        "a cookie minted with the token's key is accepted (servers sharing a token)"
    );

    let expired = key.mint(now - chrono::TimeDelta::seconds(1)).expect("mint");
    let tampered = format!("{}0", &good.value()[..good.value().len() - 1]);
    let foreign = SessionKey::from_token("another-token")
        .mint(now + chrono::TimeDelta::hours(1))
        .expect("mint");
    let stretched = good.value().replacen(
        &(now + chrono::TimeDelta::hours(1)).timestamp().to_string(),
        &(now + chrono::TimeDelta::days(365)).timestamp().to_string(),
        1,
    );
    for value in [
        expired.value(),
        &tampered,
        foreign.value(),
        &stretched,
        "v1.1.2.3",
        "",
    ] {
        let refused = http(addr, "GET", "/ui", &[("Cookie", &cookie(value))], "").await;
        assert_eq!(refused.status, 303, "cookie {value:?}");
        assert_eq!(refused.header("location"), Some("/ui/login?next=%2Fui"));
        let live = http(addr, "GET", "/ui/runs/1/live", &[("Cookie", &cookie(value))], "").await;
        assert_eq!(live.status, 401, "cookie {value:?}");
    }

    let logged_in = login(addr, TOKEN).await;
    let page = http(addr, "GET", "/ui", &[("Cookie", &logged_in)], "").await;
    let out = http(
        addr,
        "POST",
        "/ui/logout",
        &[("Cookie", &logged_in)],
        &format!("csrf={}", page.csrf()),
    )
    .await;
    assert_eq!(out.status, 303);
    assert!(
        out.header("set-cookie")
            .is_some_and(|set| set.contains("Max-Age=0"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_answers_carry_the_security_headers_and_no_inline_code() {
    let dashboard = Dashboard::with_token().await;
    let addr = dashboard.addr;
    let cookie = login(addr, TOKEN).await;
    dashboard
        .app
        .executor
        .execute(
            &dashboard
                .app
                .flows
                .find_by_name("broken")
                .await
                .expect("read")
                .expect("flow"),
        )
        .await
        .expect_err("Fail fails");
    let run = dashboard.runs_of("broken").await[0].run.id.0;
    let with = [("Cookie", cookie.as_str())];
    let answers = [
        ("/ui/login", &[][..], 200),
        ("/ui", &with[..], 200),
        ("/ui/flows/broken", &with[..], 200),
        (&format!("/ui/runs/{run}") as &str, &with[..], 200),
        ("/ui/flows/nothing-here", &with[..], 404),
        ("/ui/no/such/page", &with[..], 404),
        ("/ui?status=bogus", &with[..], 400),
        ("/ui/flows/broken", &[][..], 303),
    ];
    for (path, headers, status) in answers {
        let reply = http(addr, "GET", path, headers, "").await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert_eq!(
            reply.header("content-security-policy"),
            Some(CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(reply.header("referrer-policy"), Some("same-origin"), "{path}");
        let body = reply.body.to_ascii_lowercase();
        assert!(!body.contains("style="), "{path}: an inline style attribute");
        assert!(!body.contains("<style"), "{path}: an inline style sheet");
        assert_eq!(
            body.matches("<script").count(),
            body.matches("<script src=\"/ui/assets/app.js").count(),
            "{path}: an inline script"
        );
    }
    let failed = http(addr, "GET", &format!("/ui/runs/{run}"), &with, "").await;
    assert!(
        failed.body.contains("disk full on /var/backups"),
        "the error message is shown"
    );
    assert!(failed.body.contains("id=\"backtrace\""), "the backtrace is shown");

    let api = http(addr, "GET", "/data_flows", &with, "").await;
    assert_eq!(
        api.status, 401,
        "the JSON API still wants its header token, not the cookie"
    );
    let api = http(addr, "GET", "/data_flows", &[("X-Heartbeat-Token", TOKEN)], "").await;
    assert_eq!(api.status, 200);
    let missing = http(addr, "GET", "/nope", &[("X-Heartbeat-Token", TOKEN)], "").await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, r#"{"error":"Not Found"}"#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cookie_is_secure_only_behind_a_trusted_proxy_that_saw_https() {
    let nets = |raw: &str| parse_networks(raw).expect("networks");
    let behind = Dashboard::start(Security {
        token: Some(TOKEN.into()),
        trusted_proxies: nets("127.0.0.1"),
        ..Security::default()
    })
    .await;
    let body = format!("token={TOKEN}");
    let https = http(
        behind.addr,
        "POST",
        "/ui/login",
        &[("X-Forwarded-Proto", "https")],
        &body,
    )
    .await;
    assert!(
        https
            .header("set-cookie")
            .is_some_and(|set| set.contains("; Secure"))
    );
    let plain = http(
        behind.addr,
        "POST",
        "/ui/login",
        &[("X-Forwarded-Proto", "http")],
        &body,
    )
    .await;
    assert!(
        plain
            .header("set-cookie")
            .is_some_and(|set| !set.contains("Secure"))
    );

    let direct = Dashboard::with_token().await;
    let spoofed = http(
        direct.addr,
        "POST",
        "/ui/login",
        &[("X-Forwarded-Proto", "https")],
        &body,
    )
    .await;
    assert!(
        spoofed
            .header("set-cookie")
            .is_some_and(|set| !set.contains("Secure")),
        "X-Forwarded-Proto from an untrusted peer is ignored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_dashboard_is_open_but_its_forms_still_need_the_csrf_token() {
    let dashboard = Dashboard::start(Security::default()).await;
    let addr = dashboard.addr;
    let first = http(addr, "GET", "/ui", &[], "").await;
    assert_eq!(first.status, 200);
    assert!(!first.body.contains("Log out"), "nothing to log out of");
    let cookie = first.session_cookie().expect("a session for the CSRF token");
    let refused = http(
        addr,
        "POST",
        "/ui/flows/noop/run",
        &[],
        &format!("csrf={}", first.csrf()),
    )
    .await;
    assert_eq!(
        refused.status, 403,
        "a cross-site POST arrives without the SameSite cookie"
    );
    let accepted = http(
        addr,
        "POST",
        "/ui/flows/noop/run",
        &[("Cookie", &cookie)],
        &format!("csrf={}", first.csrf()),
    )
    .await;
    assert_eq!(accepted.status, 303, "{}", accepted.body);
    assert!(
        accepted
            .header("location")
            .is_some_and(|l| l.starts_with("/ui/flows/noop?notice=started&run="))
    );
    let login = http(addr, "GET", "/ui/login", &[], "").await;
    assert_eq!((login.status, login.header("location")), (303, Some("/ui")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ip_allow_list_applies_to_the_dashboard() {
    let dashboard = Dashboard::start(Security {
        allowed: Some(parse_networks("10.0.0.0/8").expect("networks")),
        ..Security::default()
    })
    .await;
    for path in ["/", "/ui", "/ui/login", "/ui/assets/app.css"] {
        let refused = http(dashboard.addr, "GET", path, &[], "").await;
        assert_eq!(refused.status, 403, "{path}");
    }
}

#[test]
fn the_dashboard_token_falls_back_to_the_heartbeat_token() {
    let settings = |args: &[&str]| {
        let mut all = vec!["flowrun-server", "--database-url", "memory:"];
        all.extend_from_slice(args);
        flowrun_server::ServerSettings::from_args(all).expect("settings")
    };
    let both = settings(&["--heartbeat-token", "h", "--ui-token", "u"]);
    assert_eq!(both.security.dashboard_token(), Some("u"));
    let heartbeat_only = settings(&["--heartbeat-token", "h", "--ui-token", ""]);
    assert_eq!(heartbeat_only.security.dashboard_token(), Some("h"));
}

// ----- the browser -----

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free local port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the browser test can run here; says why not, or fails when the browser is required.
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let required = std::env::var("FLOWRUN_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "FLOWRUN_TEST_REQUIRE_BROWSER=1 but {} missing (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    println!(
        "skipped: the browser test needs {} (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    false
}

/// A browser session whose window is `size` (`W,H`): screenshots show what fits in it.
async fn browser(driver: &Driver, size: &str) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={size}"), "--force-device-scale-factor=1", "--lang=en-US"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// The text of the first element matching `css`, once `ready` accepts it (the page's script may reload
/// the page meanwhile); fails after `within`.
async fn wait_for_text(client: &Client, css: &str, within: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if ready(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = client
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    panic!("`{css}` on {url} never became ready within {within:?}; last text {last:?}");
}

/// Clicks the first element matching `css` once it is there (a click may still be loading the next page).
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.find(Locator::Css(css)).await {
            Ok(element) => {
                element
                    .click()
                    .await
                    .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
                return;
            }
            Err(error) if Instant::now() > deadline => panic!("no `{css}`: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn path_of(client: &Client) -> String {
    let url = client.current_url().await.expect("url");
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Runs a few flows straight through the executor so the pages have a history to show.
async fn seed_history(dashboard: &Dashboard) {
    let script = "echo \"extracting orders since $(date -u +%FT%TZ)\"; sleep 0.$((RANDOM % 6 + 1)); \
                  if [ $((RANDOM % 5)) -eq 0 ]; then echo 'upstream returned 503' >&2; exit 3; fi; \
                  echo \"loaded $((RANDOM % 900 + 100)) rows\"";
    create(
        &dashboard.app,
        "orders-etl",
        "nightly copy of the orders table into the warehouse",
        json!({"class_name": "Command", "program": "bash", "args": ["-c", script]}),
        3600,
    )
    .await;
    let etl = dashboard
        .app
        .flows
        .find_by_name("orders-etl")
        .await
        .expect("read")
        .expect("flow");
    for _ in 0..14 {
        let _ = dashboard.app.executor.execute(&etl).await;
    }
    let noop = dashboard
        .app
        .flows
        .find_by_name("noop")
        .await
        .expect("read")
        .expect("flow");
    for _ in 0..6 {
        let _ = dashboard.app.executor.execute(&noop).await;
    }
}

async fn screenshot(client: &Client, dir: Option<&PathBuf>, name: &str) {
    if let Some(dir) = dir {
        let png = client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(dir).expect("screenshot directory");
        std::fs::write(dir.join(name), png).expect("write the screenshot");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let dashboard = Dashboard::with_token().await;
    let driver = Driver::start();
    let client = browser(&driver, "1280,900").await;
    // Close the browser whatever happened, so no Chromium outlives the test.
    let outcome =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(drive(&client, &dashboard, &driver)))
            .await;
    let _ = client.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn log_in(client: &Client, dashboard: &Dashboard) {
    client.goto(&dashboard.url("/ui/login")).await.expect("open");
    client
        .form(Locator::Css("form"))
        .await
        .expect("the login form")
        .set_by_name("token", TOKEN)
        .await
        .expect("type")
        .submit()
        .await
        .expect("submit");
    wait_for_text(client, "h1", Duration::from_secs(30), |t| t == "Flows").await;
}

async fn drive(client: &Client, dashboard: &Dashboard, driver: &Driver) {
    let long = Duration::from_secs(30);

    // A wrong token is refused; the right one leads to the flows.
    client.goto(&dashboard.url("/ui")).await.expect("open");
    assert!(
        path_of(client).await.starts_with("/ui/login"),
        "pages ask for a login first"
    );
    client
        .form(Locator::Css("form"))
        .await
        .expect("the login form")
        .set_by_name("token", "guess")
        .await
        .expect("type")
        .submit()
        .await
        .expect("submit");
    wait_for_text(client, "[role=alert]", long, |t| t.contains("not the one")).await;
    client
        .form(Locator::Css("form"))
        .await
        .expect("the login form")
        .set_by_name("token", TOKEN)
        .await
        .expect("type")
        .submit()
        .await
        .expect("submit");
    wait_for_text(client, "h1", long, |t| t == "Flows").await;
    let names = client.find_all(Locator::Css("td.name > a")).await.expect("rows");
    let mut listed = Vec::new();
    for name in names {
        listed.push(name.text().await.expect("text"));
    }
    assert_eq!(listed, ["broken", "long-nap", "nap", "noop"]);

    // Run now: the run appears on the flow's page and, followed by the script, finishes.
    client.goto(&dashboard.url("/ui/flows/nap")).await.expect("open");
    click(client, "form[action='/ui/flows/nap/run'] button").await;
    wait_for_text(client, ".notice", long, |t| t.contains("Run started")).await;
    assert_eq!(
        path_of(client).await,
        "/ui/flows/nap",
        "the script drops the notice from the address"
    );
    wait_for_text(client, "table.runs tbody tr:first-child .badge", long, |t| {
        t == "success"
    })
    .await;
    assert_eq!(dashboard.runs_of("nap").await.len(), 1);

    // A failed run shows its error and backtrace.
    client
        .goto(&dashboard.url("/ui/flows/broken"))
        .await
        .expect("open");
    click(client, "form[action='/ui/flows/broken/run'] button").await;
    click(client, ".notice a").await;
    wait_for_text(client, "#run-status .badge", long, |t| t == "failed").await;
    let message = wait_for_text(client, "pre.message", long, |t| !t.is_empty()).await;
    assert!(message.contains("disk full on /var/backups"), "{message}");
    let backtrace = wait_for_text(client, "#backtrace", long, |t| !t.is_empty()).await;
    assert!(
        backtrace.contains("disk full"),
        "the backtrace starts with the cause chain: {backtrace}"
    );

    // Cancel a running run: it ends failed, cancelled.
    client
        .goto(&dashboard.url("/ui/flows/long-nap"))
        .await
        .expect("open");
    click(client, "form[action='/ui/flows/long-nap/run'] button").await;
    click(client, ".notice a").await;
    wait_for_text(client, "#run-status .badge", long, |t| t == "running").await;
    click(client, "form[action$='/cancel'] button").await;
    wait_for_text(client, ".notice", long, |t| t.contains("Cancellation requested")).await;
    wait_for_text(client, "#run-status", long, |t| {
        t.contains("failed") && t.contains("cancelled")
    })
    .await;

    // Times are shown in the viewer's zone with UTC on hover.
    let time = client.find(Locator::Css("time")).await.expect("a time");
    let title = time.attr("title").await.expect("attr").expect("a title");
    assert!(title.ends_with(" UTC"), "{title}");

    // Screenshots of the three pages, with some history to show.
    let dir = std::env::var_os("FLOWRUN_SCREENSHOTS").map(PathBuf::from);
    if dir.is_some() {
        seed_history(dashboard).await;
        client.goto(&dashboard.url("/ui")).await.expect("open");
        wait_for_text(client, "h1", long, |t| t == "Flows").await;
        screenshot(client, dir.as_ref(), "flows.png").await;
        // A taller window for the pages that go on below the fold (a window cannot grow past the
        // size it was opened with in headless Chromium).
        let tall = browser(driver, "1280,1640").await;
        log_in(&tall, dashboard).await;
        tall.goto(&dashboard.url("/ui/flows/orders-etl"))
            .await
            .expect("open");
        wait_for_text(&tall, "h1", long, |t| t.contains("orders-etl")).await;
        assert!(
            tall.find(Locator::Css("figure.chart svg")).await.is_ok(),
            "the duration chart is drawn"
        );
        screenshot(&tall, dir.as_ref(), "flow.png").await;
        // A failed run with output if the ETL's dice gave one, else the Fail flow's.
        let etl_failed = dashboard
            .runs_of("orders-etl")
            .await
            .into_iter()
            .find(|record| record.run.status == flowrun_domain::RunStatus::Failed);
        let failed = match etl_failed {
            Some(record) => record.run.id.0,
            None => dashboard.runs_of("broken").await[0].run.id.0,
        };
        tall.goto(&dashboard.url(&format!("/ui/runs/{failed}")))
            .await
            .expect("open");
        wait_for_text(&tall, "h1", long, |t| t.contains("Run #")).await;
        screenshot(&tall, dir.as_ref(), "run-failed.png").await;
        let _ = tall.close().await;
        client.set_window_size(390, 844).await.expect("phone width");
        client.goto(&dashboard.url("/ui")).await.expect("open");
        wait_for_text(client, "h1", long, |t| t == "Flows").await;
        screenshot(client, dir.as_ref(), "flows-phone.png").await;
    }
}
