//! The services' specials the user opens with `<` (`<!here>`, `<#C…|name>`, `<url|label>`,
//! `<users/…>`): when they are kept, and what their text becomes.

use super::text::{escape_url_slack, is_fence, TextContext, ValueText};
use super::{Dialect, MENTIONED_START, VALUE_END, VALUE_START};
use crate::rich_text::decode_entities;

/// The text of a Slack special the user opened with `<` (`<!here>`, `<#C…|name>`,
/// `<https://…|label>`), values in it included, or `None` when a value inside would
/// decide what it is: only a link target may come from a value, and only as a URL with
/// its own scheme; then it is written as a URL, so it cannot end the link early.
pub(super) fn slack_special_text(inner: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut pipe = None;
    for (i, c) in inner.char_indices() {
        match c {
            VALUE_START | MENTIONED_START => depth += 1,
            VALUE_END => depth = depth.saturating_sub(1),
            '|' if depth == 0 => {
                pipe = Some(i);
                break;
            }
            _ => {}
        }
    }
    let (target, label) = match pipe {
        Some(i) => (&inner[..i], Some(&inner[i + 1..])),
        None => (inner, None),
    };
    let plain = |t: &str| t.chars().filter(|c| !is_fence(*c)).collect::<String>();
    let target = if target.contains(is_fence) {
        let url = decode_entities(&plain(target));
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        if !["http://", "https://", "mailto:", "tel:"].iter().any(|p| lower.starts_with(p)) {
            return None;
        }
        escape_url_slack(url)
    } else {
        plain(target)
    };
    let Some(label) = label else { return Some(target) };
    // The label is text: the user's as written, values neutralised like anywhere else.
    let mut shown = String::new();
    let mut value: Option<String> = None;
    let flush = |shown: &mut String, value: &str| {
        let text = decode_entities(value);
        let before = shown.clone();
        let value = Some(ValueText { mentioned: false });
        Dialect::Slack.push_text(shown, &text, TextContext { value, in_code: false, before: &before });
    };
    for c in label.chars() {
        match (c, value.as_mut()) {
            (VALUE_START | MENTIONED_START, _) => value = Some(String::new()),
            (VALUE_END, Some(v)) => {
                flush(&mut shown, v);
                value = None;
            }
            (VALUE_END, None) => {}
            (c, Some(v)) => v.push(c),
            (c, None) => shown.push(c),
        }
    }
    if let Some(v) = value {
        flush(&mut shown, &v);
    }
    Some(format!("{target}|{shown}"))
}

/// Where a service's special that the user opened with `<` ends: the index of the `>`
/// the user wrote. `None` when a line ends or another `<` comes first, or when a value
/// inside holds `<` or `>` of its own (HTML): such a special is text.
pub(super) fn special_end(after: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in after.char_indices() {
        match c {
            VALUE_START | MENTIONED_START => depth += 1,
            VALUE_END => depth = depth.checked_sub(1)?,
            '<' | '\n' => return None,
            '>' if depth == 0 => return Some(i),
            '>' => return None,
            _ => {}
        }
    }
    None
}

/// The text of a Google Chat special the user wrote (`inner`: between its `<` and `>`).
pub(super) fn google_special_text(inner: &str) -> Option<String> {
    if let Some(id) = inner.strip_prefix("users/") {
        let id = match id.strip_prefix([VALUE_START, MENTIONED_START]) {
            Some(fenced) => fenced.strip_suffix(VALUE_END)?,
            None => id,
        };
        let valid =
            id == "all" && !inner.contains(is_fence) || !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
        return valid.then(|| format!("users/{id}"));
    }
    let lower = inner.to_ascii_lowercase();
    (["http://", "https://"].iter().any(|p| lower.starts_with(p)) && !inner.contains(is_fence))
        .then(|| inner.to_string())
}
