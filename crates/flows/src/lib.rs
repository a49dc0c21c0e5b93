//! flowrun's built-in flow classes.
//!
//! Diagnostic flows for smoke tests and benchmarks: [`Noop`], [`Sleep`], [`Fail`] and [`Panic`]. Register
//! them all with [`register_builtins`].

use std::time::Duration;

use async_trait::async_trait;
use flowrun_domain::{ClassRegistry, Flow, FlowError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

/// Reads a class's settings from the flow's whole configuration. A string configuration (just the class
/// name) has no settings: every field takes its default.
fn settings<T: DeserializeOwned + Default>(configuration: &Value) -> Result<T, String> {
    match configuration {
        Value::Object(_) => serde_json::from_value(configuration.clone()).map_err(|e| e.to_string()),
        _ => Ok(T::default()),
    }
}

/// Does nothing and succeeds.
#[derive(Debug, Default)]
pub struct Noop;

#[async_trait]
impl Flow for Noop {
    async fn run(&mut self) -> Result<(), FlowError> {
        Ok(())
    }
}

/// Sleeps for `{"seconds": f}` (default 1), then succeeds.
#[derive(Debug)]
pub struct Sleep {
    duration: Duration,
}

#[derive(Debug, Deserialize)]
struct SleepSettings {
    #[serde(default = "one_second")]
    seconds: f64,
}

fn one_second() -> f64 {
    1.0
}

impl Default for SleepSettings {
    fn default() -> Self {
        Self {
            seconds: one_second(),
        }
    }
}

impl Sleep {
    /// Builds from a configuration with an optional non-negative `seconds`.
    pub fn from_configuration(configuration: &Value) -> Result<Self, String> {
        let SleepSettings { seconds } = settings(configuration)?;
        let duration = Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`seconds` must be a non-negative number, got {seconds}"))?;
        Ok(Self { duration })
    }
}

#[async_trait]
impl Flow for Sleep {
    async fn run(&mut self) -> Result<(), FlowError> {
        tokio::time::sleep(self.duration).await;
        Ok(())
    }
}

/// The error [`Fail`] returns; callers can downcast a flow's error to it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct FailError {
    /// The configured message.
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct MessageSettings {
    #[serde(default = "default_message")]
    message: String,
}

fn default_message() -> String {
    "the Fail flow failed as configured".to_owned()
}

impl Default for MessageSettings {
    fn default() -> Self {
        Self {
            message: default_message(),
        }
    }
}

/// Fails with `{"message": s}`.
#[derive(Debug)]
pub struct Fail {
    message: String,
}

impl Fail {
    /// Builds from a configuration with an optional `message`.
    pub fn from_configuration(configuration: &Value) -> Result<Self, String> {
        let MessageSettings { message } = settings(configuration)?;
        Ok(Self { message })
    }

    fn fail(&self) -> Result<(), FailError> {
        Err(FailError {
            message: self.message.clone(),
        })
    }
}

#[async_trait]
impl Flow for Fail {
    async fn run(&mut self) -> Result<(), FlowError> {
        self.fail()?;
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct PanicSettings {
    #[serde(default = "default_panic_message")]
    message: String,
}

fn default_panic_message() -> String {
    "the Panic flow panicked as configured".to_owned()
}

impl Default for PanicSettings {
    fn default() -> Self {
        Self {
            message: default_panic_message(),
        }
    }
}

/// Panics with `{"message": s}`.
#[derive(Debug)]
pub struct Panic {
    message: String,
}

impl Panic {
    /// Builds from a configuration with an optional `message`.
    pub fn from_configuration(configuration: &Value) -> Result<Self, String> {
        let PanicSettings { message } = settings(configuration)?;
        Ok(Self { message })
    }
}

#[async_trait]
impl Flow for Panic {
    #[allow(clippy::panic)]
    async fn run(&mut self) -> Result<(), FlowError> {
        panic!("{}", self.message)
    }
}

/// Registers `Noop`, `Sleep`, `Fail` and `Panic`.
pub fn register_builtins(registry: &mut ClassRegistry) -> &mut ClassRegistry {
    registry
        .register("Noop", |_| Ok(Box::new(Noop)))
        .register("Sleep", |c| Ok(Box::new(Sleep::from_configuration(c)?)))
        .register("Fail", |c| Ok(Box::new(Fail::from_configuration(c)?)))
        .register("Panic", |c| Ok(Box::new(Panic::from_configuration(c)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrun_domain::FlowRegistry;
    use serde_json::json;

    fn registry() -> ClassRegistry {
        let mut registry = ClassRegistry::new();
        register_builtins(&mut registry);
        registry
    }

    #[tokio::test]
    async fn fail_returns_a_downcastable_error_with_the_configured_message() {
        let mut flow = registry()
            .build("Fail", &json!({"class_name": "Fail", "message": "boom"}))
            .expect("builds");
        let error = flow.run().await.expect_err("fails");
        assert_eq!(
            error.downcast_ref::<FailError>(),
            Some(&FailError {
                message: "boom".into()
            })
        );
        assert!(
            error
                .report()
                .contains("<flowrun_flows::Fail as flowrun_domain::flow::Flow>::run"),
            "{}",
            error.report()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_sleeps_for_the_configured_seconds() {
        let mut flow = registry()
            .build("Sleep", &json!({"seconds": 2.5}))
            .expect("builds");
        let started = tokio::time::Instant::now();
        flow.run().await.expect("succeeds");
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let registry = registry();
        let err = registry
            .build("Sleep", &json!({"seconds": -1}))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("non-negative"), "{err}");
        let err = registry
            .build("Sleep", &json!({"seconds": "soon"}))
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .contains("invalid configuration for flow class `Sleep`"),
            "{err}"
        );
        assert!(registry.build("Noop", &json!("Noop")).is_ok());
    }
}
