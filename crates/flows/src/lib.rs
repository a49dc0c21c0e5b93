//! flowrun's built-in flow classes.
//!
//! Real work: [`Command`] (a program, its output recorded, its process group killed when the run stops),
//! [`Http`] (one request, its status and the head of its answer recorded) and
//! [`SqlCopy`](sql_copy::SqlCopy) (rows between databases, incrementally). Diagnostic flows for smoke tests
//! and benchmarks: [`Noop`], [`Sleep`], [`Fail`] and [`Panic`]. Register them all with
//! [`register_builtins`].

pub mod sql_copy;

use std::time::Duration;

use async_trait::async_trait;
use flowrun_domain::{ClassRegistry, Flow, FlowClass, FlowError, RunContext};
use schemars::JsonSchema;
use serde::Deserialize;
use thiserror::Error;

pub mod command;
pub mod http;

pub use command::{Command, CommandError, CommandSettings};
pub use http::{Http, HttpError, HttpSettings};

#[cfg(all(test, unix))]
mod command_tests;
#[cfg(test)]
mod http_tests;

/// No settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct NoSettings {}

/// Does nothing and succeeds.
#[derive(Debug, Default)]
pub struct Noop;

impl FlowClass for Noop {
    const NAME: &'static str = "Noop";
    type Settings = NoSettings;

    fn build(_: NoSettings) -> Result<Self, String> {
        Ok(Self)
    }
}

#[async_trait]
impl Flow for Noop {
    async fn run(&mut self, _: &mut RunContext) -> Result<(), FlowError> {
        Ok(())
    }
}

/// The settings of [`Sleep`].
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SleepSettings {
    /// How long to sleep, in seconds (fractions allowed).
    #[serde(default = "one_second")]
    #[schemars(range(min = 0))]
    pub seconds: f64,
}

fn one_second() -> f64 {
    1.0
}

/// Sleeps for `{"seconds": f}` (default 1), then succeeds; stops early, as a failure, when its run is
/// asked to stop.
#[derive(Debug)]
pub struct Sleep {
    duration: Duration,
}

impl FlowClass for Sleep {
    const NAME: &'static str = "Sleep";
    type Settings = SleepSettings;

    fn build(settings: SleepSettings) -> Result<Self, String> {
        let seconds = settings.seconds;
        let duration = Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`seconds` must be a non-negative number, got {seconds}"))?;
        Ok(Self { duration })
    }
}

/// What [`Sleep`] returns when its run is asked to stop before it has slept enough.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("stopped after {slept_ms} ms of sleep")]
pub struct SleepStopped {
    /// How long it slept.
    pub slept_ms: u128,
}

#[async_trait]
impl Flow for Sleep {
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
        let began = tokio::time::Instant::now();
        tokio::select! {
            () = tokio::time::sleep(self.duration) => Ok(()),
            () = context.cancelled() => Err(SleepStopped { slept_ms: began.elapsed().as_millis() }.into()),
        }
    }
}

/// The error [`Fail`] returns; callers can downcast a flow's error to it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct FailError {
    /// The configured message.
    pub message: String,
}

/// The settings of [`Fail`].
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FailSettings {
    /// The error message.
    #[serde(default = "default_message")]
    pub message: String,
}

fn default_message() -> String {
    "the Fail flow failed as configured".to_owned()
}

/// Fails with `{"message": s}`.
#[derive(Debug)]
pub struct Fail {
    message: String,
}

impl FlowClass for Fail {
    const NAME: &'static str = "Fail";
    type Settings = FailSettings;

    fn build(settings: FailSettings) -> Result<Self, String> {
        Ok(Self {
            message: settings.message,
        })
    }
}

impl Fail {
    fn fail(&self) -> Result<(), FailError> {
        Err(FailError {
            message: self.message.clone(),
        })
    }
}

#[async_trait]
impl Flow for Fail {
    async fn run(&mut self, _: &mut RunContext) -> Result<(), FlowError> {
        self.fail()?;
        Ok(())
    }
}

/// The settings of [`Panic`].
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PanicSettings {
    /// The panic message.
    #[serde(default = "default_panic_message")]
    pub message: String,
}

fn default_panic_message() -> String {
    "the Panic flow panicked as configured".to_owned()
}

/// Panics with `{"message": s}`.
#[derive(Debug)]
pub struct Panic {
    message: String,
}

impl FlowClass for Panic {
    const NAME: &'static str = "Panic";
    type Settings = PanicSettings;

    fn build(settings: PanicSettings) -> Result<Self, String> {
        Ok(Self {
            message: settings.message,
        })
    }
}

#[async_trait]
impl Flow for Panic {
    #[allow(clippy::panic)]
    async fn run(&mut self, _: &mut RunContext) -> Result<(), FlowError> {
        panic!("{}", self.message)
    }
}

/// Registers `Command`, `Http`, `SqlCopy`, `Noop`, `Sleep`, `Fail` and `Panic`.
pub fn register_builtins(registry: &mut ClassRegistry) -> &mut ClassRegistry {
    registry
        .register::<Command>()
        .register::<Http>()
        .register::<Noop>()
        .register::<Sleep>()
        .register::<Fail>()
        .register::<Panic>()
        .register::<sql_copy::SqlCopy>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrun_domain::{FlowName, FlowRegistry};
    use serde_json::json;

    fn context() -> RunContext {
        RunContext::detached(FlowName::parse("test").expect("name"))
    }

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
        let error = flow.run(&mut context()).await.expect_err("fails");
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
        flow.run(&mut context()).await.expect("succeeds");
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
        let err = registry
            .build("Sleep", &json!({"secs": 2}))
            .err()
            .expect("a typo is refused");
        assert_eq!(
            err.to_string(),
            "invalid configuration for flow class `Sleep`: unknown setting `secs`"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_stops_when_its_run_is_asked_to() {
        let mut flow = registry()
            .build("Sleep", &json!({"seconds": 60}))
            .expect("builds");
        let mut context = context();
        let cancel = context.cancellation();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            cancel.cancel();
        });
        let error = flow.run(&mut context).await.expect_err("stopped");
        assert_eq!(
            error.downcast_ref::<SleepStopped>(),
            Some(&SleepStopped { slept_ms: 2000 })
        );
    }

    #[test]
    fn classes_describe_their_settings() {
        let classes = registry().classes();
        let sleep = classes.iter().find(|c| c.name == "Sleep").expect("Sleep");
        let settings = sleep.settings();
        assert_eq!(settings.len(), 1);
        assert_eq!(settings[0].name, "seconds");
        assert_eq!(settings[0].type_name, "number");
        assert_eq!(settings[0].default, Some(json!(1.0)));
        let noop = classes.iter().find(|c| c.name == "Noop").expect("Noop");
        assert!(noop.settings().is_empty());
    }
}
