//! The shipped JSON Schemas, compiled into the binary and used at run time.

use serde_json::Value;

/// `schemas/object-change.v1.json`.
pub const EVENT: &str = include_str!("../schemas/object-change.v1.json");
/// `schemas/config.v1.json`.
pub const CONFIG: &str = include_str!("../schemas/config.v1.json");
/// `schemas/response.v1.json`.
pub const RESPONSE: &str = include_str!("../schemas/response.v1.json");

/// Compiles one of the shipped schemas; they are tested, so failure is a build defect.
pub fn validator(text: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(text).expect("shipped schema is JSON");
    jsonschema::options().should_validate_formats(false).build(&schema).expect("shipped schema compiles")
}

/// Turns a JSON pointer (`/actions/2/payload`) into the place users read (`actions[2].payload`).
pub fn place(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    if out.is_empty() {
        "(top level)".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_read_like_paths() {
        assert_eq!(place("/actions/2/payload"), "actions[2].payload");
        assert_eq!(place(""), "(top level)");
        assert_eq!(place("/connections/a~1b/url"), "connections.a/b.url");
    }

    #[test]
    fn shipped_schemas_compile() {
        for text in [EVENT, CONFIG, RESPONSE] {
            validator(text);
        }
    }
}
