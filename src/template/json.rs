//! JSON payloads with placeholders: parsed strictly once, placeholders compiled inside
//! their strings, values substituted into the parsed tree so the result is always JSON.

use serde_json::Value;
use thiserror::Error;

use super::{looks_like_placeholder, Escape, Placeholder, RenderContext, Template, TemplateError};

/// A JSON document whose strings (keys included) may hold placeholders; rendering it
/// always yields valid JSON because values are substituted into the parsed tree.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// A subtree without placeholders.
    Literal(Value),
    /// A string with placeholders.
    String(Template),
    /// An array with placeholders somewhere inside.
    Array(Vec<JsonTemplate>),
    /// An object with placeholders somewhere inside.
    Object(Vec<(Template, JsonTemplate)>),
}

/// Why a JSON payload is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JsonTemplateError {
    /// The text is not strict JSON.
    #[error("line {line} column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's message plus a hint.
        message: String,
    },
    /// A placeholder does not parse.
    #[error(transparent)]
    Placeholder(#[from] TemplateError),
}

impl JsonTemplate {
    /// Parses JSON text strictly (single quotes, trailing commas and comments are errors),
    /// then compiles the placeholders in its strings.
    ///
    /// A placeholder written as a whole JSON value without quotes (`{"id": $this->id$}`, as
    /// iTop users often write) is read as if quoted: it keeps a number, boolean or null type
    /// and is a string otherwise.
    pub fn parse_text(text: &str) -> Result<JsonTemplate, JsonTemplateError> {
        let quoted = quote_bare_placeholders(text);
        let text = quoted.as_deref().unwrap_or(text);
        let value: Value = serde_json::from_str(text).map_err(|e| JsonTemplateError::Syntax {
            line: e.line(),
            column: e.column(),
            message: format!("{}{}", strip_position(&e.to_string()), crate::event::json_hint(text, &e)),
        })?;
        Ok(JsonTemplate::compile(&value)?)
    }

    /// Compiles the placeholders of an already parsed value.
    pub fn compile(value: &Value) -> Result<JsonTemplate, TemplateError> {
        Ok(match value {
            Value::String(s) => {
                let t = Template::parse(s)?;
                if t.is_static() {
                    JsonTemplate::Literal(value.clone())
                } else {
                    JsonTemplate::String(t)
                }
            }
            Value::Array(items) => {
                let items = items.iter().map(JsonTemplate::compile).collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|i| matches!(i, JsonTemplate::Literal(_))) {
                    JsonTemplate::Literal(value.clone())
                } else {
                    JsonTemplate::Array(items)
                }
            }
            Value::Object(map) => {
                let mut entries = Vec::with_capacity(map.len());
                let mut dynamic = false;
                for (k, v) in map {
                    let key = Template::parse(k)?;
                    let v = JsonTemplate::compile(v)?;
                    dynamic |= !key.is_static() || !matches!(v, JsonTemplate::Literal(_));
                    entries.push((key, v));
                }
                if dynamic {
                    JsonTemplate::Object(entries)
                } else {
                    JsonTemplate::Literal(value.clone())
                }
            }
            other => JsonTemplate::Literal(other.clone()),
        })
    }

    /// Every placeholder in the document.
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'s>(&'s self, out: &mut Vec<&'s Placeholder>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::String(t) => out.extend(t.placeholders()),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.collect(out)),
            JsonTemplate::Object(entries) => {
                for (k, v) in entries {
                    out.extend(k.placeholders());
                    v.collect(out);
                }
            }
        }
    }

    /// Substitutes placeholders into the tree.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Value {
        match self {
            JsonTemplate::Literal(v) => v.clone(),
            JsonTemplate::String(t) => t.render_json(ctx),
            JsonTemplate::Array(items) => Value::Array(items.iter().map(|i| i.render(ctx)).collect()),
            JsonTemplate::Object(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.render(ctx, Escape::None), v.render(ctx))).collect())
            }
        }
    }
}

/// `text` with every placeholder that stands outside a JSON string put in quotes, or `None`
/// when there is none (positions in error messages then stay the user's).
fn quote_bare_placeholders(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    let mut in_string = false;
    let mut escaped = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'$' {
            if let Some(end) = text[i + 1..].find('$') {
                let inner = &text[i + 1..i + 1 + end];
                if looks_like_placeholder(inner) {
                    out.push_str(&text[copied..i]);
                    out.push('"');
                    out.push_str(&text[i..i + end + 2]);
                    out.push('"');
                    i += end + 2;
                    copied = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}
