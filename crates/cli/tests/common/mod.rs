//! Helpers the `flowrun` binary's test files share: the binary in a clean environment, its JSON, and its
//! refusals. Each test file is its own crate and uses only some of them.
#![allow(dead_code)]

use std::path::Path;

use assert_cmd::Command;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub fn flowrun(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("flowrun").expect("binary built");
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("FLOWRUN_RUN_LEASE_SECS")
        .env_remove("FLOWRUN_CONCURRENCY")
        .env_remove("FLOWRUN_NOTIFY_URL")
        .env_remove("FLOWRUN_PUBLIC_URL")
        .env("NO_COLOR", "1");
    cmd
}

pub fn json(dir: &Path, args: &[&str]) -> Value {
    let output = flowrun(dir).args(args).output().expect("runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{args:?} prints one JSON document: {e}"))
}

/// Asserts that `args` exit 2 with one line on stderr containing `says`.
pub fn refused(dir: &Path, args: &[&str], says: &str) {
    let output = flowrun(dir).args(args).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: one line: {stderr}"
    );
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

pub fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("an RFC 3339 time: {value}"))
}
