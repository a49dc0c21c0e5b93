//! The flow registry: turning a class name plus a flow's configuration into a runnable [`Flow`].
//!
//! Classes are registered typed ([`ClassRegistry::register`] with a [`FlowClass`]): the registry reads the
//! class's settings from the configuration with serde, refuses unknown fields and names the field that is
//! wrong, resolves `"${env:NAME}"` references, and describes the settings from their JSON schema for
//! `flowrun classes`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::flow::Flow;

/// Why a flow could not be built from its class name and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BuildFlowError {
    /// No class of that name is registered.
    #[error("unknown flow class `{class}` (registered: {})", known.join(", "))]
    UnknownClass {
        /// The name asked for.
        class: String,
        /// The registered names, sorted.
        known: Vec<String>,
    },
    /// The class exists but refused the configuration.
    #[error("invalid configuration for flow class `{class}`: {reason}")]
    InvalidConfiguration {
        /// The class.
        class: String,
        /// What is wrong, for a person: the field and the reason.
        reason: String,
    },
}

/// Turns a class name plus a flow's whole configuration into a runnable [`Flow`].
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait FlowRegistry: Send + Sync {
    /// Builds the flow to run it, resolving `${env:…}` references.
    ///
    /// MUST return [`BuildFlowError::UnknownClass`] for a name that is not registered, and
    /// [`BuildFlowError::InvalidConfiguration`] when the class refuses the configuration.
    fn build(&self, class_name: &str, configuration: &Value) -> Result<Box<dyn Flow>, BuildFlowError>;

    /// Checks a configuration before it is stored: as [`FlowRegistry::build`], except that an `${env:…}`
    /// reference to a variable this process does not have is not an error (the process that runs the flow
    /// may have it).
    fn check(&self, class_name: &str, configuration: &Value) -> Result<(), BuildFlowError>;

    /// The registered class names, sorted.
    fn class_names(&self) -> Vec<String>;

    /// The registered classes with their settings, sorted by name.
    fn classes(&self) -> Vec<ClassInfo>;
}

/// A flow class with typed settings, registered with [`ClassRegistry::register`].
///
/// ```
/// use flowrun_domain::{ClassRegistry, Flow, FlowClass, FlowError, RunContext};
///
/// /// Says hello.
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct HelloSettings {
///     /// Who to greet.
///     #[serde(default = "world")]
///     name: String,
/// }
/// fn world() -> String { "world".into() }
///
/// struct Hello(HelloSettings);
///
/// impl FlowClass for Hello {
///     const NAME: &'static str = "Hello";
///     type Settings = HelloSettings;
///     fn build(settings: HelloSettings) -> Result<Self, String> {
///         Ok(Self(settings))
///     }
/// }
///
/// #[async_trait::async_trait]
/// impl Flow for Hello {
///     async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
///         context.log(format!("hello, {}", self.0.name));
///         Ok(())
///     }
/// }
///
/// let mut registry = ClassRegistry::new();
/// registry.register::<Hello>();
/// ```
pub trait FlowClass: Flow + Sized + 'static {
    /// The class name configurations use (`"class_name": "…"`).
    const NAME: &'static str;

    /// The class's settings: the configuration without `class_name`. Unknown fields are refused whether or
    /// not the type says `#[serde(deny_unknown_fields)]`; doc comments on fields show in `flowrun classes`.
    type Settings: DeserializeOwned + JsonSchema;

    /// Builds the flow from settings that deserialized; an `Err` is a reason for a person (checks serde
    /// cannot express, such as a non-negative duration).
    fn build(settings: Self::Settings) -> Result<Self, String>;
}

/// A registered class as `flowrun classes` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassInfo {
    /// The class name.
    pub name: String,
    /// The JSON schema of its settings; `None` for a class registered untyped ([`ClassRegistry::register_fn`]).
    pub schema: Option<Value>,
}

