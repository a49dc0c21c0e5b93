//! `flowrun migrate`: apply the schema's migrations (idempotent).

use flowrun_app::MigratePolicy;
use flowrun_domain::ClassRegistry;

use crate::database::open;
use crate::exit::Outcome;

/// Opens the database with every migration applied, and says so.
pub(crate) async fn migrate(url: &str, registry: ClassRegistry) -> Outcome {
    let app = open(url, MigratePolicy::Always, registry).await?;
    println!("{} is migrated", app.masked_url());
    Ok(())
}
