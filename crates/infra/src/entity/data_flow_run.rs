//! The `data_flow_runs` table.

use sea_orm::entity::prelude::*;

/// A `data_flow_runs` row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "data_flow_runs")]
pub struct Model {
    /// Identity.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The flow it ran.
    pub data_flow_id: i64,
    /// `pending`, `in_progress`, `success` or `failed`; the database checks it.
    pub status: String,
    /// When the run was created.
    pub started_at: DateTimeUtc,
    /// When it ended.
    pub ended_at: Option<DateTimeUtc>,
    /// The error's message.
    pub error_message: Option<String>,
    /// The error's cause chain and backtrace.
    pub error_backtrace: Option<String>,
    /// Host and pid of the process running it.
    pub lease_owner: Option<String>,
    /// Until when it counts as alive without renewal.
    pub lease_expires_at: Option<DateTimeUtc>,
    /// 1, or the number of the retry.
    pub attempt: i32,
    /// `schedule`, `manual`, `retry` or `api`; the database checks it.
    pub triggered_by: String,
    /// Why a failed run failed; the database checks the values.
    pub failure_kind: Option<String>,
    /// When someone asked to cancel it.
    pub cancel_requested_at: Option<DateTimeUtc>,
    /// Who asked.
    pub cancel_requested_by: Option<String>,
    /// What the flow wrote into the run's output (NULL: nothing).
    pub output: Option<String>,
    /// Creation time.
    pub created_at: DateTimeUtc,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

/// Relations of `data_flow_runs`.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The flow it ran.
    #[sea_orm(
        belongs_to = "super::data_flow::Entity",
        from = "Column::DataFlowId",
        to = "super::data_flow::Column::Id",
        on_delete = "Cascade"
    )]
    DataFlow,
}

impl Related<super::data_flow::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::DataFlow.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
