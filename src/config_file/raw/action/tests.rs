//! The JSON Schema (`schemas/config.v1.json`) and the serde types of actions agree: for
//! every action type, the fields the schema allows are exactly the fields serde reads.

use std::collections::BTreeSet;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserializer;
use serde_json::{json, Value};

use super::*;

/// The field names serde reads for `T`, taken from its derived `Deserialize`.
fn serde_fields<T: DeserializeOwned>() -> BTreeSet<&'static str> {
    struct Names(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Names {
        type Error = de::value::Error;
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("only the field names are wanted"))
        }
        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut names = Names(&[]);
    let _ = T::deserialize(&mut names);
    assert!(!names.0.is_empty(), "{} is not a struct", std::any::type_name::<T>());
    names.0.iter().copied().collect()
}

/// The fields serde reads for each action type, `type` included.
fn serde_fields_by_type() -> Vec<(&'static str, BTreeSet<&'static str>)> {
    let common = serde_fields::<CommonFields>();
    let chat = serde_fields::<ChatFields>();
    let with = |own: BTreeSet<&'static str>| -> BTreeSet<&'static str> {
        common.iter().chain(own.iter()).copied().chain(["type"]).collect()
    };
    vec![
        ("webhook", with(serde_fields::<WebhookFields>())),
        ("itop", with(serde_fields::<ItopFields>())),
        ("slack", with(chat.clone())),
        ("rocketchat", with(serde_fields::<RocketchatFields>())),
        ("google_chat", with(serde_fields::<GoogleChatFields>())),
        ("teams", with(chat.iter().copied().chain(serde_fields::<TeamsOwnFields>()).collect())),
    ]
}

fn schema() -> Value {
    serde_json::from_str(crate::schema::CONFIG).unwrap()
}

/// The fields the schema allows for action type `tag`: every property of `$defs/action`
/// but those its `if type == tag` branch forbids (`not: {}`).
fn schema_fields(schema: &Value, tag: &str) -> BTreeSet<String> {
    let action = &schema["$defs"]["action"];
    let branch = action["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["if"]["properties"]["type"]["const"] == tag)
        .unwrap_or_else(|| panic!("no schema branch for type {tag}"));
    let forbidden = branch["then"]["properties"].as_object().unwrap();
    assert!(forbidden.values().all(|p| p.get("not").is_some()), "{tag}: a branch only forbids fields");
    action["properties"].as_object().unwrap().keys().filter(|k| !forbidden.contains_key(*k)).cloned().collect()
}

/// A value the schema accepts for `node`: its default, its first allowed value, or the
/// smallest value of its type (objects with their required properties).
fn sample(schema: &Value, node: &Value) -> Value {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        return sample(schema, schema.pointer(r.trim_start_matches('#')).unwrap());
    }
    if let Some(d) = node.get("default").filter(|d| !d.is_null()) {
        return d.clone();
    }
    if let Some(c) = node.get("const") {
        return c.clone();
    }
    if let Some(first) = node.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    if let Some(first) = node.get("oneOf").or(node.get("anyOf")).and_then(|v| v.get(0)) {
        return sample(schema, first);
    }
    let ty = match &node["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ => "string",
    };
    match ty {
        "boolean" => json!(true),
        "integer" | "number" => json!(1),
        "array" => json!([]),
        "object" => {
            let mut out = serde_json::Map::new();
            for key in node["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                out.insert(key.into(), sample(schema, &node["properties"][key]));
            }
            if out.is_empty() && node.get("additionalProperties").is_some_and(Value::is_object) {
                out.insert("k".into(), sample(schema, &node["additionalProperties"]));
            }
            Value::Object(out)
        }
        "null" => Value::Null,
        _ => json!("x"),
    }
}

/// `$defs/action` with the definitions it refers to, as a validator of one action.
fn action_validator(schema: &Value) -> jsonschema::Validator {
    let mut action = schema["$defs"]["action"].clone();
    action["$defs"] = schema["$defs"].clone();
    jsonschema::validator_for(&action).unwrap()
}

#[test]
fn every_field_the_schema_allows_is_one_serde_reads_and_back() {
    let schema = schema();
    for (tag, serde) in serde_fields_by_type() {
        let serde: BTreeSet<String> = serde.into_iter().map(str::to_string).collect();
        assert_eq!(schema_fields(&schema, tag), serde, "action type {tag}: schema fields vs serde fields");
    }
    // The keys the deserializer splits on are the structs' own.
    assert_eq!(serde_fields::<CommonFields>(), COMMON_FIELDS.into_iter().collect());
    assert_eq!(serde_fields::<ChatFields>(), CHAT_FIELDS.into_iter().collect());
}

#[test]
fn each_allowed_field_is_accepted_by_both_and_each_other_refused_by_both() {
    let schema = schema();
    let validator = action_validator(&schema);
    let properties = schema["$defs"]["action"]["properties"].as_object().unwrap();
    for (tag, _) in serde_fields_by_type() {
        let allowed = schema_fields(&schema, tag);
        for (key, node) in properties {
            if key == "type" {
                continue;
            }
            let mut action = json!({"name": "a", "type": tag, "connection": "c"});
            action[key] = sample(&schema, node);
            let by_schema = validator.is_valid(&action);
            let by_serde = serde_json::from_value::<ActionConfig>(action.clone());
            if allowed.contains(key) {
                assert!(by_schema, "{tag}: the schema refuses its own field in {action}");
                by_serde.unwrap_or_else(|e| panic!("{tag}: serde refuses {action}: {e}"));
            } else {
                assert!(!by_schema, "{tag}: the schema accepts {key} in {action}");
                assert!(by_serde.is_err(), "{tag}: serde accepts {key} in {action}");
            }
        }
    }
}

#[test]
fn shipped_and_example_configs_pass_the_schema_and_serde() {
    let schema = schema();
    let validator = action_validator(&schema);
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = vec![format!("{root}/examples/log-notification/config.yaml")];
    for entry in std::fs::read_dir(format!("{root}/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path.display().to_string());
        }
    }
    let mut actions = 0;
    for file in &files {
        let mut config: Value = serde_norway::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        crate::config::normalise_yes_no(&mut config);
        for action in config["actions"].as_array().into_iter().flatten() {
            let errors: Vec<String> = validator.iter_errors(action).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{file}: {action}: {errors:?}");
            serde_json::from_value::<ActionConfig>(action.clone()).unwrap_or_else(|e| panic!("{file}: {action}: {e}"));
            actions += 1;
        }
    }
    assert!(actions >= 6, "only {actions} actions in {files:?}");
}
