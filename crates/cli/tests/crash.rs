//! Crash safety and run control of the `flowrun` binary, driven as real child processes on every configured
//! backend: a run whose process is killed is closed as abandoned once its lease expires and frees its flow;
//! a process that stalls past its lease and wakes up late cannot overwrite the reaped run; two processes
//! never run one flow at once; a live run keeps renewing its lease, so it is never reaped; a run past its
//! timeout, cancelled from another process, or interrupted with Ctrl-C is stopped, recorded as such, and
//! frees its flow at once.
//!
//! Timing: the lease is a second or less. Every wait polls `flowrun runs --json` under a bounded deadline,
//! and every "the lease has expired" step waits a full lease after the holder stopped renewing, measured on
//! the same machine clock the binaries use — so no assertion depends on how fast the machine is.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flowrun_test_support::{Kind, TestDatabase, configured_kinds, fresh_database};
use serde_json::{Value, json};

/// The binary under test.
const FLOWRUN: &str = env!("CARGO_BIN_EXE_flowrun");
/// The lease length given to the runs under test, in seconds (`FLOWRUN_RUN_LEASE_SECS`).
const LEASE_SECS: &str = "1";
const LEASE: Duration = Duration::from_secs(1);
/// Waited on top of a lease before relying on its expiry, so the reaper's clock is strictly past it.
const LEASE_MARGIN: Duration = Duration::from_millis(300);
/// The longest any awaited state may take to appear. Generous: it bounds a failure, never a success.
const DEADLINE: Duration = Duration::from_secs(60);
/// The longest one short command (`runs`, `reap`, `flow create`, a short run) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(50);

/// One backend's fresh database plus a private working directory (so no stray `flowrun.db` appears).
struct Env {
    kind: Kind,
    url: String,
    dir: tempfile::TempDir,
    _db: TestDatabase,
}

impl Env {
    /// A fresh database on `kind`, migrated.
    fn new(kind: Kind) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let db = runtime.block_on(fresh_database(kind));
        let env = Self {
            kind,
            url: db.url.clone(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            _db: db,
        };
        if kind != Kind::Sqlite {
            env.ok(&["migrate"]);
        }
        env
    }

    fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// `flowrun --database-url URL ARGS…` with a clean environment (no inherited lease, URL or log filter).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(FLOWRUN);
        cmd.current_dir(self.dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .env_remove("FLOWRUN_RUN_LEASE_SECS")
            .env("NO_COLOR", "1")
            .arg("--database-url")
            .arg(&self.url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs a short command to its end (bounded by [`COMMAND_TIMEOUT`]).
    fn output(&self, args: &[&str]) -> Output {
        bounded_output(self.command(args), &format!("[{}] flowrun {args:?}", self.name()))
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(
            output.status.success(),
            "[{}] flowrun {args:?} failed ({}): {}",
            self.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a `--json` command that must succeed; returns its document.
    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "[{}] flowrun {args:?} printed no JSON ({e}): {stdout}",
                self.name()
            )
        })
    }

    /// Creates an enabled `Sleep` flow.
    fn create_sleep(&self, flow: &str, seconds: f64) {
        let config = json!({ "seconds": seconds }).to_string();
        self.ok(&["flow", "create", flow, "--class", "Sleep", "--config", &config]);
    }

    /// Starts `flowrun run FLOW` in the background with a lease of `lease_secs`.
    fn spawn_run(&self, flow: &str, lease_secs: &str) -> Running {
        let mut cmd = self.command(&["run", flow]);
        cmd.env("FLOWRUN_RUN_LEASE_SECS", lease_secs);
        Running::spawn(cmd, format!("[{}] flowrun run {flow}", self.name()))
    }

    /// `flowrun run FLOW --json` to its end, with a lease of `lease_secs`.
    fn run_to_end(&self, flow: &str, lease_secs: &str) -> Output {
        let mut cmd = self.command(&["run", flow, "--json"]);
        cmd.env("FLOWRUN_RUN_LEASE_SECS", lease_secs);
        bounded_output(cmd, &format!("[{}] flowrun run {flow}", self.name()))
    }

    /// The flow's runs, newest first.
    fn runs(&self, flow: &str) -> Vec<Value> {
        match self.json(&["runs", "--flow", flow, "--limit", "100", "--json"]) {
            Value::Array(runs) => runs,
            other => panic!("[{}] `runs --json` printed no array: {other}", self.name()),
        }
    }

