//! The JSON shapes of the public contract (`--json` in the CLI, the HTTP API), in one place so every
//! binary prints the same documents. Timestamps are RFC 3339 in UTC; absent values are `null`.

use chrono::{DateTime, Utc};
use flowrun_domain::{DataFlow, DataFlowRun, HeartbeatReport, RunEnd, Schedule};
use serde_json::{Value, json};

/// A timestamp as RFC 3339 UTC (`…Z`), or `null`.
pub fn timestamp(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| {
        Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    })
}

/// The contract's flow shape.
pub fn flow_json(flow: &DataFlow) -> Value {
    json!({
        "id": flow.id.0,
        "name": flow.name.as_str(),
        "description": flow.description,
        "enabled": flow.enabled,
        "class_name": flow.flow_class().ok(),
        "configuration": masked(&flow.configuration),
        "run_interval_secs": interval_secs(&flow.schedule),
        "schedule": schedule_json(&flow.schedule),
        "next_run_at": timestamp(flow.next_run_at),
        "timeout_secs": flow.timeout.map(|t| t.as_secs()),
        "retries": flow.retry.retries(),
        "retry_backoff_secs": flow.retry.backoff().as_secs(),
        "retry_at": timestamp(flow.pending_retry.map(|retry| retry.at)),
        "last_run_at": timestamp(flow.last_run_at),
        "last_run_status": flow.last_run_status.map(|s| s.as_str()),
        "state": flow.state,
        "created_at": timestamp(Some(flow.created_at)),
        "updated_at": timestamp(Some(flow.updated_at)),
    })
}

/// Seconds between runs of an interval schedule; `null` for cron.
fn interval_secs(schedule: &Schedule) -> Value {
    match schedule {
        Schedule::Every(every) => Value::from(every.as_secs()),
        Schedule::Cron(_) => Value::Null,
    }
}

/// `{"every_secs": n}` or `{"cron": expression, "tz": zone}`.
pub fn schedule_json(schedule: &Schedule) -> Value {
    match schedule {
        Schedule::Every(every) => json!({ "every_secs": every.as_secs() }),
        Schedule::Cron(cron) => json!({ "cron": cron.expression(), "tz": cron.time_zone() }),
    }
}

/// The contract's run shape.
pub fn run_json(run: &DataFlowRun, flow_name: &str) -> Value {
    json!({
        "id": run.id.0,
        "data_flow_id": run.data_flow_id.0,
        "flow_name": flow_name,
        "status": run.status.as_str(),
        "started_at": timestamp(Some(run.started_at)),
        "ended_at": timestamp(run.ended_at),
        "duration_ms": run.duration().map(|d| d.num_milliseconds()),
        "error_message": run.error_message,
        "error_backtrace": run.error_backtrace,
        "attempt": run.attempt,
        "trigger": run.trigger.as_str(),
        "failure_kind": run.failure_kind.map(|kind| kind.as_str()),
        "cancel_requested_at": timestamp(run.cancel_requested.as_ref().map(|request| request.at)),
        "cancel_requested_by": run.cancel_requested.as_ref().map(|request| request.by.as_str()),
        "output": run.output,
    })
}

/// A configuration as it may be shown: every string that is a URL with a password (or a secret query
/// parameter) has it masked, a webhook (`notify`) shows only its scheme and host, and the text of a key
/// that names a secret (`password`, `Authorization`, `api_key`, `…_token`) is masked whole. `${env:…}`
/// references are stored unresolved, so they show as written.
pub fn masked(configuration: &Value) -> Value {
    match configuration {
        Value::String(text) if text.contains("://") => Value::String(crate::mask_url(text)),
        Value::Array(items) => Value::Array(items.iter().map(masked).collect()),
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, value)| match value {
                    Value::String(text) if text.contains("${env:") => (key.clone(), value.clone()),
                    Value::String(url) if key == flowrun_domain::NOTIFY_KEY => {
                        (key.clone(), Value::String(flowrun_infra::mask_webhook(url)))
                    }
                    Value::String(_) if is_secret_key(key) => {
                        (key.clone(), Value::String(flowrun_infra::MASK.to_owned()))
                    }
                    _ => (key.clone(), masked(value)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether a configuration key names a secret (`password`, `db_password`, `Authorization`, `X-Api-Key`,
/// `auth_token`, …), compared without case, `-` or `_`: its text value is shown masked.
fn is_secret_key(key: &str) -> bool {
    const ENDINGS: [&str; 8] = [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "cookie",
        "privatekey",
    ];
    let key: String = key
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    key == "pwd" || key == "pass" || ENDINGS.iter().any(|ending| key.ends_with(ending))
}

/// The contract's heartbeat shape.
pub fn heartbeat_json(report: &HeartbeatReport) -> Value {
    json!({
        "flows_due": report.flows_due,
        "flows_triggered": report.flows_triggered,
        "flows_failed": report.flows_failed,
        "timestamp": timestamp(Some(report.timestamp)),
        "triggered": report.triggered.iter().map(|run| run.flow.as_str()).collect::<Vec<_>>(),
        "runs": report.triggered.iter().map(|run| json!({
            "flow": run.flow.as_str(),
            "run_id": run.run_id.0,
            "status": match &run.end {
                None => "in_progress",
                Some(RunEnd::Succeeded) => "success",
                Some(RunEnd::Failed(_)) => "failed",
            },
            "error_message": match &run.end {
                Some(RunEnd::Failed(message)) => Some(message.as_str()),
                _ => None,
            },
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_show_urls_without_their_passwords() {
        let shown = masked(&json!({
            "class_name": "SqlCopy",
            "source": "postgres://copier:s3cret@db.example:5432/app",
            "sink": "${env:SINK_URL}",
            "args": ["--url", "mysql://root:hunter2@127.0.0.1/x", "plain"],
            "batch_size": 500,
        }));
        let text = shown.to_string();
        assert!(!text.contains("s3cret") && !text.contains("hunter2"), "{text}");
        assert_eq!(shown["sink"], "${env:SINK_URL}");
        assert_eq!(shown["args"][2], "plain");
        assert_eq!(shown["batch_size"], 500);
    }

    #[test]
    fn a_flow_webhook_shows_only_its_scheme_and_host() {
        let shown = masked(&json!({
            "class_name": "Noop",
            "notify": "https://hooks.slack.example:8443/services/T0/B1/SECRETPART?x=1",
        }));
        assert_eq!(shown["notify"], "https://hooks.slack.example:8443/<masked>");
        let by_reference = masked(&json!({"notify": "${env:TEAM_WEBHOOK}"}));
        assert_eq!(by_reference["notify"], "${env:TEAM_WEBHOOK}");
    }

    #[test]
    fn values_under_secret_keys_are_masked_but_references_show_as_written() {
        let shown = masked(&json!({
            "class_name": "Http",
            "url": "https://api.example/x",
            "headers": {"Authorization": "Bearer abc123", "X-Api-Key": "k-999", "Accept": "text/plain",
                "X-Token": "${env:API_TOKEN}"},
            "db_password": "hunter2",
            "max_tokens": 5,
        }));
        let text = shown.to_string();
        assert!(
            !text.contains("abc123") && !text.contains("k-999") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(shown["headers"]["Accept"], "text/plain");
        assert_eq!(shown["headers"]["X-Token"], "${env:API_TOKEN}");
        assert_eq!(shown["max_tokens"], 5);
        assert_eq!(shown["url"], "https://api.example/x");
    }
}
