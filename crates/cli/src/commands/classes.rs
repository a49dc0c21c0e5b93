//! `flowrun classes`: the flow classes this binary knows (the built-ins plus an embedder's own).

use flowrun_domain::{ClassRegistry, FlowRegistry};
use serde_json::Value;

use crate::output::print_json;

/// Prints the registered class names; needs no database.
pub(crate) fn classes(registry: &ClassRegistry, json: bool) {
    let names = registry.class_names();
    if json {
        print_json(&Value::from(names));
    } else {
        for name in names {
            println!("{name}");
        }
    }
}