    fn run(&self, id: i64) -> Value {
        self.json(&["runs", "show", &id.to_string(), "--json"])
    }

    fn reap(&self) -> Value {
        self.json(&["runs", "reap", "--json"])
    }

    fn flow(&self, flow: &str) -> Value {
        self.json(&["flow", "show", flow, "--json"])
    }

    /// Waits until `child`'s run of `flow` is recorded as `in_progress`; returns its id.
    fn wait_in_progress(&self, flow: &str, child: &mut Running) -> i64 {
        wait_until(&format!("[{}] a run of {flow} in progress", self.name()), || {
            if let Some(status) = child.try_wait() {
                let stderr = child.stderr();
                panic!(
                    "{} ended ({status}) before its run was seen in progress: {stderr}",
                    child.what
                );
            }
            self.runs(flow)
                .iter()
                .find(|run| run["status"] == "in_progress")
                .map(id_of)
        })
    }
}

/// A background `flowrun` process; killed (and waited for) if the test ends while it still runs, so a
/// stopped or sleeping child never outlives a failed test.
struct Running {
    child: Child,
    what: String,
    exited: Option<ExitStatus>,
}

impl Running {
    fn spawn(mut cmd: Command, what: String) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child,
            what,
            exited: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("cannot poll {}: {e}", self.what));
        }
        self.exited
    }

    /// Waits (bounded) for the process to end.
    fn wait(&mut self) -> ExitStatus {
        let what = format!("{} to exit", self.what);
        wait_until(&what, || self.try_wait())
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) with `kill(1)`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Stops the process with `SIGSTOP`, at a moment it holds no write lock on an SQLite file: a process
    /// stopped inside a write (a lease renewal takes well under a millisecond) would keep every other
    /// writer, the reaper included, waiting for its busy timeout. Server databases need no care: their
    /// statements commit on the server whatever happens to the client.
    fn stop(&self) {
        for _ in 0..100 {
            self.signal("STOP");
            wait_until(&format!("{} to be stopped", self.what), || {
                self.is_stopped().then_some(())
            });
            if !self.holds_write_lock() {
                return;
            }
            self.signal("CONT");
            sleep(Duration::from_millis(5));
        }
        panic!("{} held an SQLite write lock at every stop", self.what);
    }

    /// Whether the process is in the stopped state (`T` in `/proc/PID/stat`).
    fn is_stopped(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
    }

    /// Whether the process holds a POSIX write lock (SQLite takes one on the `-shm` file to write).
    fn holds_write_lock(&self) -> bool {
        let pid = self.pid().to_string();
        std::fs::read_to_string("/proc/locks")
            .unwrap_or_default()
            .lines()
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // `N: POSIX ADVISORY WRITE PID …`; waiters (`N: -> …`) hold nothing.
                fields.get(3) == Some(&"WRITE") && fields.get(4) == Some(&pid.as_str())
            })
    }

    /// What the process wrote to stderr (read once it ended; its output is a line or two).
    fn stderr(&mut self) -> String {
        read_all(self.child.stderr.take())
    }

    fn stdout(&mut self) -> String {
        read_all(self.child.stdout.take())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.try_wait_quietly().is_none() {
            // SIGKILL ends a stopped process too.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    fn try_wait_quietly(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }
}

fn read_all(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_string(&mut text);
    }
    text
}

/// Runs `cmd` to its end and collects its output, killing it and failing after [`COMMAND_TIMEOUT`].
fn bounded_output(mut cmd: Command, what: &str) -> Output {
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(COMMAND_TIMEOUT) {
        Ok(output) => output.unwrap_or_else(|e| panic!("cannot collect the output of {what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("{what} did not finish within {COMMAND_TIMEOUT:?}");
        }
    }
}

/// Polls `probe` every [`POLL`] until it yields a value; fails after [`DEADLINE`].
fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        sleep(POLL);
    }
}

