//! [`DataFlowRepository`] on SeaORM.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowrun_domain::{
    CreateDataFlowError, DataFlow, DataFlowId, DataFlowRepository, FlowChanges, NewDataFlow, RepositoryError,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    SqlErr, TransactionTrait,
};
use tracing::warn;

use crate::entity::data_flow;
use crate::mapping::{self, repository_error};

/// Stores data flows in `data_flows`.
#[derive(Debug, Clone)]
pub struct SeaOrmDataFlowRepository {
    db: DatabaseConnection,
}

impl SeaOrmDataFlowRepository {
    /// A repository on this connection pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }
}

fn all(models: Vec<data_flow::Model>) -> Result<Vec<DataFlow>, RepositoryError> {
    models.into_iter().map(mapping::data_flow).collect()
}

#[async_trait]
impl DataFlowRepository for SeaOrmDataFlowRepository {
    async fn create(&self, flow: NewDataFlow, now: DateTime<Utc>) -> Result<DataFlow, CreateDataFlowError> {
        let (run_interval_secs, schedule_cron, schedule_tz) = mapping::schedule_columns(&flow.schedule);
        let next_run_at = flow.schedule.first_run_at(now);
        let row = data_flow::ActiveModel {
            id: NotSet,
            name: Set(flow.name.to_string()),
            description: Set(flow.description.replace('\0', "\u{FFFD}")),
            enabled: Set(flow.enabled),
            configuration: Set(flow.configuration.to_string()),
            run_interval_secs: Set(run_interval_secs),
            schedule_cron: Set(schedule_cron),
            schedule_tz: Set(schedule_tz),
            // Written below on MySQL, where the entity would send it as a TIMESTAMP (see `far_time`).
            next_run_at: Set(next_run_at.filter(|_| self.backend() != DatabaseBackend::MySql)),
            timeout_secs: Set(flow
                .timeout
                .map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))),
            retries: Set(i32::try_from(flow.retry.retries()).unwrap_or(i32::MAX)),
            retry_backoff_secs: Set(Some(
                i64::try_from(flow.retry.backoff().as_secs()).unwrap_or(i64::MAX),
            )),
            retry_at: Set(None),
            retry_attempt: Set(None),
            state: Set(None),
            last_run_at: Set(None),
            last_run_status: Set(None),
            active_run_id: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let repository = |e| CreateDataFlowError::Repository(repository_error(e));
        // One transaction: on MySQL the next run time is a second statement (see below), and a flow must
        // not be left without it.
        let txn = self.db.begin().await.map_err(repository)?;
        let inserted = data_flow::Entity::insert(row).exec(&txn).await.map_err(|error| {
            if let Some(SqlErr::UniqueConstraintViolation(_)) = error.sql_err() {
                CreateDataFlowError::Duplicate(flow.name.clone())
            } else {
                CreateDataFlowError::Repository(repository_error(error))
            }
        })?;
        if self.backend() == DatabaseBackend::MySql && next_run_at.is_some() {
            data_flow::Entity::update_many()
                .col_expr(
                    data_flow::Column::NextRunAt,
                    Expr::value(mapping::far_time(DatabaseBackend::MySql, next_run_at)),
                )
                .filter(data_flow::Column::Id.eq(inserted.last_insert_id))
                .exec(&txn)
                .await
                .map_err(repository)?;
        }
        txn.commit().await.map_err(repository)?;
        Ok(DataFlow {
            id: DataFlowId(inserted.last_insert_id),
            name: flow.name,
            description: flow.description,
            enabled: flow.enabled,
            configuration: flow.configuration,
            schedule: flow.schedule,
            next_run_at,
            timeout: flow.timeout,
            retry: flow.retry,
            pending_retry: None,
            state: None,
            last_run_at: None,
            last_run_status: None,
            created_at: now,
            updated_at: now,
        })
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<DataFlow>, RepositoryError> {
        data_flow::Entity::find()
            .filter(data_flow::Column::Name.eq(name))
            .one(&self.db)
            .await
            .map_err(repository_error)?
            .map(mapping::data_flow)
            .transpose()
    }

    async fn find_by_id(&self, id: DataFlowId) -> Result<Option<DataFlow>, RepositoryError> {
        data_flow::Entity::find_by_id(id.0)
            .one(&self.db)
            .await
            .map_err(repository_error)?
            .map(mapping::data_flow)
            .transpose()
    }

