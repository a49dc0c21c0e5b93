//! Making any text storable on every backend; the rule lives in [`flowrun_domain::text`] so every adapter
//! (SQL and in-memory) stores text the same way.

pub use flowrun_domain::text::*;