fn id_of(run: &Value) -> i64 {
    run["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("a run without an id: {run}"))
}

fn time(value: &Value, field: &str) -> DateTime<Utc> {
    let text = value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a timestamp in {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{field}` = {text} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {value}"))
}

/// Checks that run `id` is the `failed`, abandoned run held by process `pid`; returns it.
fn assert_abandoned(env: &Env, id: i64, pid: u32) -> Value {
    let name = env.name();
    let run = env.run(id);
    assert_eq!(run["status"], "failed", "[{name}] the abandoned run: {run}");
    let ended = time(&run, "ended_at");
    assert!(ended >= time(&run, "started_at"), "[{name}] {run}");
    let message = text(&run, "error_message");
    assert!(
        message.starts_with("run abandoned: its lease held by ")
            && message.contains(&format!(":{pid} expired at "))
            && message.contains("and was not renewed; closed by the reaper at "),
        "[{name}] the message names the abandoned run's owner (host:{pid}) and its lease expiry: {message}"
    );
    run
}

/// Reaps once and returns how many runs were closed.
fn reaped(env: &Env) -> u64 {
    let report = env.reap();
    let keys: Vec<&str> = report
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        ["reaped"],
        "[{}] reap prints {{\"reaped\": n}}: {report}",
        env.name()
    );
    report["reaped"]
        .as_u64()
        .unwrap_or_else(|| panic!("[{}] `reaped` is not a count: {report}", env.name()))
}

// ---------------------------------------------------------------------------------------------------------

#[test]
fn a_killed_run_is_reaped_after_its_lease_and_its_flow_runs_again() {
    for kind in configured_kinds() {
        killed_run_is_reaped(&Env::new(kind));
    }
}

fn killed_run_is_reaped(env: &Env) {
    let name = env.name();
    // Long enough to be killed mid-run, short enough for the run afterwards to finish quickly.
    env.create_sleep("crashy", 2.0);
    let mut child = env.spawn_run("crashy", LEASE_SECS);
    let id = env.wait_in_progress("crashy", &mut child);
    child.signal("KILL");
    let status = child.wait();
    assert_eq!(status.signal(), Some(9), "[{name}] killed by SIGKILL: {status}");
    // The process is gone: its last renewal set the lease to at most now + LEASE.
    sleep(LEASE + LEASE_MARGIN);
    assert_eq!(
        env.runs("crashy")[0]["status"],
        "in_progress",
        "[{name}] nothing closes a dead run but a reaper"
    );
    assert_eq!(reaped(env), 1, "[{name}] the first reap closes the dead run");
    assert_eq!(reaped(env), 0, "[{name}] a reaped run is reaped once");

    let run = assert_abandoned(env, id, child.pid());
    // What the operator sees.
    let shown = env.ok(&["runs", "show", &id.to_string()]);
    assert!(
        shown.contains("failed") && shown.contains(text(&run, "error_message")),
        "[{name}] `runs show` prints the status and the abandoned message:\n{shown}"
    );
    let flow = env.flow("crashy");
    assert_eq!(flow["last_run_status"], "failed", "[{name}] {flow}");
    assert_eq!(flow["last_run_at"], run["ended_at"], "[{name}] {flow}");

    // The flow is free again: the next run starts and succeeds.
    let output = env.run_to_end("crashy", LEASE_SECS);
    assert!(
        output.status.success(),
        "[{name}] the flow runs again after the reap: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again: Value = serde_json::from_slice(&output.stdout).expect("`run --json` prints the run");
    assert_eq!(again["status"], "success", "[{name}] {again}");
    assert!(id_of(&again) > id, "[{name}] a new run: {again}");
    assert_eq!(env.flow("crashy")["last_run_status"], "success", "[{name}]");
    assert_eq!(
        env.run(id),
        run,
        "[{name}] the abandoned run is left as the reaper closed it"
    );
}

#[test]
fn a_manual_run_of_a_flow_held_by_an_expired_run_reaps_it_first() {
    for kind in configured_kinds() {
        manual_run_reaps_first(&Env::new(kind));
    }
}

fn manual_run_reaps_first(env: &Env) {
    let name = env.name();
    env.create_sleep("held", 0.5);
    let mut child = env.spawn_run("held", LEASE_SECS);
    let id = env.wait_in_progress("held", &mut child);
    // Stopped rather than killed, so the run is still held (not finished) when the next run starts.
    child.stop();
    sleep(LEASE + LEASE_MARGIN);
    let output = env.run_to_end("held", LEASE_SECS);
    assert!(
        output.status.success(),
        "[{name}] a manual run reaps the expired holder and runs (exit {}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_abandoned(env, id, child.pid());
    child.signal("KILL");
    child.wait();
    let runs = env.runs("held");
    let statuses: Vec<Option<&str>> = runs.iter().map(|run| run["status"].as_str()).collect();
    assert_eq!(statuses, [Some("success"), Some("failed")], "[{name}] {runs:?}");
}

#[test]
fn a_stalled_process_that_wakes_after_its_run_was_reaped_cannot_overwrite_it() {
    for kind in configured_kinds() {
        stalled_process_is_refused(&Env::new(kind));
    }
}

fn stalled_process_is_refused(env: &Env) {
    let name = env.name();
    // The flow would succeed: its late outcome is the one that must not replace the reaper's `failed`.
    env.create_sleep("stalls", 3.0);
    let mut child = env.spawn_run("stalls", LEASE_SECS);
    let id = env.wait_in_progress("stalls", &mut child);
    child.stop();
    assert_eq!(
        env.run(id)["status"],
        "in_progress",
        "[{name}] the process was stopped mid-run (raise the Sleep if this machine is this slow)"
    );
    // A stopped process renews nothing: a lease later its run has expired.
    sleep(LEASE + LEASE_MARGIN);
    assert_eq!(reaped(env), 1, "[{name}] the stalled run is reaped");
    let reaped_run = assert_abandoned(env, id, child.pid());
    assert_eq!(env.flow("stalls")["last_run_status"], "failed", "[{name}]");

    child.signal("CONT");
    let status = child.wait();
    let stderr = child.stderr();
    let stdout = child.stdout();
    assert_eq!(
        status.code(),
        Some(3),
        "[{name}] the late process exits 3 (its outcome could not be recorded): {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "run {id} succeeded after it had been closed as abandoned"
        )) && stderr.contains("the late outcome was not recorded"),
        "[{name}] the refusal is reported: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "[{name}] one line on stderr: {stderr}"
    );
    assert!(stdout.is_empty(), "[{name}] nothing on stdout: {stdout}");

    assert_eq!(
        env.run(id),
        reaped_run,
        "[{name}] the late outcome did not overwrite the reaped run"
    );
    let flow = env.flow("stalls");
    assert_eq!(flow["last_run_status"], "failed", "[{name}] {flow}");
    assert_eq!(flow["last_run_at"], reaped_run["ended_at"], "[{name}] {flow}");
    assert_eq!(env.runs("stalls").len(), 1, "[{name}] no other run was written");
}

#[test]
fn processes_started_together_never_run_one_flow_at_once() {
    for kind in configured_kinds() {
        one_run_at_a_time(&Env::new(kind));
    }
}

fn one_run_at_a_time(env: &Env) {
    const ROUNDS: usize = 2;
    const PROCESSES: usize = 3;
    let name = env.name();
    // Long enough that processes started together all try to start while the winner runs.
    env.create_sleep("solo", 2.0);
    for round in 0..ROUNDS {
        let mut children: Vec<Running> = (0..PROCESSES)
            .map(|_| env.spawn_run("solo", LEASE_SECS))
            .collect();
        let mut winners = Vec::new();
        let mut refusals = Vec::new();
        for child in &mut children {
            let status = child.wait();
            let stderr = child.stderr();
            match status.code() {
                Some(0) => winners.push(child.stdout()),
                Some(4) => refusals.push(stderr),
                _ => panic!("[{name}] round {round}: `run` exited {status}: {stderr}"),
            }
        }
        assert_eq!(
            (winners.len(), refusals.len()),
            (1, PROCESSES - 1),
            "[{name}] round {round}: exactly one process runs the flow, the others exit 4: {refusals:?}"
        );
        let winner = env
            .runs("solo")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("[{name}] round {round}: no run recorded"));
        assert_eq!(winner["status"], "success", "[{name}] {winner}");
        for stderr in &refusals {
            let since = stderr
                .split("already running since ")
                .nth(1)
                .and_then(|rest| rest.split(" (run ").next())
                .unwrap_or_else(|| panic!("[{name}] the refusal says since when: {stderr}"));
            assert!(
                stderr.contains(&format!(
                    "data flow `solo` is already running since {since} (run {})",
                    id_of(&winner)
                )),
                "[{name}] the refusal names the live run: {stderr}"
            );
            let since = DateTime::parse_from_rfc3339(since)
                .unwrap_or_else(|e| panic!("[{name}] `{since}` is not RFC 3339: {e}"));
            assert_eq!(since, time(&winner, "started_at"), "[{name}] {stderr}");
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "[{name}] one line: {stderr}"
            );
        }
    }
    let runs = env.runs("solo");
    assert_eq!(runs.len(), ROUNDS, "[{name}] refused runs leave no row: {runs:?}");
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = runs
        .iter()
        .map(|run| (time(run, "started_at"), time(run, "ended_at")))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "[{name}] runs overlap in time: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn a_live_run_renews_its_short_lease_and_is_never_reaped() {
    for kind in configured_kinds() {
        live_run_is_never_reaped(&Env::new(kind));
    }
}

fn live_run_is_never_reaped(env: &Env) {
    const SHORT_LEASE_SECS: &str = "0.6";
    const SHORT_LEASE: Duration = Duration::from_millis(600);
    let name = env.name();
    env.create_sleep("steady", 3.0);
    let mut child = env.spawn_run("steady", SHORT_LEASE_SECS);
    let id = env.wait_in_progress("steady", &mut child);
    let seen = Instant::now();
    let mut reaps = 0;
    let mut reaps_after_first_lease = 0;
    while child.try_wait().is_none() {
        assert_eq!(
            reaped(env),
            0,
            "[{name}] reap {reaps} closed a live run (its lease was not renewed)"
        );
        reaps += 1;
        // Counts only reaps made while the run was still in progress, more than a lease after it started:
        // without renewal they would have closed it.
        if seen.elapsed() > SHORT_LEASE + LEASE_MARGIN && env.run(id)["status"] == "in_progress" {
            reaps_after_first_lease += 1;
        }
        assert!(
            seen.elapsed() < DEADLINE,
            "[{name}] the run did not end within {DEADLINE:?}"
        );
    }
    let status = child.wait();
    assert!(
        status.success(),
        "[{name}] the long run succeeds ({status}): {}",
        child.stderr()
    );
    assert!(
        reaps_after_first_lease >= 1,
        "[{name}] the run ended before its first lease expired; nothing was tested ({reaps} reaps)"
    );
    let run = env.run(id);
    assert_eq!(run["status"], "success", "[{name}] {run}");
    assert_eq!(run["error_message"], Value::Null, "[{name}] {run}");
    assert_eq!(reaped(env), 0, "[{name}] a finished run is not reaped");
}

// ---------------------------------------------------------------------------------------------------------
// Run control: timeouts, cancel from another process, Ctrl-C.

#[test]
fn a_flow_past_its_timeout_is_stopped_recorded_as_timeout_and_free_at_once() {
    for kind in configured_kinds() {
        let env = Env::new(kind);
        let name = env.name();
        env.ok(&[
            "flow",
            "create",
            "hangs",
            "--class",
            "Sleep",
            "--config",
            r#"{"seconds": 30}"#,
            "--timeout",
            "1s",
        ]);
        assert_eq!(env.flow("hangs")["timeout_secs"], 1, "[{name}]");
        let began = Instant::now();
        let first = env.run_to_end("hangs", "60");
        assert_eq!(
            first.status.code(),
            Some(1),
            "[{name}] {}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "[{name}] stopped after {:?}",
            began.elapsed()
        );
        let run: Value = serde_json::from_slice(&first.stdout).expect("the run as JSON");
        assert_eq!(
            (run["status"].as_str(), run["failure_kind"].as_str()),
            (Some("failed"), Some("timeout")),
            "[{name}] {run}"
        );
        assert!(
            text(&run, "error_message").starts_with("timed out: the flow was stopped after 1s"),
            "[{name}] {run}"
        );
        // Free at once: the next run starts (and times out again) instead of exiting 4.
        assert_eq!(env.run_to_end("hangs", "60").status.code(), Some(1), "[{name}]");
        let timed_out = env.json(&["runs", "--failure-kind", "timeout", "--json"]);
        assert_eq!(
            timed_out.as_array().map(Vec::len),
            Some(2),
            "[{name}] {timed_out}"
        );
        assert_eq!(
            env.json(&["runs", "--failure-kind", "panic", "--json"]),
            json!([]),
            "[{name}]"
        );
    }
}

#[test]
fn a_run_cancelled_from_another_process_stops_within_seconds() {
    for kind in configured_kinds() {
        let env = Env::new(kind);
        let name = env.name();
        env.create_sleep("long", 60.0);
        let mut running = env.spawn_run("long", "60");
        let id = env.wait_in_progress("long", &mut running);
        // Give the flow time to yield once, so its watches are armed.
        sleep(Duration::from_millis(300));
        let asked = Instant::now();
        let cancelled = env.json(&["runs", "cancel", &id.to_string(), "--json"]);
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "[{name}] took {:?}",
            asked.elapsed()
        );
        assert_eq!(
            (cancelled["status"].as_str(), cancelled["failure_kind"].as_str()),
            (Some("failed"), Some("cancelled")),
            "[{name}] {cancelled}"
        );
        assert!(
            text(&cancelled, "error_message").starts_with("cancelled by cli "),
            "[{name}] {cancelled}"
        );
        assert!(
            cancelled["cancel_requested_at"].is_string(),
            "[{name}] {cancelled}"
        );
        let status = running.wait();
        assert_eq!(
            status.code(),
            Some(1),
            "[{name}] the cancelled `flowrun run` reports a failed run"
        );
        let again = env.output(&["runs", "cancel", &id.to_string()]);
        assert_eq!(
            again.status.code(),
            Some(2),
            "[{name}] cancelling a finished run is bad input"
        );
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("already ended"),
            "[{name}]"
        );
        let missing = env.output(&["runs", "cancel", "999999"]);
        assert_eq!(missing.status.code(), Some(2), "[{name}]");
    }
}

#[test]
fn ctrl_c_on_flowrun_run_records_the_run_interrupted_and_frees_the_flow_at_once() {
    for kind in configured_kinds() {
        let env = Env::new(kind);
        let name = env.name();
        env.create_sleep("short", 2.0);
        let mut running = env.spawn_run("short", "60");
        let id = env.wait_in_progress("short", &mut running);
        running.signal("INT");
        let status = running.wait();
        assert_eq!(status.code(), Some(130), "[{name}] {}", running.stderr());
        let run = env.run(id);
        assert_eq!(
            (run["status"].as_str(), run["failure_kind"].as_str()),
            (Some("failed"), Some("interrupted")),
            "[{name}] {run}"
        );
        let next = env.run_to_end("short", "60");
        assert!(
            next.status.success(),
            "[{name}] the flow is free at once: {}",
            String::from_utf8_lossy(&next.stderr)
        );

        let mut terminated = env.spawn_run("short", "60");
        env.wait_in_progress("short", &mut terminated);
        terminated.signal("TERM");
        assert_eq!(terminated.wait().code(), Some(143), "[{name}]");
    }
}

#[test]
fn a_failing_flow_with_two_retries_runs_three_attempts_across_processes() {
    for kind in configured_kinds() {
        let env = Env::new(kind);
        let name = env.name();
        env.ok(&[
            "flow",
            "create",
            "flaky",
            "--class",
            "Fail",
            "--every",
            "1h",
            "--retries",
            "2",
            "--retry-backoff",
            "1s",
        ]);
        let flow = env.flow("flaky");
        assert_eq!(
            (flow["retries"].as_u64(), flow["retry_backoff_secs"].as_u64()),
            (Some(2), Some(1)),
            "[{name}]"
        );
        // Each heartbeat is a process of its own: a pending retry is stored, not slept on in memory.
        let first = env.json(&["heartbeat", "--json"]);
        assert_eq!(first["triggered"], json!(["flaky"]), "[{name}] {first}");
        let retry_at = time(&env.flow("flaky"), "retry_at");
        assert_eq!(
            env.json(&["heartbeat", "--json"])["flows_triggered"],
            0,
            "[{name}] not before its backoff"
        );
        for wait in [Duration::from_millis(1300), Duration::from_millis(2400)] {
            sleep(wait);
            let cycle = env.json(&["heartbeat", "--json"]);
            assert_eq!(
                cycle["triggered"],
                json!(["flaky"]),
                "[{name}] a retry is due: {cycle}"
            );
        }
        sleep(Duration::from_millis(4500));
        assert_eq!(
            env.json(&["heartbeat", "--json"])["flows_triggered"],
            0,
            "[{name}] retries used up"
        );
        let runs = env.runs("flaky");
        let attempts: Vec<(u64, &str, &str)> = runs
            .iter()
            .rev()
            .map(|run| {
                (
                    run["attempt"].as_u64().unwrap_or(0),
                    run["trigger"].as_str().unwrap_or("?"),
                    run["status"].as_str().unwrap_or("?"),
                )
            })
            .collect();
        assert_eq!(
            attempts,
            [
                (1, "schedule", "failed"),
                (2, "retry", "failed"),
                (3, "retry", "failed")
            ],
            "[{name}] {runs:?}"
        );
        let second_started = time(&runs[1], "started_at");
        assert!(
            second_started >= retry_at,
            "[{name}] the retry waited for its backoff"
        );
        let flow = env.flow("flaky");
        assert_eq!(flow["last_run_status"], "failed", "[{name}]");
        assert_eq!(flow["retry_at"], Value::Null, "[{name}] nothing pending");
    }
}
