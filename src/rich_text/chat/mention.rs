//! Slack user mentions found before conversion, so that the converter writes them back
//! as mentions and never reads one out of a value.

use super::{MENTIONED_START, MENTION_END, MENTION_START, VALUE_END, VALUE_START};

/// Slack user mentions the template may make become tokens the converter writes back as
/// mentions: `<@U…>` (or HTML-escaped `&lt;@U…&gt;`) in the user's own text, with the id
/// written there or given by a placeholder that is nothing but the id
/// (`<@$this->agent_id->slack_id$>`), and whole mentions inside a mentioned contact's
/// value. Anywhere else in a value, a mention is text.
pub(super) fn protect_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // The values open here: `true` for a mentioned contact's.
    let mut open: Vec<bool> = Vec::new();
    while !rest.is_empty() {
        let found = match open.last() {
            // The user's text: `<@` and `>` written there, the id too or given by one whole value.
            None => mention_in(rest, &mut String::new(), true),
            Some(true) => mention_in(rest, &mut String::new(), false),
            Some(false) => None,
        };
        if let Some((id, fences, tail)) = found {
            out.push(MENTION_START);
            out.push_str(id);
            out.push(MENTION_END);
            // Value fences inside the mention are kept, after it, so values stay balanced.
            out.push_str(&fences);
            rest = tail;
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        match c {
            VALUE_START => open.push(false),
            MENTIONED_START => open.push(true),
            VALUE_END => {
                open.pop();
            }
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `<@ID>` in its three spellings at the start of `text`; with `id_from_value`, the id
/// may be the whole content of one value (its fences are moved into `fences`).
pub(super) fn mention_in<'a>(
    text: &'a str,
    fences: &mut String,
    id_from_value: bool,
) -> Option<(&'a str, String, &'a str)> {
    for open in ["<@", "&lt;@", "&amp;lt;@"] {
        let Some(after) = text.strip_prefix(open) else { continue };
        let (id_start, fenced) = match after.chars().next() {
            Some(c @ (VALUE_START | MENTIONED_START)) if id_from_value => {
                fences.push(c);
                (&after[c.len_utf8()..], true)
            }
            _ => (after, false),
        };
        let id_len = id_start.bytes().take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit()).count();
        let id = &id_start[..id_len];
        if id_len < 3 || !(id.starts_with('U') || id.starts_with('W')) {
            continue;
        }
        let mut after_id = &id_start[id_len..];
        if fenced {
            // The value must hold the id and nothing else.
            let Some(tail) = after_id.strip_prefix(VALUE_END) else { continue };
            fences.push(VALUE_END);
            after_id = tail;
        }
        for close in [">", "&gt;", "&amp;gt;"] {
            if let Some(tail) = after_id.strip_prefix(close) {
                return Some((id, std::mem::take(fences), tail));
            }
        }
        fences.clear();
    }
    None
}
