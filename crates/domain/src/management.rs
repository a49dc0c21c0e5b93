//! The flow-management use case: create, update, enable or disable, and delete data flows, and prune their
//! history. Every entry point (the CLI, the server, `apply`) goes through [`FlowManagement`], so a
//! configuration is checked the same way everywhere: by building the flow with the registry before anything
//! is stored.

use std::sync::Arc;

use chrono::TimeDelta;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::model::{
    DataFlow, FlowName, NewDataFlow, RetryPolicy, RunId, RunInterval, RunStatus, Timeout, ValidationError,
};
use crate::ports::{
    Clock, CreateDataFlowError, DataFlowRepository, FlowChanges, PruneRuns, RepositoryError, RunFilter,
    RunRepository, ScheduleChange,
};
use crate::registry::{BuildFlowError, FlowRegistry};
use crate::schedule::Schedule;

/// Why a management operation was refused or failed; nothing was stored. Every variant but
/// [`ManagementError::Repository`] and [`ManagementError::Running`] is bad input.
#[derive(Debug, Error)]
pub enum ManagementError {
    /// No flow has that name.
    #[error("no data flow named `{0}`")]
    NotFound(String),
    /// A flow of that name exists.
    #[error("a data flow named `{0}` already exists")]
    Duplicate(FlowName),
    /// A name or a configuration is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The class is unknown or refused its settings.
    #[error(transparent)]
    Build(#[from] BuildFlowError),
    /// The settings are not a JSON object, or name another class than the one given.
    #[error("{0}")]
    Settings(String),
    /// The flow has a live run; deleting it would pull the run's record from under the process running it.
    #[error(
        "data flow `{name}` is running (run {run_id}); delete it once the run has ended (a run whose process died is closed by `flowrun runs reap` when its lease expires)"
    )]
    Running {
        /// The flow.
        name: FlowName,
        /// Its live run.
        run_id: RunId,
    },
    /// A retention age reaches before the calendar's start.
    #[error("an age of {0} seconds reaches before the earliest time that can be stored")]
    AgeOutOfRange(u64),
    /// Storage failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl ManagementError {
    /// Whether the caller gave bad input (as opposed to storage failing).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Repository(_) | Self::Running { .. })
    }
}

/// A flow to create, as a person or a file describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateFlow {
    /// The flow's name (trimmed and validated).
    pub name: String,
    /// The flow class.
    pub class: String,
    /// The class's settings: a JSON object, or `None` for none.
    pub settings: Option<Value>,
    /// When it runs; `None` for every hour.
    pub schedule: Option<Schedule>,
    /// Free text.
    pub description: String,
    /// Whether the scheduler runs it.
    pub enabled: bool,
    /// How long one run may take; `None`: no limit.
    pub timeout: Option<Timeout>,
    /// How failed runs are retried.
    pub retry: RetryPolicy,
}

/// What to change in a flow; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowUpdate {
    /// A new class. Alone, the current settings are kept and checked against it.
    pub class: Option<String>,
    /// New settings (replacing the current ones whole). Alone, the current class is kept.
    pub settings: Option<Value>,
    /// A new schedule; the flow's next run is recomputed only if it differs from the current one.
    pub schedule: Option<Schedule>,
    /// New free text.
    pub description: Option<String>,
    /// A new run timeout (`Some(None)` removes it).
    pub timeout: Option<Option<Timeout>>,
    /// A new retry policy.
    pub retry: Option<RetryPolicy>,
}

impl FlowUpdate {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.class.is_none()
            && self.settings.is_none()
            && self.schedule.is_none()
            && self.description.is_none()
            && self.timeout.is_none()
            && self.retry.is_none()
    }
}

/// A deleted flow and how many runs went with it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedFlow {
    /// Its name.
    pub name: FlowName,
    /// Its runs, counted just before the delete.
    pub runs_deleted: u64,
}

