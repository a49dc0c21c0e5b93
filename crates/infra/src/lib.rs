//! flowrun's SQL adapters: the SeaORM repositories ([`SeaOrmDataFlowRepository`], [`SeaOrmRunRepository`])
//! for SQLite, PostgreSQL and MySQL/MariaDB, connection and migration ([`connect`], [`migrate`]), the open
//! database as the domain's `Storage` port ([`SqlStore`]), and the [`SystemClock`]. SeaORM types never leave
//! this crate's public API except the connection handle, which only tools and tests ask for.

mod claim;
mod clock;
mod db;
pub mod entity;
mod flows_repo;
mod group_commit;
mod history;
pub mod hot_path;
mod mapping;
mod runs_repo;
mod secrets;
mod store;
pub mod text;
mod writer;

pub use clock::SystemClock;
pub use db::{
    Backend, ConnectError, ConnectProblem, ConnectSettings, DriverText, PING_IDLE_AFTER, SQLITE_MMAP_BYTES,
    connect, connect_run_writer, is_migrated, migrate, numbered_placeholders, sqlite_file,
};
pub use flows_repo::SeaOrmDataFlowRepository;
pub use runs_repo::{SeaOrmRunRepository, execute_unprepared};
pub use sea_orm::DatabaseConnection;
pub use secrets::{MASK, mask_url, mask_webhook, scrub};
pub use store::SqlStore;
pub use writer::{RunWriter, WriteTransaction};
