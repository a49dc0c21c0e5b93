//! The domain's plan/apply use case (`flowrun apply`) on the in-memory store: creates, updates that keep
//! the flow's id and runs, prunes, a second apply that changes nothing, and refusals that change nothing.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use flowrun_domain::{
    ApplyError, ApplyField, ApplyPlan, ApplyReport, ClassRegistry, Clock, CronSchedule, DataFlowRun,
    DesiredFlow, Flow, FlowError, FlowManagement, PlannedChange, RunContext, RunId, RunStatus, Schedule,
    Trigger,
};
use flowrun_memory::MemoryStore;
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .single()
        .expect("valid")
}

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        now()
    }
}

struct Quick;

#[async_trait]
impl Flow for Quick {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        Ok(())
    }
}

/// `Noop` takes no settings; `Sleep` needs `seconds` and takes nothing else.
fn registry() -> ClassRegistry {
    let mut registry = ClassRegistry::new();
    registry.register_fn("Noop", |configuration: &Value| {
        match unknown_keys(configuration, &[]) {
            Some(key) => Err(format!("unknown setting `{key}`")),
            None => Ok(Box::new(Quick) as Box<dyn Flow>),
        }
    });
    registry.register_fn("Sleep", |configuration: &Value| {
        if let Some(key) = unknown_keys(configuration, &["seconds"]) {
            return Err(format!("unknown setting `{key}`"));
        }
        match configuration.get("seconds") {
            Some(Value::Number(_)) => Ok(Box::new(Quick) as Box<dyn Flow>),
            _ => Err("`seconds`: missing field".to_owned()),
        }
    });
    registry
}

fn unknown_keys(configuration: &Value, known: &[&str]) -> Option<String> {
    configuration.as_object().and_then(|object| {
        object
            .keys()
            .find(|key| *key != "class_name" && !known.contains(&key.as_str()))
            .cloned()
    })
}

fn setup() -> (MemoryStore, FlowManagement) {
    let store = MemoryStore::new();
    let management = FlowManagement::new(
        store.flows(),
        store.runs(),
        Arc::new(registry()),
        Arc::new(FixedClock),
    );
    (store, management)
}

fn desired(name: &str, class: &str, settings: Option<Value>) -> DesiredFlow {
    DesiredFlow {
        name: name.to_owned(),
        class: class.to_owned(),
        settings,
        schedule: None,
        description: String::new(),
        enabled: true,
        timeout_secs: None,
        retries: 0,
        retry_backoff: None,
    }
}

