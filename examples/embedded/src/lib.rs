//! An application with a flow class of its own, [`WordCount`], run by flowrun's stock command line and
//! server: [`registry`] is the built-in classes plus WordCount, and the two binaries hand it to
//! `flowrun_cli::run` and `flowrun_server::main_with`.

use std::path::PathBuf;

use async_trait::async_trait;
use flowrun_domain::{ClassRegistry, Flow, FlowError};
use serde::Deserialize;
use serde_json::Value;

/// The built-in classes plus [`WordCount`].
pub fn registry() -> ClassRegistry {
    let mut registry = flowrun_app::builtin_registry();
    registry.register(WordCount::NAME, |configuration| {
        Ok(Box::new(WordCount::from_configuration(configuration)?))
    });
    registry
}

/// Counts the words of a text given in its settings (`{"text": "…"}`) or of a file
/// (`{"path": "/some/file.txt"}`). A file that cannot be read fails the run, naming it.
#[derive(Debug)]
pub struct WordCount {
    source: Source,
    words: Option<usize>,
}

#[derive(Debug)]
enum Source {
    Text(String),
    File(PathBuf),
}

/// WordCount's settings; exactly one of `text` and `path`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WordCountSettings {
    /// The flow's whole configuration also names its class.
    #[serde(rename = "class_name")]
    _class_name: Option<String>,
    text: Option<String>,
    path: Option<PathBuf>,
}

/// Why a WordCount run failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct ReadError {
    path: PathBuf,
    source: std::io::Error,
}

impl WordCount {
    /// The class name flows give in `--class`.
    pub const NAME: &'static str = "WordCount";

    /// Builds from a flow's configuration; refuses unknown fields, and anything but exactly one of `text`
    /// and `path`.
    pub fn from_configuration(configuration: &Value) -> Result<Self, String> {
        let settings: WordCountSettings =
            serde_json::from_value(configuration.clone()).map_err(|e| e.to_string())?;
        let source = match (settings.text, settings.path) {
            (Some(text), None) => Source::Text(text),
            (None, Some(path)) => Source::File(path),
            _ => return Err("give either `text` or `path`".to_owned()),
        };
        Ok(Self { source, words: None })
    }

    /// How many words the last run counted.
    pub fn words(&self) -> Option<usize> {
        self.words
    }
}

#[async_trait]
impl Flow for WordCount {
    async fn run(&mut self) -> Result<(), FlowError> {
        let words = match &self.source {
            Source::Text(text) => text.split_whitespace().count(),
            Source::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|source| ReadError {
                    path: path.clone(),
                    source,
                })?
                .split_whitespace()
                .count(),
        };
        self.words = Some(words);
        Ok(())
    }
}
