//! Making the stored flows match a declared set (`flowrun apply flows.toml`): [`FlowManagement::plan`]
//! validates every desired flow and compares it with what is stored; [`FlowManagement::apply`] carries the
//! plan out through the same create, update, enable and delete operations every other entry point uses.
//!
//! A plan is all or nothing at validation: one invalid flow, or a flow to prune that is running, and the
//! plan is refused with every problem named, before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::management::{CreateFlow, FlowManagement, FlowUpdate, ManagementError};
use crate::model::{DataFlow, FlowName, RetryPolicy, RunId, RunInterval, Timeout};
use crate::ports::RepositoryError;
use crate::schedule::Schedule;

/// A flow as a file declares it: what the stored flow of that name should become.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredFlow {
    /// The flow's name (trimmed and validated by the plan).
    pub name: String,
    /// The flow class.
    pub class: String,
    /// The class's settings: a JSON object, or `None` for none.
    pub settings: Option<Value>,
    /// When it runs; `None` for every hour (the default of `flow create`).
    pub schedule: Option<Schedule>,
    /// Free text.
    pub description: String,
    /// Whether the scheduler runs it.
    pub enabled: bool,
    /// How long one run may take, in seconds; `None`: no limit. Checked by the plan.
    pub timeout_secs: Option<u64>,
    /// How many times a failed run is retried. Checked by the plan.
    pub retries: u32,
    /// The wait before the first retry; `None` for the default. Checked by the plan.
    pub retry_backoff: Option<Duration>,
}

/// The part of a desired flow a [`Problem`] is about, so a file reader can point at its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplyField {
    /// The name.
    Name,
    /// The class, or the class together with its settings.
    Class,
    /// The settings.
    Settings,
    /// The schedule.
    Schedule,
    /// The timeout.
    Timeout,
    /// The number of retries.
    Retries,
    /// The retry backoff.
    RetryBackoff,
}

/// One reason a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The flow it is about, as the file names it.
    pub flow: String,
    /// What part of the flow, when one part is at fault.
    pub field: Option<ApplyField>,
    /// What is wrong, for a person (without the flow's name).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow `{}`: {}", self.flow, self.message)
    }
}

/// Why a plan could not be made; nothing was changed.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// Some desired flows are invalid: every problem found, in the order of the flows.
    #[error("{}", join_problems(.0))]
    Invalid(Vec<Problem>),
    /// Flows that would be pruned have a live run; deleting one would pull its record from under the
    /// process running it.
    #[error("{}", join_problems(.0))]
    Running(Vec<Problem>),
    /// Storage failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedChange {
    /// Create a flow that is not stored yet.
    Create(CreateFlow),
    /// Change a stored flow (keeping its id and its runs).
    Update {
        /// The flow.
        name: FlowName,
        /// What differs, by the names the file uses (`class`, `settings`, `schedule`, `description`,
        /// `enabled`, `timeout`, `retries`, `retry_backoff`).
        changed: Vec<&'static str>,
        /// The update to make (empty when only `enabled` changes).
        update: FlowUpdate,
        /// The new `enabled`, when it changes.
        enabled: Option<bool>,
    },
    /// Delete a stored flow the file does not declare (only when pruning).
    Delete {
        /// The flow.
        name: FlowName,
        /// How many runs it has, which go with it.
        runs: u64,
    },
    /// A stored flow that already matches.
    Unchanged(FlowName),
}

impl PlannedChange {
    /// The flow the step is about.
    pub fn name(&self) -> &str {
        match self {
            Self::Create(create) => create.name.trim(),
            Self::Update { name, .. } | Self::Delete { name, .. } | Self::Unchanged(name) => name.as_str(),
        }
    }
}

/// What [`FlowManagement::apply`] would do: creates and updates in the order of the desired flows, then
/// deletes, then the unchanged flows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApplyPlan {
    /// The steps.
    pub changes: Vec<PlannedChange>,
}

impl ApplyPlan {
    /// Whether applying it would change nothing.
    pub fn is_noop(&self) -> bool {
        self.changes
            .iter()
            .all(|change| matches!(change, PlannedChange::Unchanged(_)))
    }

