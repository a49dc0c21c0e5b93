//! Fast unit tests of the domain's `Scheduler` on the in-memory store: real claims, leases and finishes,
//! no database, a clock the test sets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use flowrun_domain::{
    Claim, ClassRegistry, Clock, DataFlow, DataFlowRepository, Flow, FlowError, FlowExecutor, FlowName,
    LastRunStatus, LeaseOwner, LeaseSettings, NewDataFlow, RunContext, RunEnd, RunFilter, RunInterval,
    RunRepository, RunStatus, Scheduler, StartRun, Trigger,
};
use flowrun_memory::MemoryStore;
use serde_json::json;
use tokio::sync::watch;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("valid")
}

/// A clock that says what the test sets.
#[derive(Debug)]
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    fn at(now: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(now)))
    }

    fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().expect("clock") = now;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
}

/// A flow that ends at once.
struct Quick;

#[async_trait]
impl Flow for Quick {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        Ok(())
    }
}

/// A flow that fails at once.
struct Failing;

#[async_trait]
impl Flow for Failing {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        Err(FlowError::msg("boom"))
    }
}

/// A flow that runs until its gate opens, and counts how many runs of each flow run at once.
struct Held {
    gate: watch::Receiver<bool>,
    name: String,
    live: Arc<Mutex<BTreeMap<String, (u32, u32)>>>,
}

#[async_trait]
impl Flow for Held {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        {
            let mut live = self.live.lock().expect("live");
            let (now, most) = live.entry(self.name.clone()).or_default();
            *now += 1;
            *most = (*most).max(*now);
        }
        let _ = self.gate.wait_for(|open| *open).await;
        if let Some((now, _)) = self.live.lock().expect("live").get_mut(&self.name) {
            *now -= 1;
        }
        Ok(())
    }
}

/// What the Held flows share: their gate and the count of runs at once per flow.
struct Gate {
    open: watch::Sender<bool>,
    live: Arc<Mutex<BTreeMap<String, (u32, u32)>>>,
}

impl Gate {
    fn new() -> Self {
        Self {
            open: watch::channel(false).0,
            live: Arc::default(),
        }
    }

    fn registry(&self) -> ClassRegistry {
        let mut registry = ClassRegistry::new();
        registry.register_fn("Quick", |_| Ok(Box::new(Quick)));
        registry.register_fn("Failing", |_| Ok(Box::new(Failing)));
        let gate = self.open.subscribe();
        let live = Arc::clone(&self.live);
        registry.register_fn("Held", move |config| {
            Ok(Box::new(Held {
                gate: gate.clone(),
                name: config["name"].as_str().unwrap_or_default().to_owned(),
                live: Arc::clone(&live),
            }))
        });
        registry
    }

    /// The most runs of one flow that ever ran at once.
    fn most_at_once(&self) -> u32 {
        self.live
            .lock()
            .expect("live")
            .values()
            .map(|(_, most)| *most)
            .max()
            .unwrap_or(0)
    }
}

/// A scheduler of `slots` slots on `store`, its leases held by `owner`.
fn scheduler(
    store: &MemoryStore,
    clock: &Arc<TestClock>,
    gate: &Gate,
    owner: &str,
    slots: usize,
) -> Scheduler {
    let clock: Arc<dyn Clock> = clock.clone();
    let executor = FlowExecutor::new(
        store.runs(),
        Arc::new(gate.registry()),
        Arc::clone(&clock),
        LeaseSettings::new(LeaseOwner::new(owner)),
    );
    Scheduler::new(store.flows(), store.runs(), executor, clock).with_concurrency(slots)
}

/// Creates an enabled flow of `class`, every hour, due at once at `t(0)`.
async fn flow(store: &MemoryStore, name: &str, class: &str) -> DataFlow {
    let new = NewDataFlow::new(
        FlowName::parse(name).expect("name"),
        "",
        true,
        json!({"class_name": class, "name": name}),
        RunInterval::DEFAULT.schedule(),
    )
    .expect("valid");
    store.create(new, t(0)).await.expect("created")
}

