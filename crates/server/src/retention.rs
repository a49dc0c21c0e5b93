//! Keeping the run history tidy: with `FLOWRUN_RETENTION` set, the server deletes finished runs older than
//! that, once shortly after it starts and then about once an hour, on a task of its own. Pruning deletes in
//! small batches (see `RunRepository::prune`), so it never holds up running flows.

use std::time::Duration;

use flowrun_domain::{FlowManagement, ManagementError, PruneRequest, format_duration, parse_duration};
use tokio::sync::watch;
use tracing::{info, warn};

/// Environment variable with the age past which finished runs are deleted (`30d`, `12h`, …).
pub const RETENTION_ENV: &str = "FLOWRUN_RETENTION";

/// How long after start-up the first prune runs: late enough not to compete with start-up, early enough
/// that a restart does not postpone it by an hour.
pub const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(10);

/// How often the server prunes after the first time.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Parses `FLOWRUN_RETENTION` (`90`, `90s`, `15m`, `1h30m`, `30d`); the error names the variable.
pub fn parse_retention(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| format!("invalid {RETENTION_ENV} `{raw}`: {e}"))
}

/// Deletes the finished runs older than `retention` once, logging how many went.
pub async fn prune_once(management: &FlowManagement, retention: Duration) -> Result<u64, ManagementError> {
    let deleted = management
        .prune_runs(PruneRequest {
            older_than: retention,
            keep_last: None,
            flow: None,
        })
        .await?;
    info!(
        deleted,
        retention = %format_duration(retention),
        "retention: deleted {deleted} finished runs older than {}",
        format_duration(retention)
    );
    Ok(deleted)
}

/// Prunes after `first_after`, then every `every`, until `stop`. A failed prune is logged and tried again
/// at the next turn: a database hiccup must not stop the retention for good.
pub async fn retention_loop(
    management: FlowManagement,
    retention: Duration,
    first_after: Duration,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    info!(
        retention = %format_duration(retention),
        "retention enabled: finished runs older than {} are deleted about once an hour",
        format_duration(retention)
    );
    let mut wait = first_after;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if let Err(error) = prune_once(&management, retention).await {
            warn!(%error, "retention: pruning old runs failed; trying again later");
        }
        wait = every;
    }
}