/// Which runs [`FlowManagement::prune_runs`] deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneRequest {
    /// Finished runs that started longer ago than this.
    pub older_than: std::time::Duration,
    /// Keep the newest this many finished runs of each flow, however old.
    pub keep_last: Option<u64>,
    /// Only this flow's runs.
    pub flow: Option<String>,
}

/// The flow-management use case over the repositories, the registry (to check configurations) and the
/// clock.
#[derive(Clone)]
pub struct FlowManagement {
    pub(crate) flows: Arc<dyn DataFlowRepository>,
    pub(crate) runs: Arc<dyn RunRepository>,
    registry: Arc<dyn FlowRegistry>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FlowManagement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowManagement").finish_non_exhaustive()
    }
}

impl FlowManagement {
    /// The use case over these ports.
    pub fn new(
        flows: Arc<dyn DataFlowRepository>,
        runs: Arc<dyn RunRepository>,
        registry: Arc<dyn FlowRegistry>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            flows,
            runs,
            registry,
            clock,
        }
    }

    /// The flow of that name (surrounding whitespace ignored).
    pub async fn find(&self, name: &str) -> Result<DataFlow, ManagementError> {
        self.flows
            .find_by_name(name.trim())
            .await?
            .ok_or_else(|| ManagementError::NotFound(name.to_owned()))
    }

    /// The stored configuration for `class` with `settings`: the settings object with `class_name` set,
    /// once the class has accepted it, so a bad flow is refused now rather than at its first run.
    pub fn configuration(&self, class: &str, settings: Option<Value>) -> Result<Value, ManagementError> {
        let known = self.registry.class_names();
        if !known.iter().any(|k| k == class) {
            return Err(BuildFlowError::UnknownClass {
                class: class.to_owned(),
                known,
            }
            .into());
        }
        let mut object = match settings {
            None => Map::new(),
            Some(Value::Object(object)) => object,
            Some(other) => {
                return Err(ManagementError::Settings(format!(
                    "the settings (--config) must be a JSON object, got {}",
                    json_kind(&other)
                )));
            }
        };
        if let Some(Value::String(given)) = object.get("class_name")
            && given != class
        {
            return Err(ManagementError::Settings(format!(
                "the settings (--config) name class `{given}` but the class (--class) is `{class}`; give the class once"
            )));
        }
        object.insert("class_name".to_owned(), Value::String(class.to_owned()));
        let configuration = Value::Object(object);
        self.registry.check(class, &configuration)?;
        Ok(configuration)
    }

    /// Creates a flow; it is first due when its schedule says (at once for an interval).
    pub async fn create(&self, request: CreateFlow) -> Result<DataFlow, ManagementError> {
        let name = FlowName::parse(&request.name)?;
        let configuration = self.configuration(&request.class, request.settings)?;
        let schedule = request
            .schedule
            .unwrap_or_else(|| RunInterval::DEFAULT.schedule());
        let new = NewDataFlow::new(
            name,
            request.description,
            request.enabled,
            configuration,
            schedule,
        )?
        .with_timeout(request.timeout)
        .with_retry(request.retry);
        self.flows
            .create(new, self.clock.now())
            .await
            .map_err(|error| match error {
                CreateDataFlowError::Duplicate(name) => ManagementError::Duplicate(name),
                CreateDataFlowError::Repository(e) => e.into(),
            })
    }

    /// Changes what `update` gives of the flow `name`, keeping its id and its runs. A changed schedule
    /// recomputes the next run from now; an unchanged one leaves it alone. A run in progress is not
    /// affected: it keeps the settings it started with.
    pub async fn update(&self, name: &str, update: FlowUpdate) -> Result<DataFlow, ManagementError> {
        let flow = self.find(name).await?;
        let configuration = if update.class.is_some() || update.settings.is_some() {
            let class = match update.class {
                Some(class) => class,
                None => flow.flow_class().map_err(ValidationError::from)?.to_owned(),
            };
            let settings = update
                .settings
                .unwrap_or_else(|| current_settings(&flow.configuration));
            Some(self.configuration(&class, Some(settings))?)
        } else {
            None
        };
        let now = self.clock.now();
        let schedule = update
            .schedule
            .filter(|schedule| *schedule != flow.schedule)
            .map(|schedule| ScheduleChange {
                next_run_at: schedule.first_run_at(now),
                schedule,
            });
        let changes = FlowChanges {
            description: update.description,
            configuration,
            schedule,
            timeout: update.timeout,
            retry: update.retry,
        };
        self.flows
            .update(flow.id, changes, now)
            .await?
            // Deleted between the read and the write.
            .ok_or_else(|| ManagementError::NotFound(name.to_owned()))
    }

    /// Lets the scheduler run the flow `name`, or stops it from doing so.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<DataFlow, ManagementError> {
        let flow = self.find(name).await?;
        self.flows
            .set_enabled(flow.name.as_str(), enabled, self.clock.now())
            .await?
            .ok_or_else(|| ManagementError::NotFound(name.to_owned()))
    }

    /// The flow `name` and how many runs it has: what a delete would remove.
    pub async fn count_runs(&self, name: &str) -> Result<(DataFlow, u64), ManagementError> {
        let flow = self.find(name).await?;
        let runs = self.runs.count_runs(flow.id).await?;
        Ok((flow, runs))
    }

    /// Deletes the flow `name` and its runs. Asking a person first is the caller's job
    /// ([`FlowManagement::count_runs`] says how many runs would go). A flow with a live run is refused
    /// ([`ManagementError::Running`]).
    pub async fn delete(&self, name: &str) -> Result<DeletedFlow, ManagementError> {
        let (flow, runs_deleted) = self.count_runs(name).await?;
        if let Some(run_id) = self.live_run(&flow).await? {
            return Err(ManagementError::Running {
                name: flow.name,
                run_id,
            });
        }
        // The delete itself refuses a flow a run holds, so a run claimed since the check above is not
        // deleted under the process running it.
        if !self.flows.delete(flow.name.as_str()).await? {
            return match (self.flows.find_by_id(flow.id).await?, self.live_run(&flow).await?) {
                (Some(_), Some(run_id)) => Err(ManagementError::Running {
                    name: flow.name,
                    run_id,
                }),
                _ => Err(ManagementError::NotFound(name.to_owned())),
            };
        }
        Ok(DeletedFlow {
            name: flow.name,
            runs_deleted,
        })
    }

    /// The run that is live (pending or in progress) on `flow`, if any.
    pub(crate) async fn live_run(&self, flow: &DataFlow) -> Result<Option<RunId>, RepositoryError> {
        for status in [RunStatus::InProgress, RunStatus::Pending] {
            let live = self
                .runs
                .list_runs(RunFilter {
                    data_flow_id: Some(flow.id),
                    status: Some(status),
                    failure_kind: None,
                    limit: 1,
                })
                .await?;
            if let Some(record) = live.first() {
                return Ok(Some(record.run.id));
            }
        }
        Ok(None)
    }

    /// Deletes finished runs that started more than `request.older_than` ago (keeping the newest
    /// `keep_last` per flow, only of one flow when asked); returns how many were deleted. Live runs are
    /// never deleted.
    pub async fn prune_runs(&self, request: PruneRequest) -> Result<u64, ManagementError> {
        let data_flow_id = match &request.flow {
            Some(name) => Some(self.find(name).await?.id),
            None => None,
        };
        let secs = request.older_than.as_secs();
        let started_before = i64::try_from(secs)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .and_then(|age| self.clock.now().checked_sub_signed(age))
            .ok_or(ManagementError::AgeOutOfRange(secs))?;
        Ok(self
            .runs
            .prune(PruneRuns {
                started_before,
                keep_last: request.keep_last.filter(|n| *n > 0),
                data_flow_id,
            })
            .await?)
    }
}