    /// The flow names per kind of step: what applying it reports when it succeeds.
    pub fn summary(&self) -> ApplyReport {
        let mut report = ApplyReport::default();
        for change in &self.changes {
            let name = change.name().to_owned();
            match change {
                PlannedChange::Create(_) => report.created.push(name),
                PlannedChange::Update { .. } => report.updated.push(name),
                PlannedChange::Delete { .. } => report.deleted.push(name),
                PlannedChange::Unchanged(_) => report.unchanged.push(name),
            }
        }
        report
    }
}

/// The flows an apply created, updated, deleted and left alone, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// Flows created.
    pub created: Vec<String>,
    /// Flows updated.
    pub updated: Vec<String>,
    /// Flows deleted.
    pub deleted: Vec<String>,
    /// Flows that already matched.
    pub unchanged: Vec<String>,
}

/// A desired flow once every part of it checked out.
struct Checked {
    name: FlowName,
    configuration: Value,
    settings: Option<Value>,
    class: String,
    schedule: Schedule,
    description: String,
    enabled: bool,
    timeout: Option<Timeout>,
    retry: RetryPolicy,
}

impl FlowManagement {
    /// Checks every desired flow (name, class and settings with the registry, timeout, retries) and
    /// compares each with the stored flow of its name. With `prune`, stored flows not desired are deleted
    /// by the plan, unless one has a live run. Nothing is written.
    pub async fn plan(&self, desired: Vec<DesiredFlow>, prune: bool) -> Result<ApplyPlan, ApplyError> {
        let mut problems = Vec::new();
        let mut checked = Vec::new();
        let mut seen = BTreeSet::new();
        for flow in desired {
            if let Some(ok) = self.check_desired(flow, &mut seen, &mut problems) {
                checked.push(ok);
            }
        }
        if !problems.is_empty() {
            return Err(ApplyError::Invalid(problems));
        }

        let mut stored: BTreeMap<String, DataFlow> = self
            .flows
            .list()
            .await?
            .into_iter()
            .map(|flow| (flow.name.as_str().to_owned(), flow))
            .collect();
        let mut changes = Vec::new();
        let mut unchanged = Vec::new();
        for flow in checked {
            match stored.remove(flow.name.as_str()) {
                None => changes.push(PlannedChange::Create(CreateFlow {
                    name: flow.name.as_str().to_owned(),
                    class: flow.class,
                    settings: flow.settings,
                    schedule: Some(flow.schedule),
                    description: flow.description,
                    enabled: flow.enabled,
                    timeout: flow.timeout,
                    retry: flow.retry,
                })),
                Some(current) => match compare(&current, flow) {
                    Some(update) => changes.push(update),
                    None => unchanged.push(PlannedChange::Unchanged(current.name)),
                },
            }
        }
        if prune {
            let mut running = Vec::new();
            for flow in stored.into_values() {
                if let Some(run_id) = self.live_run(&flow).await? {
                    running.push(running_problem(&flow, run_id));
                    continue;
                }
                let runs = self.runs.count_runs(flow.id).await?;
                changes.push(PlannedChange::Delete {
                    name: flow.name,
                    runs,
                });
            }
            if !running.is_empty() {
                return Err(ApplyError::Running(running));
            }
        }
        changes.extend(unchanged);
        Ok(ApplyPlan { changes })
    }

    /// Carries out `plan`: creates, updates (keeping ids and runs), enables or disables, and deletes,
    /// in the plan's order. The first failure stops it; what was done before stays done (each step is
    /// one operation of its own), and applying the file again finishes the work.
    pub async fn apply(&self, plan: ApplyPlan) -> Result<ApplyReport, ManagementError> {
        let report = plan.summary();
        for change in plan.changes {
            match change {
                PlannedChange::Create(create) => {
                    self.create(create).await?;
                }
                PlannedChange::Update {
                    name,
                    update,
                    enabled,
                    ..
                } => {
                    if !update.is_empty() {
                        self.update(name.as_str(), update).await?;
                    }
                    if let Some(enabled) = enabled {
                        self.set_enabled(name.as_str(), enabled).await?;
                    }
                }
                PlannedChange::Delete { name, .. } => {
                    self.delete(name.as_str()).await?;
                }
                PlannedChange::Unchanged(_) => {}
            }
        }
        Ok(report)
    }

