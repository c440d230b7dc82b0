//! The YAML document before it is typed: `${ENV}` expansion (with the values it put in
//! hidden from every message), YAML 1.1 `yes`/`no`, and the JSON Schema problems, each
//! reported at its place in the words a user reads.

use serde_json::Value;

use super::{ConfigError, Problems};
use crate::schema;

/// What `${ENV}` expansion put into the document: environment values are often secrets,
/// so no problem message may show them.
#[derive(Debug, Default)]
pub(super) struct Expanded {
    /// JSON pointers of the strings that were expanded.
    pointers: Vec<String>,
    /// The values substituted.
    values: Vec<String>,
}

impl Expanded {
    /// Whether the value at `pointer` holds an expanded string.
    pub(super) fn under(&self, pointer: &str) -> bool {
        self.pointers.iter().any(|p| p == pointer || pointer.is_empty() || p.starts_with(&format!("{pointer}/")))
    }

    /// The error with every substituted value that a message still shows replaced by `***`
    /// (short values are too common a text to hide).
    pub(super) fn redact(&self, e: ConfigError) -> ConfigError {
        let ConfigError::Invalid { problems } = e else { return e };
        let problems = problems
            .into_iter()
            .map(|mut p| {
                for v in self.values.iter().filter(|v| v.chars().count() >= 4) {
                    p.message = p.message.replace(v.as_str(), "***");
                }
                p
            })
            .collect();
        ConfigError::Invalid { problems }
    }
}

/// `${NAME}` and `${NAME:-default}` in every string are replaced by the environment's value.
pub(super) fn expand_env(value: &mut Value, place: &str, problems: &mut Problems, expanded: &mut Expanded) {
    match value {
        Value::String(s) if s.contains("${") => match expand_string(s, &mut expanded.values) {
            Ok(text) => {
                *s = text;
                expanded.pointers.push(place.to_string());
            }
            Err(message) => problems.add(schema::place(place), message),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &format!("{place}/{i}"), problems, expanded);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                expand_env(v, &format!("{place}/{}", k.replace('~', "~0").replace('/', "~1")), problems, expanded);
            }
        }
        _ => {}
    }
}

pub(super) fn expand_string(text: &str, substituted: &mut Vec<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unclosed ${ in environment reference".to_string())?;
        let (name, default) = match after[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&after[..end], None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("${{{}}} is not an environment variable reference", &after[..end]));
        }
        match (std::env::var(name), default) {
            (Ok(v), _) => {
                out.push_str(&v);
                substituted.push(v);
            }
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// YAML 1.1 readers turn `other_actions: no` into a boolean; accept it as the string it was meant to be.
pub(crate) fn normalise_yes_no(value: &mut Value) {
    if let Some(actions) = value.get_mut("actions").and_then(Value::as_array_mut) {
        for a in actions {
            if let Some(v) = a.get_mut("other_actions") {
                if let Some(b) = v.as_bool() {
                    *v = Value::String(if b { "yes" } else { "no" }.into());
                }
            }
        }
    }
}

pub(super) fn schema_problems(value: &Value, problems: &mut Problems, expanded: &Expanded) {
    use std::sync::OnceLock;
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| schema::validator(schema::CONFIG));
    for e in validator.iter_errors(value) {
        let pointer = e.instance_path().as_str().to_string();
        let instance = value.pointer(&pointer).unwrap_or(&Value::Null);
        // A value from the environment is not shown: it is often a secret.
        let hide = expanded.under(&pointer);
        let message = variant_problems(e.schema_path().as_str(), instance, hide)
            .or_else(|| forbidden_field(e.schema_path().as_str()))
            .unwrap_or_else(|| if hide { e.masked().to_string() } else { e.to_string() });
        problems.add(schema::place(&pointer), message);
    }
}

/// For a `oneOf` over `type`-tagged variants, validates against the variant the object
/// names, so the user reads "unknown key `urll`" rather than "matches none of the variants".
pub(super) fn variant_problems(schema_path: &str, instance: &Value, hide: bool) -> Option<String> {
    let root: Value = serde_json::from_str(schema::CONFIG).ok()?;
    let one_of = root.pointer(schema_path)?.as_array()?;
    let tag = instance.get("type")?.as_str()?;
    let variants: Vec<&Value> = one_of.iter().map(|v| resolve_ref(&root, v)).collect();
    let tags: Vec<&str> =
        variants.iter().filter_map(|v| v.pointer("/properties/type/const").and_then(Value::as_str)).collect();
    let Some(variant) =
        variants.iter().find(|v| v.pointer("/properties/type/const").and_then(Value::as_str) == Some(tag))
    else {
        return Some(format!("type {tag:?} is not one of {}", tags.join(", ")));
    };
    let mut standalone = (*variant).clone();
    if let (Some(obj), Some(defs)) = (standalone.as_object_mut(), root.get("$defs")) {
        obj.insert("$defs".into(), defs.clone());
    }
    let validator = jsonschema::validator_for(&standalone).ok()?;
    let messages: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| {
            let inner = schema::place(e.instance_path().as_str());
            let text = if hide { e.masked().to_string() } else { e.to_string() };
            if inner == "(top level)" {
                text
            } else {
                format!("{inner}: {text}")
            }
        })
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

/// A field another action type owns is a `not: {}` schema whose description says so
/// ("not a field of a slack action"): that sentence, rather than the validator's.
pub(super) fn forbidden_field(schema_path: &str) -> Option<String> {
    let parent = schema_path.strip_suffix("/not")?;
    let root: Value = serde_json::from_str(schema::CONFIG).ok()?;
    root.pointer(parent)?.get("description")?.as_str().map(str::to_string)
}

/// For the semantic pass over a config the schema refused: every action without the fields
/// its type does not have (the schema reported them; serde would refuse the whole file).
pub(super) fn without_foreign_action_fields(mut value: Value) -> Value {
    let Ok(root) = serde_json::from_str::<Value>(schema::CONFIG) else { return value };
    let branches = root.pointer("/$defs/action/allOf").and_then(Value::as_array);
    for action in value.get_mut("actions").and_then(Value::as_array_mut).into_iter().flatten() {
        let tag = action.get("type").and_then(Value::as_str).map(str::to_string);
        let forbidden = branches
            .into_iter()
            .flatten()
            .find(|b| b.pointer("/if/properties/type/const").and_then(Value::as_str) == tag.as_deref())
            .and_then(|b| b.pointer("/then/properties"))
            .and_then(Value::as_object);
        if let (Some(fields), Some(forbidden)) = (action.as_object_mut(), forbidden) {
            fields.retain(|k, _| !forbidden.contains_key(k));
        }
    }
    value
}

pub(super) fn resolve_ref<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')).and_then(|p| root.pointer(p)).unwrap_or(v)
}