fn every(secs: i64) -> Option<Schedule> {
    Some(Schedule::every_secs(secs).expect("interval"))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn file() -> Vec<DesiredFlow> {
    vec![
        DesiredFlow {
            schedule: every(300),
            description: "five minutes".into(),
            timeout_secs: Some(60),
            retries: 2,
            ..desired("a", "Sleep", Some(json!({"seconds": 1})))
        },
        DesiredFlow {
            schedule: Some(Schedule::Cron(
                CronSchedule::parse("0 2 * * *", Some("Europe/Berlin")).expect("cron"),
            )),
            enabled: false,
            ..desired("b", "Noop", None)
        },
    ]
}

async fn apply(management: &FlowManagement, desired: Vec<DesiredFlow>, prune: bool) -> ApplyReport {
    let plan = management.plan(desired, prune).await.expect("plan");
    management.apply(plan).await.expect("apply")
}

fn finished_run(flow: flowrun_domain::DataFlowId, status: RunStatus) -> DataFlowRun {
    DataFlowRun {
        id: RunId(0),
        data_flow_id: flow,
        status,
        started_at: now(),
        ended_at: status.is_terminal().then(now),
        error_message: None,
        error_backtrace: None,
        lease_owner: None,
        lease_expires_at: None,
        attempt: 1,
        trigger: Trigger::Manual,
        failure_kind: None,
        cancel_requested: None,
        output: String::new(),
        created_at: now(),
        updated_at: now(),
    }
}

#[tokio::test]
async fn a_file_creates_its_flows_and_a_second_apply_changes_nothing() {
    let (_store, management) = setup();
    let report = apply(&management, file(), false).await;
    assert_eq!(report.created, names(&["a", "b"]));
    assert!(report.updated.is_empty() && report.deleted.is_empty() && report.unchanged.is_empty());

    let a = management.find("a").await.expect("a");
    assert_eq!(a.configuration, json!({"class_name": "Sleep", "seconds": 1}));
    assert_eq!(a.schedule, every(300).expect("schedule"));
    assert_eq!(a.description, "five minutes");
    assert_eq!(a.timeout.map(|t| t.as_secs()), Some(60));
    assert_eq!(a.retry.retries(), 2);
    let b = management.find("b").await.expect("b");
    assert!(!b.enabled);
    assert_eq!(b.configuration, json!({"class_name": "Noop"}));

    let again = management.plan(file(), true).await.expect("plan");
    assert!(again.is_noop(), "{again:?}");
    let report = management.apply(again).await.expect("apply");
    assert_eq!(report.unchanged, names(&["a", "b"]));
    assert!(report.created.is_empty() && report.updated.is_empty() && report.deleted.is_empty());
    let a_again = management.find("a").await.expect("a");
    assert_eq!(a_again.updated_at, a.updated_at);
}

#[tokio::test]
async fn an_edit_updates_only_what_changed_and_keeps_the_id_and_the_runs() {
    let (store, management) = setup();
    apply(&management, file(), false).await;
    let a = management.find("a").await.expect("a");
    store
        .insert_run(finished_run(a.id, RunStatus::Success))
        .expect("run");

    let mut edited = file();
    edited[0].settings = Some(json!({"seconds": 2}));
    edited[0].schedule = every(600);
    edited[0].retry_backoff = Some(std::time::Duration::from_secs(10));
    edited[1].enabled = true;
    let plan = management.plan(edited.clone(), false).await.expect("plan");
    let changes: Vec<_> = plan
        .changes
        .iter()
        .map(|change| match change {
            PlannedChange::Update { name, changed, .. } => (name.as_str().to_owned(), changed.clone()),
            other => panic!("only updates: {other:?}"),
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("a".to_owned(), vec!["settings", "schedule", "retry_backoff"]),
            ("b".to_owned(), vec!["enabled"]),
        ]
    );
    let report = management.apply(plan).await.expect("apply");
    assert_eq!(report.updated, names(&["a", "b"]));

    let (a_now, runs) = management.count_runs("a").await.expect("a");
    assert_eq!(a_now.id, a.id);
    assert_eq!(runs, 1, "the history stays");
    assert_eq!(a_now.configuration, json!({"class_name": "Sleep", "seconds": 2}));
    assert_eq!(a_now.schedule, every(600).expect("schedule"));
    assert_eq!(a_now.retry.backoff().as_secs(), 10);
    assert!(management.find("b").await.expect("b").enabled);
    assert!(management.plan(edited, false).await.expect("plan").is_noop());
}

#[tokio::test]
async fn a_class_change_is_named_and_stored_whole() {
    let (_store, management) = setup();
    apply(&management, file(), false).await;
    let mut edited = file();
    edited[0] = DesiredFlow {
        class: "Noop".into(),
        settings: None,
        ..edited[0].clone()
    };
    let plan = management.plan(edited, false).await.expect("plan");
    assert!(
        matches!(&plan.changes[0], PlannedChange::Update { changed, .. } if *changed == ["class", "settings"]),
        "{plan:?}"
    );
    management.apply(plan).await.expect("apply");
    assert_eq!(
        management.find("a").await.expect("a").configuration,
        json!({"class_name": "Noop"})
    );
}

#[tokio::test]
async fn prune_deletes_flows_not_in_the_file_and_only_with_prune() {
    let (store, management) = setup();
    apply(&management, file(), false).await;
    let b = management.find("b").await.expect("b");
    store
        .insert_run(finished_run(b.id, RunStatus::Failed))
        .expect("run");
    let only_a = vec![file().remove(0)];

    let report = apply(&management, only_a.clone(), false).await;
    assert_eq!(report.unchanged, names(&["a"]));
    assert!(report.deleted.is_empty());
    assert!(management.find("b").await.is_ok(), "kept without --prune");

    let plan = management.plan(only_a, true).await.expect("plan");
    assert!(
        plan.changes.contains(&PlannedChange::Delete {
            name: b.name.clone(),
            runs: 1
        }),
        "{plan:?}"
    );
    let report = management.apply(plan).await.expect("apply");
    assert_eq!(report.deleted, names(&["b"]));
    assert_eq!(report.unchanged, names(&["a"]));
    assert!(management.find("b").await.is_err());
}

#[tokio::test]
async fn prune_refuses_a_running_flow_and_changes_nothing() {
    let (store, management) = setup();
    apply(&management, file(), false).await;
    let b = management.find("b").await.expect("b");
    let live = store
        .insert_run(finished_run(b.id, RunStatus::InProgress))
        .expect("run");
    let file = vec![file().remove(0), desired("c", "Noop", None)];

    let error = management.plan(file, true).await.expect_err("refused");
    let ApplyError::Running(problems) = &error else {
        panic!("running: {error:?}");
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].flow, "b");
    assert!(problems[0].message.contains(&format!("run {live}")), "{error}");
    assert!(management.find("b").await.is_ok());
    assert!(management.find("c").await.is_err(), "nothing created");
}

