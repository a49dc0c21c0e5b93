//! `flowrun apply FILE.toml [--dry-run] [--prune] [--json]`: makes the stored flows match a flows file.

use std::collections::BTreeMap;
use std::path::Path;

use flowrun_app::MigratePolicy;
use flowrun_app::apply_file::{FlowsFile, parse_flows_file};
use flowrun_domain::{ApplyError, ApplyPlan, ClassRegistry, PlannedChange};
use serde_json::json;

use crate::database::open;
use crate::exit::{Failure, Outcome};
use crate::output::{Style, plural, print_json, visible};

/// What `apply` was asked.
#[derive(Debug)]
pub(crate) struct ApplyRequest {
    /// The flows file.
    pub(crate) file: String,
    /// Print the plan only.
    pub(crate) dry_run: bool,
    /// Delete stored flows the file does not declare.
    pub(crate) prune: bool,
    /// Print one JSON document.
    pub(crate) json: bool,
}

/// Reads and checks the file before the database is opened (an invalid file touches nothing), plans
/// against the stored flows, and applies the plan unless `--dry-run`.
pub(crate) async fn apply(url: &str, registry: ClassRegistry, request: ApplyRequest) -> Outcome {
    let text = std::fs::read_to_string(&request.file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", request.file)))?;
    let file = parse_flows_file(&request.file, &text).map_err(|e| invalid(&request.file, &e.problems))?;
    // A dry run against a SQLite file that does not exist yet plans against no flows, rather than create
    // the file: a dry run changes nothing, not even that.
    let missing_sqlite = flowrun_app::sqlite_file(url).is_some_and(|path| !Path::new(&path).exists());
    let url = if request.dry_run && missing_sqlite {
        "memory:"
    } else {
        url
    };
    let app = open(url, MigratePolicy::SqliteOnly, registry).await?;
    let plan = app
        .management
        .plan(file.flows.clone(), request.prune)
        .await
        .map_err(|error| refused(&request.file, &file, error))?;
    let lines = plan_lines(&plan, request.dry_run);
    let changed = changed_fields(&plan);
    let report = if request.dry_run {
        plan.summary()
    } else {
        app.management.apply(plan).await?
    };
    if request.json {
        print_json(&json!({
            "created": report.created,
            "updated": report.updated,
            "deleted": report.deleted,
            "unchanged": report.unchanged,
            "changed": changed,
            "dry_run": request.dry_run,
        }));
        return Ok(());
    }
    let style = Style::stdout();
    for line in lines {
        println!("{line}");
    }
    let counts = format!(
        "{} {}, {} {}, {} {}, {} unchanged",
        report.created.len(),
        if request.dry_run { "to create" } else { "created" },
        report.updated.len(),
        if request.dry_run { "to update" } else { "updated" },
        report.deleted.len(),
        if request.dry_run { "to delete" } else { "deleted" },
        report.unchanged.len(),
    );
    if request.dry_run {
        println!("{} {counts} (dry run: nothing changed)", style.bold("plan:"));
    } else {
        println!("{} {counts}", style.bold("applied:"));
    }
    Ok(())
}

/// One line per change: `+ create NAME`, `~ update NAME (fields)`, `- delete NAME (n runs)`; past tense
/// once applied. Unchanged flows are only counted.
fn plan_lines(plan: &ApplyPlan, dry_run: bool) -> Vec<String> {
    let verb = |now: &'static str, done: &'static str| if dry_run { now } else { done };
    plan.changes
        .iter()
        .filter_map(|change| {
            let name = visible(change.name(), false);
            match change {
                PlannedChange::Create(_) => Some(format!("+ {} {name}", verb("create", "created"))),
                PlannedChange::Update { changed, .. } => Some(format!(
                    "~ {} {name} ({})",
                    verb("update", "updated"),
                    changed.join(", ")
                )),
                PlannedChange::Delete { runs, .. } => Some(format!(
                    "- {} {name} ({} with it)",
                    verb("delete", "deleted"),
                    plural(*runs, "run")
                )),
                PlannedChange::Unchanged(_) => None,
            }
        })
        .collect()
}

/// `{"NAME": ["schedule", …]}` for the updated flows.
fn changed_fields(plan: &ApplyPlan) -> BTreeMap<String, Vec<&'static str>> {
    plan.changes
        .iter()
        .filter_map(|change| match change {
            PlannedChange::Update { name, changed, .. } => Some((name.as_str().to_owned(), changed.clone())),
            _ => None,
        })
        .collect()
}

/// Exit 2 naming every problem, one per line, each with its file and line.
fn invalid(file: &str, problems: &[flowrun_app::apply_file::FileProblem]) -> Failure {
    let mut message = format!(
        "{file} is invalid ({}); nothing was changed",
        plural(problems.len() as u64, "problem")
    );
    for problem in problems {
        message.push('\n');
        message.push_str(&problem.to_string());
    }
    Failure::Usage(message)
}

/// A refused plan: invalid flows (exit 2), running flows to prune (exit 4), or storage (exit 3).
fn refused(path: &str, file: &FlowsFile, error: ApplyError) -> Failure {
    match error {
        ApplyError::Invalid(problems) => invalid(path, &file.locate(&problems).problems),
        ApplyError::Running(problems) => {
            let mut message = format!(
                "{} to prune {} running; nothing was changed",
                plural(problems.len() as u64, "flow"),
                if problems.len() == 1 { "is" } else { "are" }
            );
            for problem in file.locate(&problems).problems {
                message.push('\n');
                message.push_str(&problem.to_string());
            }
            Failure::AlreadyRunning(message)
        }
        ApplyError::Repository(error) => error.into(),
    }
}
