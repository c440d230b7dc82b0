//! A webhook payload encoded for its content type: JSON (values substituted into the parsed
//! tree), `application/x-www-form-urlencoded` (values percent-encoded, or fields given as a
//! mapping), XML (values escaped as character data) or `text/plain` (as written).
//!
//! What cannot be produced safely for its content type is refused at load, so `check`
//! names it: a form text whose own characters are not form-encoded, XML that is not
//! well-formed or has a placeholder where escaping cannot protect it (a tag or attribute
//! name, a comment, CDATA), any content type hookbridge does not know how to encode.

use serde_json::Value;

use crate::config_file::Problems;
use crate::template::{form_encode, Escape, JsonTemplate, RenderContext, Template};

use super::{json_field, template_field};

/// How a body is encoded, from the essence of its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`, any `*/*+json` (`application/vnd.api+json`).
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/xml`, `text/xml`, any `*/*+xml`.
    Xml,
    /// `text/plain`: values as they are.
    Text,
}

/// The content types `check` accepts, as its messages list them.
pub const KNOWN_TYPES: &str = "application/json (and any */*+json), application/x-www-form-urlencoded, \
application/xml, text/xml (and any */*+xml), text/plain";

impl Encoding {
    /// The encoding of `content_type`, parameters (`; charset=utf-8`) aside.
    pub fn of(content_type: &str) -> Option<Encoding> {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Encoding::Json),
            "application/x-www-form-urlencoded" => Some(Encoding::Form),
            "application/xml" | "text/xml" => Some(Encoding::Xml),
            "text/plain" => Some(Encoding::Text),
            e if e.contains('/') && e.ends_with("+json") => Some(Encoding::Json),
            e if e.contains('/') && e.ends_with("+xml") => Some(Encoding::Xml),
            _ => None,
        }
    }
}

/// A compiled payload.
#[derive(Debug)]
pub enum Payload {
    /// JSON: placeholders substituted into the parsed tree.
    Json(JsonTemplate),
    /// Form fields given as a mapping: names and values encoded whole.
    FormFields(Vec<(Template, Template)>),
    /// Form text written by the user (already encoded); substituted values encoded.
    FormText(Template),
    /// XML text; substituted values escaped.
    Xml(Template),
    /// Text as written.
    Text(Template),
}

/// Checks and compiles a payload for `content_type`.
pub fn compile(place: &str, content_type: &str, value: &Value, problems: &mut Problems) -> Option<Payload> {
    let field = format!("{place}.payload");
    let Some(encoding) = Encoding::of(content_type) else {
        problems.add(
            format!("{place}.content_type"),
            format!("hookbridge cannot encode a payload safely for {content_type:?}; it encodes {KNOWN_TYPES}"),
        );
        return None;
    };
    match (encoding, value) {
        (Encoding::Json, v) => Some(Payload::Json(json_field(place, "payload", v, problems)?)),
        (Encoding::Form, Value::Object(map)) => {
            let mut fields = Vec::with_capacity(map.len());
            for (k, v) in map {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    Value::Null => String::new(),
                    _ => {
                        problems.add(format!("{field}.{k}"), "a form field's value is text, not a list or mapping");
                        continue;
                    }
                };
                let key = template_field(&field, k, Some(k), problems);
                let value = template_field(&field, k, Some(&text), problems);
                if let (Some(key), Some(value)) = (key, value) {
                    fields.push((key, value));
                }
            }
            Some(Payload::FormFields(fields))
        }
        (Encoding::Form, Value::String(text)) => {
            let t = template_field(place, "payload", Some(text), problems)?;
            if let Some(bad) = t.literals().find_map(|l| l.chars().find(|&c| !is_form_char(c))) {
                problems.add(
                    field,
                    format!(
                        "{bad:?} in the text of a form payload is not form-encoded: write it percent-encoded \
                         (e.g. %20 or + for a space), or give the payload as a mapping of fields, whose values \
                         are encoded for you"
                    ),
                );
                return None;
            }
            Some(Payload::FormText(t))
        }
        (Encoding::Xml, Value::String(text)) => {
            let t = template_field(place, "payload", Some(text), problems)?;
            if let Err(e) = check_xml(&t) {
                problems.add(field, e);
                return None;
            }
            Some(Payload::Xml(t))
        }
        (Encoding::Text, Value::String(text)) => {
            Some(Payload::Text(template_field(place, "payload", Some(text), problems)?))
        }
        (_, _) => {
            let hint = if encoding == Encoding::Form { " or as a mapping of fields" } else { "" };
            problems.add(field, format!("a {content_type} payload must be written as text{hint}"));
            None
        }
    }
}

/// Characters the text of a form payload may hold as written: unreserved ones, `*`, `+`
/// (a space), `%` (an escape), and the `&` and `=` that separate fields.
fn is_form_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '*' | '+' | '%' | '&' | '=')
}

impl Payload {
    /// The rendered body.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Vec<u8> {
        match self {
            Payload::Json(t) => serde_json::to_vec(&t.render(ctx)).unwrap_or_default(),
            Payload::FormFields(fields) => fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        form_encode(&k.render(ctx, Escape::None)),
                        form_encode(&v.render(ctx, Escape::None))
                    )
                })
                .collect::<Vec<_>>()
                .join("&")
                .into_bytes(),
            Payload::FormText(t) => t.render(ctx, Escape::Form).into_bytes(),
            Payload::Xml(t) => t.render(ctx, Escape::Xml).into_bytes(),
            Payload::Text(t) => t.render(ctx, Escape::None).into_bytes(),
        }
    }
}

/// Where a placeholder sits in an XML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XmlPlace {
    Text,
    /// Inside `<…>`, outside a quoted value.
    Tag,
    /// Inside a quoted attribute value, closed by this quote.
    Quoted(char),
    /// In a comment, CDATA section, processing instruction or declaration, closed by this.
    Special(&'static str),
}

/// Checks that an XML payload is well-formed once values are substituted (each placeholder
/// standing for a value that escaping keeps in place) and that every placeholder is in
/// character data or a quoted attribute value, where escaping protects it.
fn check_xml(t: &Template) -> Result<(), String> {
    let mut place = XmlPlace::Text;
    let mut doc = String::new();
    for part in t.parts() {
        match part {
            Ok(text) => {
                let mut rest = text;
                while let Some(c) = rest.chars().next() {
                    let step = match place {
                        XmlPlace::Text if rest.starts_with("<!--") => {
                            place = XmlPlace::Special("-->");
                            4
                        }
                        XmlPlace::Text if rest.starts_with("<![CDATA[") => {
                            place = XmlPlace::Special("]]>");
                            9
                        }
                        XmlPlace::Text if rest.starts_with("<?") => {
                            place = XmlPlace::Special("?>");
                            2
                        }
                        XmlPlace::Text if rest.starts_with("<!") => {
                            place = XmlPlace::Special(">");
                            2
                        }
                        XmlPlace::Text if c == '<' => {
                            place = XmlPlace::Tag;
                            1
                        }
                        XmlPlace::Tag if c == '"' || c == '\'' => {
                            place = XmlPlace::Quoted(c);
                            1
                        }
                        XmlPlace::Tag if c == '>' => {
                            place = XmlPlace::Text;
                            1
                        }
                        XmlPlace::Quoted(q) if c == q => {
                            place = XmlPlace::Tag;
                            1
                        }
                        XmlPlace::Special(end) if rest.starts_with(end) => {
                            place = XmlPlace::Text;
                            end.len()
                        }
                        _ => c.len_utf8(),
                    };
                    doc.push_str(&rest[..step]);
                    rest = &rest[step..];
                }
            }
            Err(p) => match place {
                XmlPlace::Text | XmlPlace::Quoted(_) => doc.push_str("v&amp;v"),
                XmlPlace::Tag => {
                    return Err(format!(
                        "{} is inside a tag: a value can only go in text or in a quoted attribute value",
                        p.source()
                    ))
                }
                XmlPlace::Special(_) => {
                    return Err(format!(
                        "{} is inside a comment, CDATA section or declaration, where a value cannot be escaped",
                        p.source()
                    ))
                }
            },
        }
    }
    let mut reader = quick_xml::Reader::from_str(&doc);
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        match reader.read_event() {
            Err(e) => return Err(format!("not well-formed XML at byte {}: {e}", reader.buffer_position())),
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_)) => {
                roots += usize::from(depth == 0);
                depth += 1;
            }
            Ok(quick_xml::events::Event::Empty(_)) => roots += usize::from(depth == 0),
            Ok(quick_xml::events::Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(quick_xml::events::Event::Text(t)) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err("text outside the root element is not well-formed XML".into())
            }
            Ok(_) => {}
        }
    }
    if depth != 0 {
        return Err("not well-formed XML: an element is not closed".into());
    }
    if roots != 1 {
        return Err(format!("an XML document has exactly one root element, this one has {roots}"));
    }
    Ok(())
}
