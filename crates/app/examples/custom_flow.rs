//! Registering your own flow class: a flow that counts words in a file, run through the real executor on an
//! SQLite database in a temporary directory.
//!
//! Run with `cargo run -p flowrun-app --example custom_flow`.

use std::path::PathBuf;

use async_trait::async_trait;
use flowrun_app::{App, MigratePolicy, Settings, builtin_registry};
use flowrun_domain::{Flow, FlowClass, FlowError, FlowName, NewDataFlow, RunContext, RunInterval};
use serde_json::json;

/// The settings of [`WordCount`]: `{"path": "..."}`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct WordCountSettings {
    /// The file whose words are counted.
    path: PathBuf,
}

/// Counts the words of a file.
struct WordCount {
    path: PathBuf,
}

impl FlowClass for WordCount {
    const NAME: &'static str = "WordCount";
    type Settings = WordCountSettings;

    fn build(settings: WordCountSettings) -> Result<Self, String> {
        Ok(Self { path: settings.path })
    }
}

#[async_trait]
impl Flow for WordCount {
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
        // `?` turns any error into a FlowError with a backtrace taken here.
        let text = tokio::fs::read_to_string(&self.path).await?;
        // Recorded as the run's output.
        context.log(format!(
            "{} has {} words",
            self.path.display(),
            text.split_whitespace().count()
        ));
        Ok(())
    }
}

/// A time for people (`2026-11-27 12:00:00.123 UTC`), or `not yet` when there is none.
fn or_not_yet(at: Option<impl std::fmt::Display>) -> String {
    at.map_or_else(|| "not yet".to_owned(), |at| at.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("flowrun-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("input.txt");
    std::fs::write(&input, "flowrun keeps an exact record of every run")?;

    let mut registry = builtin_registry();
    registry.register::<WordCount>();
    let settings = Settings::new(format!("sqlite://{}/flowrun.db", dir.display()));
    let app = App::open(&settings, registry, MigratePolicy::Always).await?;

    let new = NewDataFlow::new(
        FlowName::parse("count-words")?,
        "counts the words of a file",
        true,
        json!({"class_name": "WordCount", "path": input}),
        RunInterval::from_secs(600)?.schedule(),
    )?;
    let flow = app.flows.create(new, app.clock.now()).await?;
    let run = app.executor.execute(&flow).await?;
    println!(
        "run {} ended as {} at {}; its output: {}",
        run.id,
        run.status,
        or_not_yet(run.ended_at),
        run.output.trim_end()
    );

    let missing = NewDataFlow::new(
        FlowName::parse("count-missing")?,
        "",
        true,
        json!({"class_name": "WordCount", "path": dir.join("missing.txt")}),
        RunInterval::DEFAULT.schedule(),
    )?;
    let flow = app.flows.create(missing, app.clock.now()).await?;
    let error = app
        .executor
        .execute(&flow)
        .await
        .expect_err("the file is missing");
    let io = error
        .flow_error()
        .and_then(|e| e.downcast_ref::<std::io::Error>());
    println!(
        "failed as expected ({}): {error}; io error kind: {}",
        error.run_id().map_or_else(
            || "no run recorded".to_owned(),
            |id| format!("recorded as run {id}")
        ),
        io.map_or_else(|| "none".to_owned(), |e| e.kind().to_string())
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_times_not_as_options() {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        assert_eq!(or_not_yet(Some(at)), "1970-01-01 00:00:00 UTC");
        assert_eq!(or_not_yet(None::<chrono::DateTime<chrono::Utc>>), "not yet");
    }
}
