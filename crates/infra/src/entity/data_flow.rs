//! The `data_flows` table.

use sea_orm::entity::prelude::*;

/// A `data_flows` row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "data_flows")]
pub struct Model {
    /// Identity.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique name.
    #[sea_orm(unique)]
    pub name: String,
    /// Free text.
    pub description: String,
    /// Whether the scheduler runs it.
    pub enabled: bool,
    /// The configuration as JSON text (portable: never queried in SQL).
    pub configuration: String,
    /// Seconds between scheduled runs; the database checks it is positive. Kept (and ignored) beside a
    /// cron schedule.
    pub run_interval_secs: i64,
    /// A cron expression; when set, the flow runs on it instead of every interval.
    pub schedule_cron: Option<String>,
    /// The IANA time zone of `schedule_cron` (UTC when null).
    pub schedule_tz: Option<String>,
    /// When the flow is next due; null when its schedule has no next time.
    pub next_run_at: Option<DateTimeUtc>,
    /// How long one run may take, in seconds; null: no limit.
    pub timeout_secs: Option<i64>,
    /// How many times a failed run is retried.
    pub retries: i32,
    /// The wait before the first retry, in seconds (the default when null).
    pub retry_backoff_secs: Option<i64>,
    /// When the pending retry of a failed run is due; null: none pending.
    pub retry_at: Option<DateTimeUtc>,
    /// The attempt number of the pending retry.
    pub retry_attempt: Option<i32>,
    /// What the flow's last successful run saved, as JSON text (NULL: nothing yet).
    pub state: Option<String>,
    /// When the last run ended.
    pub last_run_at: Option<DateTimeUtc>,
    /// `success` or `failed`; the database checks it.
    pub last_run_status: Option<String>,
    /// The run that holds the flow while one runs: the claim that keeps a flow from running twice at once.
    pub active_run_id: Option<i64>,
    /// Creation time.
    pub created_at: DateTimeUtc,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

/// Relations of `data_flows`.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Its runs.
    #[sea_orm(has_many = "super::data_flow_run::Entity")]
    Runs,
}

impl Related<super::data_flow_run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Runs.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
