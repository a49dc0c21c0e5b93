//! `flowrun heartbeat`: one scheduler cycle, every due flow once, waiting for each run.

use flowrun_app::App;
use flowrun_app::json::heartbeat_json;

use crate::exit::{Failure, Outcome};
use crate::output::{self, Style, print_json};

/// Runs one cycle and reports it.
pub(crate) async fn heartbeat(app: &App, json: bool) -> Outcome {
    let report = app
        .scheduler
        .run_cycle()
        .await
        .map_err(|e| Failure::Infra(e.into()))?;
    if json {
        print_json(&heartbeat_json(&report));
    } else {
        output::print_heartbeat(&report, &Style::stdout());
    }
    Ok(())
}