    /// `flow` checked, or `None` with its problems added to `problems`.
    fn check_desired(
        &self,
        flow: DesiredFlow,
        seen: &mut BTreeSet<String>,
        problems: &mut Vec<Problem>,
    ) -> Option<Checked> {
        let before = problems.len();
        let mut problem = |field: ApplyField, message: String| {
            problems.push(Problem {
                flow: flow.name.clone(),
                field: Some(field),
                message,
            });
        };
        let name = match FlowName::parse(&flow.name) {
            Ok(name) if !seen.insert(name.as_str().to_owned()) => {
                problem(
                    ApplyField::Name,
                    format!("the name `{name}` is declared more than once"),
                );
                None
            }
            Ok(name) => Some(name),
            Err(error) => {
                problem(ApplyField::Name, error.to_string());
                None
            }
        };
        let configuration = match self.configuration(&flow.class, flow.settings.clone()) {
            Ok(configuration) => Some(configuration),
            Err(error) => {
                let field = match &error {
                    ManagementError::Build(crate::registry::BuildFlowError::UnknownClass { .. }) => {
                        ApplyField::Class
                    }
                    _ => ApplyField::Settings,
                };
                problem(field, error.to_string());
                None
            }
        };
        let timeout = match flow.timeout_secs.map(Timeout::from_secs).transpose() {
            Ok(timeout) => timeout,
            Err(error) => {
                problem(ApplyField::Timeout, error.to_string());
                None
            }
        };
        let retry = match RetryPolicy::new(flow.retries, flow.retry_backoff) {
            Ok(retry) => Some(retry),
            Err(error) => {
                let field = if flow.retries > RetryPolicy::MAX_RETRIES {
                    ApplyField::Retries
                } else {
                    ApplyField::RetryBackoff
                };
                problem(field, error.to_string());
                None
            }
        };
        if problems.len() > before {
            return None;
        }
        Some(Checked {
            name: name?,
            configuration: configuration?,
            settings: flow.settings,
            class: flow.class,
            schedule: flow.schedule.unwrap_or_else(|| RunInterval::DEFAULT.schedule()),
            description: flow.description,
            enabled: flow.enabled,
            timeout,
            retry: retry?,
        })
    }
}

/// The update that makes `current` what `desired` says, or `None` when it already is.
fn compare(current: &DataFlow, desired: Checked) -> Option<PlannedChange> {
    let mut changed = Vec::new();
    let mut update = FlowUpdate::default();
    if current.configuration != desired.configuration {
        let class_changed = current.flow_class().ok() != Some(desired.class.as_str());
        changed.push(if class_changed { "class" } else { "settings" });
        if class_changed && settings_differ(&current.configuration, &desired.configuration) {
            changed.push("settings");
        }
        // Both, so the stored configuration is exactly the one checked, whatever the current one holds.
        update.class = Some(desired.class);
        update.settings = Some(
            desired
                .settings
                .unwrap_or_else(|| Value::Object(Default::default())),
        );
    }
    if current.schedule != desired.schedule {
        changed.push("schedule");
        update.schedule = Some(desired.schedule);
    }
    if current.description != desired.description {
        changed.push("description");
        update.description = Some(desired.description);
    }
    let enabled = (current.enabled != desired.enabled).then_some(desired.enabled);
    if enabled.is_some() {
        changed.push("enabled");
    }
    if current.timeout != desired.timeout {
        changed.push("timeout");
        update.timeout = Some(desired.timeout);
    }
    if current.retry != desired.retry {
        if current.retry.retries() != desired.retry.retries() {
            changed.push("retries");
        }
        if current.retry.backoff() != desired.retry.backoff() {
            changed.push("retry_backoff");
        }
        update.retry = Some(desired.retry);
    }
    (!changed.is_empty()).then(|| PlannedChange::Update {
        name: current.name.clone(),
        changed,
        update,
        enabled,
    })
}

/// Whether two configurations differ in anything but their class.
fn settings_differ(a: &Value, b: &Value) -> bool {
    let without_class = |value: &Value| match value {
        Value::Object(object) => {
            let mut object = object.clone();
            object.remove("class_name");
            object
        }
        _ => Default::default(),
    };
    without_class(a) != without_class(b)
}

fn running_problem(flow: &DataFlow, run_id: RunId) -> Problem {
    Problem {
        flow: flow.name.as_str().to_owned(),
        field: None,
        message: format!(
            "not in the file, but it is running (run {run_id}); nothing was changed: prune once the run has ended"
        ),
    }
}