async fn runs_of(store: &MemoryStore, flow: &DataFlow) -> Vec<flowrun_domain::DataFlowRun> {
    store
        .list_runs(RunFilter {
            data_flow_id: Some(flow.id),
            limit: 100,
            ..RunFilter::default()
        })
        .await
        .expect("runs")
        .into_iter()
        .map(|record| record.run)
        .collect()
}

#[tokio::test]
async fn due_flows_are_claimed_and_run_once_and_are_not_due_again_until_their_next_slot() {
    let store = MemoryStore::new();
    let clock = TestClock::at(t(10));
    let gate = Gate::new();
    let flows = [flow(&store, "a", "Quick").await, flow(&store, "b", "Quick").await];
    let scheduler = scheduler(&store, &clock, &gate, "test:1", 16);
    let report = scheduler.run_cycle().await.expect("a cycle");
    assert_eq!(
        (report.flows_due, report.flows_triggered, report.flows_failed),
        (2, 2, 0)
    );
    assert!(
        report
            .triggered
            .iter()
            .all(|run| run.end == Some(RunEnd::Succeeded)),
        "{report:?}"
    );
    for flow in &flows {
        let runs = runs_of(&store, flow).await;
        assert_eq!(runs.len(), 1, "{}", flow.name);
        assert_eq!(runs[0].status, RunStatus::Success);
        assert_eq!(runs[0].trigger, Trigger::Schedule);
        let stored = store.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(stored.next_run_at, Some(t(3600)), "the slot after t(0)");
    }
    let again = scheduler.run_cycle().await.expect("a cycle");
    assert_eq!(again.flows_due, 0, "nothing is due before the next slot");
    clock.set(t(3600));
    let next = scheduler.run_cycle().await.expect("a cycle");
    assert_eq!(next.flows_triggered, 2, "due again at the next slot");
}

#[tokio::test]
async fn two_schedulers_sharing_one_store_never_run_one_flow_twice() {
    let store = MemoryStore::new();
    let clock = TestClock::at(t(10));
    let gate = Gate::new();
    let mut flows = Vec::new();
    for i in 0..8 {
        flows.push(flow(&store, &format!("f{i}"), "Held").await);
    }
    let first = scheduler(&store, &clock, &gate, "one:1", 16);
    let second = scheduler(&store, &clock, &gate, "two:2", 16);
    let (a, b) = tokio::join!(first.dispatch(), second.dispatch());
    let (a, b) = (a.expect("a cycle"), b.expect("a cycle"));
    assert_eq!(
        a.report.flows_triggered + b.report.flows_triggered,
        flows.len(),
        "each due flow is started by exactly one of them: {:?} {:?}",
        a.report,
        b.report
    );
    // While they run (their leases live), neither scheduler starts any of them again, even by hand.
    clock.set(t(50));
    for scheduler in [&first, &second] {
        for flow in &flows {
            let refused = scheduler.start_now(flow, Trigger::Manual).await;
            assert!(refused.is_err(), "{}: {refused:?}", flow.name);
        }
    }
    gate.open.send_replace(true);
    let (a, b) = tokio::join!(a.wait(), b.wait());
    assert_eq!(a.flows_failed + b.flows_failed, 0);
    first.wait_idle().await;
    second.wait_idle().await;
    for flow in &flows {
        assert_eq!(runs_of(&store, flow).await.len(), 1, "{}", flow.name);
    }
    assert_eq!(gate.most_at_once(), 1, "never two runs of one flow at once");
}

#[tokio::test]
async fn a_full_concurrency_limit_leaves_the_other_due_flows_for_the_next_cycle() {
    let store = MemoryStore::new();
    let clock = TestClock::at(t(10));
    let gate = Gate::new();
    for i in 0..3 {
        flow(&store, &format!("f{i}"), "Held").await;
    }
    let scheduler = scheduler(&store, &clock, &gate, "test:1", 2);
    let first = scheduler.dispatch().await.expect("a cycle");
    assert_eq!((first.report.flows_due, first.report.flows_triggered), (3, 2));
    let left: Vec<String> = store
        .list_due(t(10))
        .await
        .expect("due")
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    assert_eq!(left.len(), 1, "the third is still due: {left:?}");
    gate.open.send_replace(true);
    first.wait().await;
    scheduler.wait_idle().await;
    let second = scheduler.run_cycle().await.expect("a cycle");
    assert_eq!(second.triggered.len(), 1);
    assert_eq!(second.triggered[0].flow.as_str(), left[0]);
    assert!(store.list_due(t(10)).await.expect("due").is_empty());
}

