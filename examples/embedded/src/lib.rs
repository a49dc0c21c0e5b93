//! An application with a flow class of its own, [`WordCount`], run by flowrun's stock command line and
//! server: [`registry`] is the built-in classes plus WordCount, and the two binaries hand it to
//! `flowrun_cli::run` and `flowrun_server::main_with`.

use std::path::PathBuf;

use async_trait::async_trait;
use flowrun_domain::{ClassRegistry, Flow, FlowClass, FlowError, RunContext};

/// The built-in classes plus [`WordCount`].
pub fn registry() -> ClassRegistry {
    let mut registry = flowrun_app::builtin_registry();
    registry.register::<WordCount>();
    registry
}

/// WordCount's settings: exactly one of `text` and `path`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WordCountSettings {
    /// The text whose words are counted.
    pub text: Option<String>,
    /// A file whose words are counted.
    pub path: Option<PathBuf>,
}

/// Counts the words of a text given in its settings (`{"text": "…"}`) or of a file
/// (`{"path": "/some/file.txt"}`), and logs the count into the run's output. A file that cannot be read
/// fails the run, naming it.
#[derive(Debug)]
pub struct WordCount {
    settings: WordCountSettings,
}

impl FlowClass for WordCount {
    const NAME: &'static str = "WordCount";
    type Settings = WordCountSettings;

    fn build(settings: WordCountSettings) -> Result<Self, String> {
        match (&settings.text, &settings.path) {
            (Some(_), None) | (None, Some(_)) => Ok(Self { settings }),
            _ => Err("give either `text` or `path`".to_owned()),
        }
    }
}

/// Why a WordCount run failed: its file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct ReadError {
    path: PathBuf,
    source: std::io::Error,
}

#[async_trait]
impl Flow for WordCount {
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
        let text = match (&self.settings.text, &self.settings.path) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => tokio::fs::read_to_string(path)
                .await
                .map_err(|source| ReadError {
                    path: path.clone(),
                    source,
                })?,
            (None, None) => String::new(),
        };
        context.log(format!("{} words", text.split_whitespace().count()));
        Ok(())
    }
}