    async fn list(&self) -> Result<Vec<DataFlow>, RepositoryError> {
        all(data_flow::Entity::find()
            .order_by_asc(data_flow::Column::Name)
            .all(&self.db)
            .await
            .map_err(repository_error)?)
    }

    async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<DataFlow>, RepositoryError> {
        data_flow::Entity::update_many()
            .col_expr(data_flow::Column::Enabled, Expr::value(enabled))
            .col_expr(data_flow::Column::UpdatedAt, Expr::value(now))
            .filter(data_flow::Column::Name.eq(name))
            .exec(&self.db)
            .await
            .map_err(repository_error)?;
        self.find_by_name(name).await
    }

    async fn delete(&self, name: &str) -> Result<bool, RepositoryError> {
        let result = data_flow::Entity::delete_many()
            .filter(data_flow::Column::Name.eq(name))
            .filter(data_flow::Column::ActiveRunId.is_null())
            .exec(&self.db)
            .await
            .map_err(repository_error)?;
        Ok(result.rows_affected > 0)
    }

    async fn update(
        &self,
        id: DataFlowId,
        changes: FlowChanges,
        now: DateTime<Utc>,
    ) -> Result<Option<DataFlow>, RepositoryError> {
        let mut update =
            data_flow::Entity::update_many().col_expr(data_flow::Column::UpdatedAt, Expr::value(now));
        if let Some(description) = changes.description {
            update = update.col_expr(
                data_flow::Column::Description,
                Expr::value(description.replace('\0', "\u{FFFD}")),
            );
        }
        if let Some(configuration) = changes.configuration {
            update = update.col_expr(
                data_flow::Column::Configuration,
                Expr::value(configuration.to_string()),
            );
        }
        if let Some(change) = changes.schedule {
            let (run_interval_secs, schedule_cron, schedule_tz) = mapping::schedule_columns(&change.schedule);
            update = update
                .col_expr(data_flow::Column::RunIntervalSecs, Expr::value(run_interval_secs))
                .col_expr(data_flow::Column::ScheduleCron, Expr::value(schedule_cron))
                .col_expr(data_flow::Column::ScheduleTz, Expr::value(schedule_tz))
                // A cron schedule's next time can lie past 2038 (see `far_time`).
                .col_expr(
                    data_flow::Column::NextRunAt,
                    Expr::value(mapping::far_time(self.backend(), change.next_run_at)),
                );
        }
        if let Some(timeout) = changes.timeout {
            let secs = timeout.map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
            update = update.col_expr(data_flow::Column::TimeoutSecs, Expr::value(secs));
        }
        if let Some(retry) = changes.retry {
            update = update
                .col_expr(
                    data_flow::Column::Retries,
                    Expr::value(i32::try_from(retry.retries()).unwrap_or(i32::MAX)),
                )
                .col_expr(
                    data_flow::Column::RetryBackoffSecs,
                    Expr::value(i64::try_from(retry.backoff().as_secs()).unwrap_or(i64::MAX)),
                );
        }
        update
            .filter(data_flow::Column::Id.eq(id.0))
            .exec(&self.db)
            .await
            .map_err(repository_error)?;
        self.find_by_id(id).await
    }

    async fn list_due(&self, now: DateTime<Utc>) -> Result<Vec<DataFlow>, RepositoryError> {
        // Compared with DATETIME columns: past 2038 a TIMESTAMP bind would match nothing (see `far_time`).
        let now = mapping::far_time(self.backend(), Some(now));
        let rows = data_flow::Entity::find()
            .filter(data_flow::Column::Enabled.eq(true))
            .filter(data_flow::Column::ActiveRunId.is_null())
            .filter(
                Condition::any()
                    .add(data_flow::Column::NextRunAt.lte(now.clone()))
                    .add(data_flow::Column::RetryAt.lte(now)),
            )
            .order_by_asc(data_flow::Column::NextRunAt)
            .order_by_asc(data_flow::Column::Id)
            .all(&self.db)
            .await
            .map_err(repository_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let id = row.id;
                mapping::data_flow(row)
                    .inspect_err(|error| warn!(flow_id = id, %error, "skipping a flow that cannot be read"))
                    .ok()
            })
            .collect())
    }
}