impl ClassInfo {
    /// The top-level settings, from the schema: the required ones first, each group by name.
    pub fn settings(&self) -> Vec<SettingInfo> {
        let Some(schema) = &self.schema else {
            return Vec::new();
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return Vec::new();
        };
        let mut settings: Vec<SettingInfo> = properties
            .iter()
            .map(|(name, property)| SettingInfo {
                name: name.clone(),
                type_name: type_name(property, schema),
                required: required.contains(&name.as_str()),
                default: property.get("default").cloned(),
                description: property
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
            .collect();
        settings.sort_by(|a, b| b.required.cmp(&a.required).then_with(|| a.name.cmp(&b.name)));
        settings
    }
}

/// One setting of a class.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingInfo {
    /// Its field name.
    pub name: String,
    /// Its JSON type, for a person (`string`, `number`, `array of string`, `string or null`, …).
    pub type_name: String,
    /// Whether a configuration must give it.
    pub required: bool,
    /// Its default, when it has one.
    pub default: Option<Value>,
    /// The field's doc comment.
    pub description: Option<String>,
}

/// A short JSON type name for a schema: enough to write a configuration, not a schema language.
fn type_name(schema: &Value, root: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs").and_then(|defs| defs.get(name)));
        return match target {
            Some(target) if target.get("$ref").is_none() => type_name(target, root),
            _ => "object".to_owned(),
        };
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values.iter().map(Value::to_string).collect();
        return format!("one of {}", names.join(", "));
    }
    let alternatives = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array);
    if let Some(alternatives) = alternatives {
        let names: Vec<String> = alternatives.iter().map(|a| type_name(a, root)).collect();
        return names.join(" or ");
    }
    match schema.get("type") {
        Some(Value::String(kind)) => single_type(kind, schema, root),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .map(|kind| single_type(kind, schema, root))
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_owned(),
    }
}

fn single_type(kind: &str, schema: &Value, root: &Value) -> String {
    match (kind, schema.get("items")) {
        ("array", Some(items)) => format!("array of {}", type_name(items, root)),
        ("object", _) if schema.get("additionalProperties").is_some_and(Value::is_object) => {
            let values = schema
                .get("additionalProperties")
                .map_or_else(String::new, |v| type_name(v, root));
            format!("map of {values}")
        }
        ("integer", _) if schema.get("minimum").and_then(Value::as_f64) == Some(0.0) => {
            "integer ≥ 0".to_owned()
        }
        _ => kind.to_owned(),
    }
}

/// Builds one class of flow from the flow's whole configuration (with `${env:…}` already resolved).
pub type FlowConstructor = Arc<dyn Fn(&Value) -> Result<Box<dyn Flow>, String> + Send + Sync + 'static>;

/// Looks up an environment variable for `${env:NAME}` references.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync + 'static>;

#[derive(Clone)]
struct Class {
    constructor: FlowConstructor,
    schema: Option<Value>,
}

/// The plain [`FlowRegistry`]: a map from class name to constructor.
#[derive(Clone)]
pub struct ClassRegistry {
    classes: BTreeMap<String, Class>,
    env: EnvLookup,
}

impl Default for ClassRegistry {
    fn default() -> Self {
        Self {
            classes: BTreeMap::new(),
            env: Arc::new(|name| std::env::var(name).ok()),
        }
    }
}

impl ClassRegistry {
    /// An empty registry that resolves `${env:…}` from the process environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same registry resolving `${env:…}` with `lookup` instead of the process environment (tests,
    /// or secrets from somewhere else).
    pub fn with_env(mut self, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.env = Arc::new(lookup);
        self
    }

    /// Registers (or replaces) a typed class under [`FlowClass::NAME`].
    pub fn register<C: FlowClass>(&mut self) -> &mut Self {
        let schema = serde_json::to_value(schemars::schema_for!(C::Settings)).ok();
        let constructor: FlowConstructor = Arc::new(|configuration: &Value| {
            let settings = settings_of::<C::Settings>(configuration)?;
            let flow = C::build(settings)?;
            Ok(Box::new(flow) as Box<dyn Flow>)
        });
        self.classes
            .insert(C::NAME.to_owned(), Class { constructor, schema });
        self
    }

    /// Registers (or replaces) an untyped class: the constructor gets the flow's whole configuration and
    /// returns a reason for a person when it refuses it. Prefer [`ClassRegistry::register`], which checks
    /// and describes the settings.
    pub fn register_fn<F>(&mut self, class_name: impl Into<String>, constructor: F) -> &mut Self
    where
        F: Fn(&Value) -> Result<Box<dyn Flow>, String> + Send + Sync + 'static,
    {
        self.classes.insert(
            class_name.into(),
            Class {
                constructor: Arc::new(constructor),
                schema: None,
            },
        );
        self
    }

