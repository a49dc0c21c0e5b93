//! `flowrun run NAME`: execute a flow now, recording the run; a signal records it interrupted first.

use std::io::IsTerminal;

use anyhow::anyhow;
use flowrun_app::App;
use flowrun_app::json::run_json;
use flowrun_domain::{ExecuteError, FlowFailure, RunProgress, RunStatus};

use crate::database::find_flow;
use crate::exit::{Failure, Outcome};
use crate::output::{self, Style, print_json};

/// Waits for Ctrl-C or SIGTERM; returns the exit code that reports it (128 + the signal's number).
async fn interrupt_signal() -> u8 {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => 130,
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
                143
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<u8>();
    tokio::select! {
        code = ctrl_c => code,
        code = terminate => code,
    }
}

/// `flowrun run NAME`: executes the flow now and reports its run; exit 1 when it failed.
pub(crate) async fn run_command(app: &App, name: &str, json: bool) -> Outcome {
    let flow = find_flow(app, name).await?;
    // Ctrl-C or SIGTERM stops the flow and records its run as interrupted before the process exits, so
    // the flow is free at once instead of held until its lease expires.
    let (controller, signal) = flowrun_domain::ShutdownController::new();
    let app = app.clone().with_shutdown(signal);
    let (interrupted_tx, interrupted) = tokio::sync::oneshot::channel();
    let listener = tokio::spawn(async move {
        let code = interrupt_signal().await;
        controller.abort();
        let _ = interrupted_tx.send(code);
    });
    let progress = RunProgress::default();
    let spinner = (!json && std::io::stderr().is_terminal())
        .then(|| output::Spinner::start(flow.name.to_string(), progress.clone()));
    let result = app.executor.clone().with_progress(progress).execute(&flow).await;
    listener.abort();
    // A signal that came after the run ended changes nothing: report the run as it ended.
    let stopped = matches!(
        &result,
        Err(ExecuteError::Failed {
            failure: FlowFailure::Interrupted,
            ..
        } | ExecuteError::ShuttingDown { .. })
    );
    if let (true, Ok(code)) = (stopped, interrupted.await) {
        if let Some(spinner) = spinner {
            spinner.stop().await;
        }
        let run = result.as_ref().err().and_then(ExecuteError::run_id);
        return Err(Failure::Interrupted {
            message: match run {
                Some(id) => format!(
                    "interrupted: run {id} of {} was stopped and recorded as interrupted",
                    flow.name
                ),
                None => format!("interrupted before a run of {} started", flow.name),
            },
            code,
        });
    }
    if let Some(spinner) = spinner {
        spinner.stop().await;
    }
    let style = Style::stdout();
    match result {
        Ok(run) => {
            if json {
                print_json(&run_json(&run, flow.name.as_str()));
            } else {
                println!(
                    "{} run {} of {} in {}",
                    style.status(RunStatus::Success),
                    run.id,
                    flow.name,
                    output::human_duration(run.duration().unwrap_or_default())
                );
            }
            Ok(())
        }
        Err(ExecuteError::Failed { run, failure }) => {
            if json {
                print_json(&run_json(&run, flow.name.as_str()));
            }
            Err(Failure::FlowFailed(format!(
                "run {} of {} failed after {}: {failure} (details: flowrun runs show {})",
                run.id,
                flow.name,
                output::human_duration(run.duration().unwrap_or_default()),
                run.id
            )))
        }
        Err(error @ ExecuteError::AlreadyRunning { .. }) => Err(Failure::AlreadyRunning(error.to_string())),
        Err(error) => {
            let message = error.to_string();
            let run = error
                .run_id()
                .filter(|id| !message.contains(&format!("run {id}")))
                .map(|id| format!(" (run {id})"))
                .unwrap_or_default();
            Err(Failure::Infra(anyhow!("{message}{run}")))
        }
    }
}
