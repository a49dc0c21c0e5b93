//! `flowrun classes`: the flow classes this binary knows (the built-ins plus an embedder's own), with their
//! settings.

use flowrun_domain::{ClassInfo, ClassRegistry, FlowRegistry, SettingInfo};
use serde_json::{Value, json};

use crate::output::{Style, print_json};

/// Prints the registered classes and their settings; needs no database.
pub(crate) fn classes(registry: &ClassRegistry, json: bool, style: &Style) {
    let classes = registry.classes();
    if json {
        print_json(&Value::Array(classes.iter().map(class_json).collect()));
        return;
    }
    for (i, class) in classes.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{}", style.bold(&class.name));
        let settings = class.settings();
        if class.schema.is_none() {
            println!("  (settings not described: registered without a settings type)");
        } else if settings.is_empty() {
            println!("  no settings");
        }
        for setting in &settings {
            println!("  {}", setting_line(setting));
            if let Some(description) = &setting.description {
                for line in description.lines() {
                    println!("      {}", style.dim(line));
                }
            }
        }
    }
}

/// `seconds: number, default 1.0` / `program: string, required`.
fn setting_line(setting: &SettingInfo) -> String {
    let mut line = format!("{}: {}", setting.name, setting.type_name);
    match (&setting.default, setting.required) {
        (Some(default), _) => line.push_str(&format!(", default {default}")),
        (None, true) => line.push_str(", required"),
        (None, false) => line.push_str(", optional"),
    }
    line
}

/// `{"name", "settings": [{"name", "type", "required", "default", "description"}], "schema"}`.
fn class_json(class: &ClassInfo) -> Value {
    json!({
        "name": class.name,
        "settings": class.settings().iter().map(|setting| json!({
            "name": setting.name,
            "type": setting.type_name,
            "required": setting.required,
            "default": setting.default,
            "description": setting.description,
        })).collect::<Vec<_>>(),
        "schema": class.schema,
    })
}