    fn class(&self, class_name: &str) -> Result<&Class, BuildFlowError> {
        self.classes
            .get(class_name)
            .ok_or_else(|| BuildFlowError::UnknownClass {
                class: class_name.to_owned(),
                known: self.class_names(),
            })
    }

    fn construct(
        &self,
        class_name: &str,
        configuration: &Value,
        missing: Missing,
    ) -> Result<Box<dyn Flow>, BuildFlowError> {
        let class = self.class(class_name)?;
        let invalid = |reason: String| BuildFlowError::InvalidConfiguration {
            class: class_name.to_owned(),
            reason,
        };
        // The webhook is the notifier's business: a variable it lacks must not stop the flow from running,
        // so it is checked for its form here and resolved only when a notification is sent.
        let notify = configuration.get(NOTIFY_KEY);
        if let Some(notify) = notify {
            let shown = resolve_env(notify, self.env.as_ref(), Missing::Keep).map_err(invalid)?;
            check_notify_value(&shown).map_err(invalid)?;
        }
        let resolved = match (configuration, notify) {
            (Value::Object(object), Some(notify)) => {
                let mut others = object.clone();
                others.remove(NOTIFY_KEY);
                let mut resolved =
                    resolve_env(&Value::Object(others), self.env.as_ref(), missing).map_err(invalid)?;
                if let Value::Object(resolved) = &mut resolved {
                    resolved.insert(NOTIFY_KEY.to_owned(), notify.clone());
                }
                resolved
            }
            _ => resolve_env(configuration, self.env.as_ref(), missing).map_err(invalid)?,
        };
        (class.constructor)(&resolved).map_err(invalid)
    }
}

impl fmt::Debug for ClassRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.classes.keys()).finish()
    }
}

impl FlowRegistry for ClassRegistry {
    fn build(&self, class_name: &str, configuration: &Value) -> Result<Box<dyn Flow>, BuildFlowError> {
        self.construct(class_name, configuration, Missing::Refuse)
    }

    fn check(&self, class_name: &str, configuration: &Value) -> Result<(), BuildFlowError> {
        self.construct(class_name, configuration, Missing::Keep).map(drop)
    }

    fn class_names(&self) -> Vec<String> {
        self.classes.keys().cloned().collect()
    }

    fn classes(&self) -> Vec<ClassInfo> {
        self.classes
            .iter()
            .map(|(name, class)| ClassInfo {
                name: name.clone(),
                schema: class.schema.clone(),
            })
            .collect()
    }
}

/// The configuration key naming a flow's own webhook for failure and recovery notifications: an http(s)
/// URL, or an `${env:NAME}` reference to one. It belongs to flowrun, not to the class, so it is not one of
/// the class's settings.
pub const NOTIFY_KEY: &str = "notify";

/// A flow's own notification webhook ([`NOTIFY_KEY`]) with its `${env:…}` references resolved from the
/// process's environment; `None` when the configuration names none.
///
/// # Errors
/// A reason for a person when the value is not a string, a reference cannot be resolved, or it is not an
/// http(s) URL.
pub fn notify_url(configuration: &Value) -> Option<Result<String, String>> {
    let value = configuration.get(NOTIFY_KEY)?;
    let lookup = |name: &str| std::env::var(name).ok();
    Some(
        resolve_env(value, &lookup, Missing::Refuse)
            .and_then(|value| check_notify_value(&value).map(|()| value))
            .map(|value| value.as_str().unwrap_or_default().to_owned()),
    )
}

/// Refuses a [`NOTIFY_KEY`] value that is not an http(s) URL; an unresolved reference is let through (the
/// process that sends the notification may have the variable).
fn check_notify_value(value: &Value) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "`{NOTIFY_KEY}`: must be an http:// or https:// URL (or \"${{env:NAME}}\")"
        ))
    };
    let Some(text) = value.as_str() else {
        return refuse();
    };
    if text.contains(ENV_PREFIX) {
        return Ok(());
    }
    let host = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    match host {
        Some(host) if !host.is_empty() && !text.chars().any(char::is_whitespace) => Ok(()),
        _ => refuse(),
    }
}

