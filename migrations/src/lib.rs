//! flowrun's database schema: the only place it is defined. Applied with [`Migrator::up`]; applying it
//! again is a no-op.

pub use sea_orm_migration::prelude::*;

mod columns;

mod m20261126_000001_create_data_flows;
mod m20261127_000001_live_run_lease_index;
mod m20261128_000001_flow_schedules;
mod m20261129_000001_run_control;
mod m20261130_000001_run_output_and_state;
mod m20261130_000002_retry_columns;
mod m20261201_000001_lifecycle_functions;

/// Every migration of flowrun, in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_data_flows::Migration),
            Box::new(m20261127_000001_live_run_lease_index::Migration),
            Box::new(m20261128_000001_flow_schedules::Migration),
            Box::new(m20261129_000001_run_control::Migration),
            Box::new(m20261130_000001_run_output_and_state::Migration),
            Box::new(m20261130_000002_retry_columns::Migration),
            Box::new(m20261201_000001_lifecycle_functions::Migration),
        ]
    }
}