/// A configuration's settings without its class: what `--class` alone keeps.
fn current_settings(configuration: &Value) -> Value {
    match configuration {
        Value::Object(object) => {
            let mut object = object.clone();
            object.remove("class_name");
            Value::Object(object)
        }
        _ => Value::Object(Map::new()),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataFlowId;
    use crate::ports::{MockClock, MockDataFlowRepository, MockRunRepository};
    use crate::registry::MockFlowRegistry;
    use crate::schedule::CronSchedule;
    use chrono::{DateTime, TimeZone, Utc};
    use mockall::predicate::eq;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .single()
            .expect("valid")
    }

    fn stored(configuration: Value, schedule: Schedule) -> DataFlow {
        DataFlow {
            id: DataFlowId(7),
            name: FlowName::parse("f").expect("name"),
            description: "old".into(),
            enabled: true,
            configuration,
            schedule,
            next_run_at: Some(now() + TimeDelta::hours(5)),
            timeout: None,
            retry: RetryPolicy::NONE,
            pending_retry: None,
            state: None,
            last_run_at: None,
            last_run_status: None,
            created_at: now() - TimeDelta::days(1),
            updated_at: now() - TimeDelta::days(1),
        }
    }

    /// A registry of `Sleep` (needs `seconds`) and `Noop` (takes no setting).
    fn registry() -> MockFlowRegistry {
        let mut registry = MockFlowRegistry::new();
        registry
            .expect_class_names()
            .returning(|| vec!["Noop".into(), "Sleep".into()]);
        registry.expect_check().returning(|class, configuration| {
            let extra = configuration
                .as_object()
                .map_or(0, |o| o.keys().filter(|k| *k != "class_name").count());
            match class {
                "Sleep" if configuration.get("seconds").is_some() => Ok(()),
                "Noop" if extra == 0 => Ok(()),
                _ => Err(BuildFlowError::InvalidConfiguration {
                    class: class.into(),
                    reason: "refused".into(),
                }),
            }
        });
        registry
    }

    fn management(flows: MockDataFlowRepository, runs: MockRunRepository) -> FlowManagement {
        let mut clock = MockClock::new();
        clock.expect_now().returning(now);
        FlowManagement::new(
            Arc::new(flows),
            Arc::new(runs),
            Arc::new(registry()),
            Arc::new(clock),
        )
    }

    fn finds(flows: &mut MockDataFlowRepository, flow: DataFlow) {
        flows
            .expect_find_by_name()
            .withf(|name| name == "f")
            .returning(move |_| Ok(Some(flow.clone())));
    }

    #[tokio::test]
    async fn create_refuses_what_the_class_refuses_and_stores_nothing() {
        // No `expect_create`: a call to it would panic the test.
        let m = management(MockDataFlowRepository::new(), MockRunRepository::new());
        let request = |class: &str, settings| CreateFlow {
            name: "f".into(),
            class: class.into(),
            settings,
            schedule: None,
            description: String::new(),
            enabled: true,
            timeout: None,
            retry: RetryPolicy::NONE,
        };
        let bad_settings = m.create(request("Sleep", Some(json!({})))).await;
        assert!(
            matches!(
                bad_settings,
                Err(ManagementError::Build(
                    BuildFlowError::InvalidConfiguration { .. }
                ))
            ),
            "{bad_settings:?}"
        );
        let unknown = m.create(request("Ghost", None)).await.expect_err("unknown");
        assert_eq!(
            unknown.to_string(),
            "unknown flow class `Ghost` (registered: Noop, Sleep)"
        );
        let array = m
            .create(request("Noop", Some(json!([1]))))
            .await
            .expect_err("array");
        assert!(
            array.to_string().contains("must be a JSON object, got an array"),
            "{array}"
        );
        let other = m
            .create(request("Noop", Some(json!({"class_name": "Sleep"}))))
            .await
            .expect_err("two classes");
        assert!(other.is_bad_input(), "{other}");
    }

    #[tokio::test]
    async fn create_stores_the_built_configuration_at_the_clock_time() {
        let mut flows = MockDataFlowRepository::new();
        flows
            .expect_create()
            .withf(|new, at| {
                new.configuration == json!({"class_name": "Sleep", "seconds": 1})
                    && new.schedule == RunInterval::DEFAULT.schedule()
                    && *at == now()
            })
            .times(1)
            .returning(|new, at| {
                Ok(DataFlow {
                    name: new.name,
                    configuration: new.configuration,
                    created_at: at,
                    ..stored(json!("Noop"), new.schedule)
                })
            });
        let m = management(flows, MockRunRepository::new());
        let flow = m
            .create(CreateFlow {
                name: " f ".into(),
                class: "Sleep".into(),
                settings: Some(json!({"seconds": 1})),
                schedule: None,
                description: String::new(),
                enabled: true,
                timeout: None,
                retry: RetryPolicy::NONE,
            })
            .await
            .expect("created");
        assert_eq!(flow.name.as_str(), "f");
    }

    #[tokio::test]
    async fn update_keeps_the_next_run_when_the_schedule_is_unchanged() {
        let schedule = RunInterval::from_secs(60).expect("valid").schedule();
        let mut flows = MockDataFlowRepository::new();
        finds(
            &mut flows,
            stored(json!({"class_name": "Noop"}), schedule.clone()),
        );
        flows
            .expect_update()
            .withf(|id, changes, at| {
                *id == DataFlowId(7)
                    && changes.schedule.is_none()
                    && changes.configuration.is_none()
                    && changes.description.as_deref() == Some("new")
                    && *at == now()
            })
            .times(1)
            .returning(|_, _, _| Ok(Some(stored(json!("Noop"), RunInterval::DEFAULT.schedule()))));
        let m = management(flows, MockRunRepository::new());
        m.update(
            "f",
            FlowUpdate {
                schedule: Some(schedule),
                description: Some("new".into()),
                ..FlowUpdate::default()
            },
        )
        .await
        .expect("updated");
    }

    #[tokio::test]
    async fn update_recomputes_the_next_run_from_a_new_schedule() {
        let cron = Schedule::Cron(CronSchedule::parse("0 2 * * *", Some("UTC")).expect("cron"));
        let expected = cron.first_run_at(now());
        assert_eq!(expected, Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).single());
        let mut flows = MockDataFlowRepository::new();
        finds(&mut flows, stored(json!("Noop"), RunInterval::DEFAULT.schedule()));
        let wanted = cron.clone();
        flows
            .expect_update()
            .withf(move |_, changes, _| {
                changes.schedule
                    == Some(ScheduleChange {
                        schedule: wanted.clone(),
                        next_run_at: expected,
                    })
            })
            .times(1)
            .returning(|_, _, _| Ok(Some(stored(json!("Noop"), RunInterval::DEFAULT.schedule()))));
        let m = management(flows, MockRunRepository::new());
        m.update(
            "f",
            FlowUpdate {
                schedule: Some(cron),
                ..FlowUpdate::default()
            },
        )
        .await
        .expect("updated");
    }

    #[tokio::test]
    async fn update_with_only_a_class_keeps_the_settings_and_checks_them_against_it() {
        let mut flows = MockDataFlowRepository::new();
        finds(
            &mut flows,
            stored(
                json!({"class_name": "Sleep", "seconds": 2}),
                RunInterval::DEFAULT.schedule(),
            ),
        );
        let m = management(flows, MockRunRepository::new());
        // Noop takes no `seconds`: refused, nothing written (no `expect_update`).
        let error = m
            .update(
                "f",
                FlowUpdate {
                    class: Some("Noop".into()),
                    ..FlowUpdate::default()
                },
            )
            .await
            .expect_err("refused");
        assert!(matches!(error, ManagementError::Build(_)), "{error:?}");

        let mut flows = MockDataFlowRepository::new();
        finds(
            &mut flows,
            stored(
                json!({"class_name": "Sleep", "seconds": 2}),
                RunInterval::DEFAULT.schedule(),
            ),
        );
        flows
            .expect_update()
            .withf(|_, changes, _| {
                changes.configuration == Some(json!({"class_name": "Sleep", "seconds": 5}))
            })
            .times(1)
            .returning(|_, _, _| Ok(Some(stored(json!("Noop"), RunInterval::DEFAULT.schedule()))));
        let m = management(flows, MockRunRepository::new());
        m.update(
            "f",
            FlowUpdate {
                settings: Some(json!({"seconds": 5})),
                ..FlowUpdate::default()
            },
        )
        .await
        .expect("settings alone keep the class");
    }

    #[tokio::test]
    async fn an_unknown_flow_is_bad_input() {
        let mut flows = MockDataFlowRepository::new();
        flows.expect_find_by_name().returning(|_| Ok(None));
        let m = management(flows, MockRunRepository::new());
        let error = m
            .update(
                "ghost",
                FlowUpdate {
                    description: Some("x".into()),
                    ..FlowUpdate::default()
                },
            )
            .await
            .expect_err("unknown");
        assert!(matches!(error, ManagementError::NotFound(_)) && error.is_bad_input());
        assert!(matches!(
            m.delete("ghost").await,
            Err(ManagementError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn delete_reports_how_many_runs_went_with_the_flow() {
        let mut flows = MockDataFlowRepository::new();
        finds(&mut flows, stored(json!("Noop"), RunInterval::DEFAULT.schedule()));
        flows
            .expect_delete()
            .withf(|name| name == "f")
            .times(1)
            .returning(|_| Ok(true));
        let mut runs = MockRunRepository::new();
        runs.expect_count_runs()
            .with(eq(DataFlowId(7)))
            .returning(|_| Ok(3));
        runs.expect_list_runs().returning(|_| Ok(Vec::new()));
        let m = management(flows, runs);
        let deleted = m.delete("f").await.expect("deleted");
        assert_eq!(deleted.runs_deleted, 3);
    }

    #[tokio::test]
    async fn a_flow_with_a_live_run_is_not_deleted() {
        let mut flows = MockDataFlowRepository::new();
        finds(&mut flows, stored(json!("Noop"), RunInterval::DEFAULT.schedule()));
        // No `expect_delete`: a delete would panic the test.
        let mut runs = MockRunRepository::new();
        runs.expect_count_runs().returning(|_| Ok(1));
        runs.expect_list_runs()
            .withf(|filter| filter.status == Some(RunStatus::InProgress))
            .returning(|_| {
                Ok(vec![crate::ports::RunRecord {
                    run: crate::model::DataFlowRun {
                        id: RunId(41),
                        data_flow_id: DataFlowId(7),
                        status: RunStatus::InProgress,
                        started_at: now(),
                        ended_at: None,
                        error_message: None,
                        error_backtrace: None,
                        lease_owner: None,
                        lease_expires_at: None,
                        attempt: 1,
                        trigger: crate::model::Trigger::Manual,
                        failure_kind: None,
                        cancel_requested: None,
                        output: String::new(),
                        created_at: now(),
                        updated_at: now(),
                    },
                    flow_name: "f".into(),
                }])
            });
        let m = management(flows, runs);
        let error = m.delete("f").await.expect_err("refused");
        assert!(
            matches!(
                error,
                ManagementError::Running {
                    run_id: RunId(41),
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn prune_counts_the_age_back_from_the_clock_and_drops_a_zero_keep_last() {
        let mut runs = MockRunRepository::new();
        runs.expect_prune()
            .withf(|request| {
                *request
                    == PruneRuns {
                        started_before: now() - TimeDelta::days(7),
                        keep_last: None,
                        data_flow_id: None,
                    }
            })
            .times(1)
            .returning(|_| Ok(4));
        let m = management(MockDataFlowRepository::new(), runs);
        let deleted = m
            .prune_runs(PruneRequest {
                older_than: std::time::Duration::from_secs(7 * 86_400),
                keep_last: Some(0),
                flow: None,
            })
            .await
            .expect("pruned");
        assert_eq!(deleted, 4);
        let too_old = m
            .prune_runs(PruneRequest {
                older_than: std::time::Duration::from_secs(u64::MAX),
                keep_last: None,
                flow: None,
            })
            .await
            .expect_err("out of range");
        assert!(matches!(too_old, ManagementError::AgeOutOfRange(_)));
    }
}