#[tokio::test]
async fn a_failing_flow_is_recorded_failed_and_still_moves_on_to_its_next_slot() {
    let store = MemoryStore::new();
    let clock = TestClock::at(t(10));
    let gate = Gate::new();
    let failing = flow(&store, "bad", "Failing").await;
    let unknown = flow(&store, "unknown", "NoSuchClass").await;
    let scheduler = scheduler(&store, &clock, &gate, "test:1", 16);
    let report = scheduler.run_cycle().await.expect("a cycle");
    assert_eq!(
        (report.flows_triggered, report.flows_failed),
        (2, 2),
        "{report:?}"
    );
    for flow in [&failing, &unknown] {
        let stored = store.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(
            stored.last_run_status,
            Some(LastRunStatus::Failed),
            "{}",
            flow.name
        );
        assert_eq!(
            stored.next_run_at,
            Some(t(3600)),
            "{}: not retried every cycle",
            flow.name
        );
        let runs = runs_of(&store, flow).await;
        assert_eq!(runs.len(), 1, "{}", flow.name);
        assert!(runs[0].error_message.is_some(), "{}", flow.name);
    }
    let again = scheduler.run_cycle().await.expect("a cycle");
    assert_eq!(again.flows_due, 0);
}

#[tokio::test]
async fn a_cycle_that_cannot_read_the_store_shows_in_the_health_and_the_next_one_recovers() {
    let store = MemoryStore::new();
    let clock = TestClock::at(t(10));
    let gate = Gate::new();
    flow(&store, "a", "Quick").await;
    let scheduler = scheduler(&store, &clock, &gate, "test:1", 16);
    store.set_unavailable(true);
    let error = scheduler.dispatch().await.expect_err("the store is down");
    assert!(error.to_string().contains("unavailable"), "{error}");
    let health = scheduler.health();
    assert_eq!(health.consecutive_failures, 1);
    assert_eq!(health.last_failure.map(|(at, _)| at), Some(t(10)));
    assert_eq!(health.last_success, None);
    store.set_unavailable(false);
    clock.set(t(20));
    let report = scheduler.run_cycle().await.expect("a cycle");
    assert_eq!(report.flows_triggered, 1);
    let health = scheduler.health();
    assert_eq!(health.consecutive_failures, 0);
    assert_eq!(health.last_success, Some(t(20)));
}

#[tokio::test]
async fn a_run_whose_process_died_is_reaped_by_the_next_cycle_and_its_flow_runs_again() {
    let store = MemoryStore::new();
    let clock = TestClock::at(t(10));
    let gate = Gate::new();
    let flow = flow(&store, "a", "Quick").await;
    // A run claimed by a process that then died: its lease runs out at t(70) and nobody renews it.
    let dead = store
        .start_run(StartRun {
            data_flow_id: flow.id,
            started_at: t(10),
            lease_owner: LeaseOwner::new("dead:1"),
            lease_expires_at: t(10) + Duration::seconds(60),
            claim: Claim::Due {
                next_run_at: Some(t(3600)),
            },
            trigger: Trigger::Schedule,
            attempt: 1,
        })
        .await
        .expect("started");
    let scheduler = scheduler(&store, &clock, &gate, "test:1", 16);
    clock.set(t(3600));
    let report = scheduler.run_cycle().await.expect("a cycle");
    assert_eq!((report.runs_reaped, report.flows_triggered), (1, 1), "{report:?}");
    let runs = runs_of(&store, &flow).await;
    assert_eq!(runs.len(), 2);
    let reaped = runs.iter().find(|run| run.id == dead.id).expect("the dead run");
    assert_eq!(reaped.status, RunStatus::Failed);
    assert_eq!(reaped.failure_kind, Some(flowrun_domain::FailureKind::Abandoned));
}
