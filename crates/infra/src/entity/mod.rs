//! SeaORM entities: the tables as the adapters see them. Never leave this crate.

pub mod data_flow;
pub mod data_flow_run;