/// Reads a class's settings from a flow's whole configuration: the object without `class_name` and
/// [`NOTIFY_KEY`] (a string configuration has no settings). Unknown fields are refused; an error names the
/// field.
pub fn settings_of<T: DeserializeOwned>(configuration: &Value) -> Result<T, String> {
    let settings = match configuration {
        Value::Object(object) => {
            let mut object = object.clone();
            object.remove("class_name");
            object.remove(NOTIFY_KEY);
            Value::Object(object)
        }
        _ => Value::Object(Map::new()),
    };
    let mut unknown = Vec::new();
    let mut note_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let deserializer = serde_ignored::Deserializer::new(settings, &mut note_unknown);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    match parsed {
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if path == "." || path.is_empty() {
                Err(inner.to_string())
            } else {
                Err(format!("`{path}`: {inner}"))
            }
        }
        Ok(_) if !unknown.is_empty() => Err(format!(
            "unknown setting{} {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|path| format!("`{path}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(settings) => Ok(settings),
    }
}

/// What to do with a reference to a variable the environment does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    Refuse,
    Keep,
}

const ENV_PREFIX: &str = "${env:";

/// The configuration with every `${env:NAME}` inside its strings replaced by the variable's value.
fn resolve_env(
    value: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    missing: Missing,
) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) if text.contains(ENV_PREFIX) => {
            Value::String(resolve_text(text, lookup, missing)?)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve_env(item, lookup, missing))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, item)| Ok((key.clone(), resolve_env(item, lookup, missing)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn resolve_text(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    missing: Missing,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ENV_PREFIX) {
        out.push_str(&rest[..at]);
        let after = &rest[at + ENV_PREFIX.len()..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated `${{env:` reference in {text:?}"));
        };
        let name = &after[..end];
        if !is_env_name(name) {
            return Err(format!(
                "`${{env:{name}}}` is not a valid environment variable reference (letters, digits and _)"
            ));
        }
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None if missing == Missing::Keep => out.push_str(&rest[at..at + ENV_PREFIX.len() + end + 1]),
            None => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::RunContext;
    use crate::flow::FlowError;
    use async_trait::async_trait;
    use serde::Deserialize;
    use serde_json::json;

    struct Nothing;

    #[async_trait]
    impl Flow for Nothing {
        async fn run(&mut self, _: &mut RunContext) -> Result<(), FlowError> {
            Ok(())
        }
    }

    /// Copies a file.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)] // Only described, never read.
    struct CopySettings {
        /// Where from.
        source: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default = "three")]
        tries: u32,
        target: Option<String>,
    }

    fn three() -> u32 {
        3
    }

    struct Copy(CopySettings);

    #[async_trait]
    impl Flow for Copy {
        async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
            context.log(&self.0.source);
            Ok(())
        }
    }

    impl FlowClass for Copy {
        const NAME: &'static str = "Copy";
        type Settings = CopySettings;
        fn build(settings: CopySettings) -> Result<Self, String> {
            if settings.source.is_empty() {
                return Err("`source` must not be empty".into());
            }
            Ok(Self(settings))
        }
    }

    fn registry() -> ClassRegistry {
        let mut registry =
            ClassRegistry::new().with_env(|name| (name == "HOME_DIR").then(|| "/home/x".to_owned()));
        registry.register::<Copy>();
        registry.register_fn("Nothing", |_| Ok(Box::new(Nothing)));
        registry.register_fn("Picky", |_| Err("needs a table".into()));
        registry
    }

    fn reason(result: Result<Box<dyn Flow>, BuildFlowError>) -> String {
        match result.err().expect("refused") {
            BuildFlowError::InvalidConfiguration { reason, .. } => reason,
            other => panic!("not a configuration error: {other}"),
        }
    }

    #[test]
    fn registry_builds_known_classes_and_names_the_known_ones_otherwise() {
        let registry = registry();
        assert!(registry.build("Nothing", &json!({})).is_ok());
        assert_eq!(
            registry.build("Picky", &json!({})).err(),
            Some(BuildFlowError::InvalidConfiguration {
                class: "Picky".into(),
                reason: "needs a table".into()
            })
        );
        let unknown = registry.build("Missing", &json!({})).err().expect("unknown");
        assert_eq!(
            unknown.to_string(),
            "unknown flow class `Missing` (registered: Copy, Nothing, Picky)"
        );
    }

    #[test]
    fn typed_settings_refuse_unknown_fields_and_name_the_bad_field() {
        let registry = registry();
        assert!(
            registry
                .build("Copy", &json!({"class_name": "Copy", "source": "a"}))
                .is_ok()
        );
        assert_eq!(
            reason(registry.build("Copy", &json!({"class_name": "Copy", "source": "a", "sourc": 1}))),
            "unknown setting `sourc`"
        );
        assert_eq!(
            reason(registry.build("Copy", &json!({"source": "a", "args": ["x", 2]}))),
            "`args[1]`: invalid type: integer `2`, expected a string"
        );
        assert_eq!(
            reason(registry.build("Copy", &json!({}))),
            "missing field `source`"
        );
        assert_eq!(
            reason(registry.build("Copy", &json!({"source": ""}))),
            "`source` must not be empty"
        );
    }

    #[test]
    fn a_flow_names_its_own_webhook_beside_its_class_settings() {
        let registry = registry();
        for notify in [
            "https://hooks.example/T0/B1",
            "http://127.0.0.1:9/x?y=1",
            "${env:NOPE_NOT_SET}",
        ] {
            let configuration = json!({"class_name": "Copy", "source": "a", "notify": notify});
            assert!(registry.build("Copy", &configuration).is_ok(), "{notify}");
            assert!(registry.check("Copy", &configuration).is_ok(), "{notify}");
        }
    }

    #[test]
    fn a_webhook_that_is_not_an_http_url_is_refused_naming_notify() {
        let registry = registry();
        for notify in [
            json!("ftp://hooks.example/x"),
            json!("https://"),
            json!("hooks.example"),
            json!(5),
            json!("https://a b"),
            json!("${env:HOME_DIR}"),
        ] {
            let why = reason(
                registry
                    .check("Copy", &json!({"source": "a", "notify": notify}))
                    .map(|()| Box::new(Nothing) as Box<dyn Flow>),
            );
            assert!(
                why.starts_with("`notify`: must be an http:// or https:// URL"),
                "{notify}: {why}"
            );
        }
    }

    #[test]
    fn a_webhook_resolves_from_the_environment_only_when_a_notification_is_sent() {
        assert_eq!(notify_url(&json!({"source": "a"})), None);
        assert_eq!(
            notify_url(&json!({"notify": "https://hooks.example/x"})),
            Some(Ok("https://hooks.example/x".to_owned()))
        );
        assert_eq!(
            notify_url(&json!({"notify": "${env:FLOWRUN_TEST_SURELY_UNSET}"})),
            Some(Err(
                "environment variable `FLOWRUN_TEST_SURELY_UNSET` is not set".to_owned()
            ))
        );
        assert!(matches!(notify_url(&json!({"notify": 3})), Some(Err(_))));
    }

    #[test]
    fn env_references_resolve_when_built_and_may_be_missing_when_checked() {
        let registry = registry();
        assert!(
            registry
                .build("Copy", &json!({"source": "${env:HOME_DIR}/a"}))
                .is_ok()
        );
        assert_eq!(
            reason(registry.build("Copy", &json!({"source": "${env:NOPE_NOT_SET}"}))),
            "environment variable `NOPE_NOT_SET` is not set"
        );
        assert!(
            registry
                .check("Copy", &json!({"source": "${env:NOPE_NOT_SET}"}))
                .is_ok()
        );
        assert!(reason(registry.build("Copy", &json!({"source": "${env:1x}"}))).contains("not a valid"));
        let resolved = resolve_env(
            &json!({"a": ["x ${env:HOME_DIR} y ${env:HOME_DIR}"], "b": 1}),
            &|name| (name == "HOME_DIR").then(|| "/h".to_owned()),
            Missing::Refuse,
        )
        .expect("resolves");
        assert_eq!(resolved, json!({"a": ["x /h y /h"], "b": 1}));
    }

    #[test]
    fn classes_describe_their_settings_from_the_schema() {
        let classes = registry().classes();
        let copy = classes.iter().find(|c| c.name == "Copy").expect("Copy");
        let settings = copy.settings();
        let names: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["source", "args", "target", "tries"]);
        assert_eq!(settings[0].type_name, "string");
        assert!(settings[0].required);
        assert_eq!(settings[0].description.as_deref(), Some("Where from."));
        assert_eq!(settings[1].type_name, "array of string");
        assert_eq!(settings[2].type_name, "string or null");
        assert_eq!(settings[3].default, Some(json!(3)));
        assert!(!settings[3].required);
        let nothing = classes.iter().find(|c| c.name == "Nothing").expect("Nothing");
        assert!(nothing.settings().is_empty());
    }
}