#[tokio::test]
async fn an_invalid_file_names_every_problem_and_changes_nothing() {
    let (_store, management) = setup();
    apply(&management, file(), false).await;
    let before = management.find("a").await.expect("a");
    let file = vec![
        DesiredFlow {
            description: "changed".into(),
            ..file().remove(0)
        },
        desired("ghost", "Ghost", None),
        desired("typo", "Sleep", Some(json!({"seconds": 1, "secnds": 2}))),
        DesiredFlow {
            timeout_secs: Some(0),
            retries: 1000,
            ..desired("limits", "Noop", None)
        },
        desired("  ", "Noop", None),
        desired("new", "Noop", None),
        desired(" new", "Noop", None),
    ];
    let error = management.plan(file, true).await.expect_err("invalid");
    let ApplyError::Invalid(problems) = &error else {
        panic!("invalid: {error:?}");
    };
    let found: Vec<_> = problems.iter().map(|p| (p.flow.as_str(), p.field)).collect();
    assert_eq!(
        found,
        vec![
            ("ghost", Some(ApplyField::Class)),
            ("typo", Some(ApplyField::Settings)),
            ("limits", Some(ApplyField::Timeout)),
            ("limits", Some(ApplyField::Retries)),
            ("  ", Some(ApplyField::Name)),
            (" new", Some(ApplyField::Name)),
        ],
        "{error}"
    );
    let text = error.to_string();
    for says in [
        "flow `ghost`: unknown flow class `Ghost`",
        "flow `typo`: invalid configuration for flow class `Sleep`: unknown setting `secnds`",
        "a timeout must be between",
        "at most 100 retries",
        "the flow name must not be empty",
        "declared more than once",
    ] {
        assert!(text.contains(says), "{says}: {text}");
    }
    assert_eq!(management.find("a").await.expect("a"), before, "nothing updated");
    assert!(management.find("new").await.is_err(), "nothing created");
    assert!(management.find("b").await.is_ok(), "nothing pruned");
}

#[tokio::test]
async fn an_empty_plan_applies_to_an_empty_report() {
    let (_store, management) = setup();
    let report = management.apply(ApplyPlan::default()).await.expect("apply");
    assert_eq!(report, ApplyReport::default());
}
