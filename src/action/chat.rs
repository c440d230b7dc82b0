//! What the chat actions share: `richtext` turns a rendered message (the user's text, HTML,
//! substituted values) into each service's markup, and the attribute rows, actor name and
//! buttons that Slack and Teams both show.

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::config::raw::{OtherActions, PresentationLists};
use crate::event::Event;
use serde_json::Value;

use crate::template::{plain_text, value_text};

use super::{presentation_codes, ChatSpec};

/// One row of the attribute list: the attribute's label and its value as text (the value's
/// label when the event has one, as `$this->label(code)$` gives it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttributeRow {
    pub label: String,
    pub value: String,
}

/// The rows of the presentation list `attributes_from` names, for the event's class.
/// Codes the object does not have are left out.
pub(crate) fn attribute_rows(
    spec: &ChatSpec,
    event: &Event,
    presentation: &BTreeMap<String, PresentationLists>,
) -> Vec<AttributeRow> {
    presentation_codes(spec.attributes_from, event, presentation)
        .iter()
        .filter_map(|code| {
            let value = match event.labels.values.get(code) {
                Some(label) => value_text(label),
                None => plain_text(event.object.get(code)?, event.is_html(std::slice::from_ref(code))),
            };
            let label = event
                .labels
                .attributes
                .get(code)
                .and_then(Value::as_str)
                .filter(|l| !l.trim().is_empty())
                .unwrap_or(code);
            Some(AttributeRow { label: label.to_string(), value })
        })
        .collect()
}

/// Who made the change: the contact's friendly name, else first name and name, else the
/// user account's name or login.
pub(crate) fn actor_name(event: &Event) -> Option<String> {
    let text = |map: &serde_json::Map<String, Value>, key: &str| {
        map.get(key).map(value_text).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    };
    let contact = &event.actor.contact;
    let user = &event.actor.user;
    text(contact, "friendlyname")
        .or_else(|| match (text(contact, "first_name"), text(contact, "name")) {
            (Some(first), Some(name)) => Some(format!("{first} {name}")),
            (first, name) => name.or(first),
        })
        .or_else(|| text(user, "friendlyname"))
        .or_else(|| text(user, "login"))
}

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ButtonKind {
    Modify,
    Delete,
    Transition,
}

/// A link button to the object in the emitting application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Button {
    pub kind: ButtonKind,
    /// Stable id: `modify`, `delete` or `stimulus_<code>`.
    pub id: String,
    /// Label as shown, plain text.
    pub label: String,
    /// Where it leads.
    pub url: String,
}

/// Characters left as they are in a query value (RFC 3986 unreserved).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Transition buttons one message shows at most: more than any service displays (Slack
/// takes 100 buttons, Teams connector cards 4), and a bound on the work one event costs.
pub(crate) const MAX_TRANSITION_BUTTONS: usize = 100;

/// The buttons an action asks for, in order: Modify, Delete, then the transitions
/// (`other_actions: yes`: every one available now; `specify`: the listed codes that are
/// available now), at most [`MAX_TRANSITION_BUTTONS`] of them. None without the
/// application's URL (`source.url`) to point to.
pub(crate) fn buttons(spec: &ChatSpec, event: &Event) -> Vec<Button> {
    let Some(base) = event.app_url() else { return Vec::new() };
    let class = utf8_percent_encode(&event.class, QUERY_VALUE).to_string();
    let key = utf8_percent_encode(&event.key, QUERY_VALUE).to_string();
    let page = |operation: &str| format!("{base}pages/UI.php?operation={operation}&class={class}&id={key}");
    let mut out = Vec::new();
    if spec.modify_button {
        out.push(Button { kind: ButtonKind::Modify, id: "modify".into(), label: "Modify".into(), url: page("modify") });
    }
    if spec.delete_button {
        out.push(Button { kind: ButtonKind::Delete, id: "delete".into(), label: "Delete".into(), url: page("delete") });
    }
    let wanted: Vec<&str> = match spec.other_actions {
        OtherActions::No => Vec::new(),
        OtherActions::Yes => event.transitions.iter().map(|t| t.code.as_str()).collect(),
        OtherActions::Specify => spec.other_actions_codes.iter().map(String::as_str).collect(),
    };
    // Indexed once: an event may list many transitions, and a lookup per wanted code would
    // make the work quadratic in them. The first transition of a code wins.
    let mut by_code: std::collections::HashMap<&str, &crate::event::Transition> =
        std::collections::HashMap::with_capacity(event.transitions.len());
    for t in &event.transitions {
        by_code.entry(t.code.as_str()).or_insert(t);
    }
    let mut seen = std::collections::HashSet::new();
    let mut shown = 0;
    for code in wanted {
        if shown == MAX_TRANSITION_BUTTONS {
            break;
        }
        let Some(t) = by_code.get(code) else { continue };
        if code.is_empty() || !seen.insert(code) {
            continue;
        }
        shown += 1;
        let label = t.label.as_deref().map(str::trim).filter(|l| !l.is_empty()).unwrap_or(code);
        let stimulus = utf8_percent_encode(code, QUERY_VALUE);
        out.push(Button {
            kind: ButtonKind::Transition,
            id: format!("stimulus_{}", code.chars().take(200).collect::<String>()),
            label: label.to_string(),
            url: format!("{base}pages/UI.php?operation=stimulus&stimulus={stimulus}&class={class}&id={key}"),
        });
    }
    out
}

/// A rendered chat message to each service's markup.
///
/// A message mixes three things: the text the user wrote in the action (which may use the
/// service's own markup, and HTML), HTML that placeholders bring (`$this->html(…)$`,
/// `$this->hyperlink()$`, HTML attributes), and plain values. The template renders values
/// through [`mark_value`], which fences each one between private-use characters and
/// HTML-escapes the plain ones, so [`convert`] sees well-formed HTML and knows which text
/// came from the object: that text is escaped for the target markup (a title holding
/// `*` or `<!channel>` stays literal), while the user's own markup is kept as written.
///
/// Mentions come only from the template: what the user wrote (`<!here>`, `<@U…>`,
/// `<users/…>`, `@name`), a placeholder that is nothing but a user's id inside a mention
/// the user wrote (`<@$this->agent_id->slack_id$>`), or the values of `$mentioned->…$`,
/// which may name the mentioned contact (never a group: `<!channel>`, `@all`,
/// `<users/all>` stay text wherever they come from). Any other value is text whatever
/// surrounds it: the character before a placeholder cannot turn it into markup
/// (`<$this->site$|open>` with `!channel` is written `&lt;!channel|open&gt;`).
pub(crate) mod richtext {
    use crate::rich_text as markup;
    use crate::template::{Origin, ValueKind};

    const VALUE_START: char = '\u{E000}';
    const VALUE_END: char = '\u{E001}';
    const MENTION_START: char = '\u{E002}';
    const MENTION_END: char = '\u{E003}';
    /// Opens a value of `$mentioned->…$` (closed by [`VALUE_END`]).
    const MENTIONED_START: char = '\u{E004}';
    /// Placed after a character that would open a mention or a link (`@`, `#`, `<`) in a
    /// value: invisible, not a space, and no service reads a mention across it.
    const JOINER: char = '\u{2060}';
    /// Group mentions: never from a value, not even a mentioned contact's.
    const GROUP_MENTIONS: [&str; 4] = ["all", "here", "channel", "everyone"];
    /// Open tags deeper than this are ignored.
    const MAX_DEPTH: usize = 64;
    /// Nested list items are indented by at most this many levels.
    const MAX_LIST_INDENT: usize = 4;
    /// Placed beside a formatting character from a value, it stops Slack from reading the
    /// character as markup (mrkdwn has no escape character).
    const ZWSP: char = '\u{200B}';

    /// The markup a text is converted to.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Dialect {
        /// Slack mrkdwn: `*bold*`, `_italic_`, `~strike~`, `<url|text>`, `<@U…>` mentions.
        Slack,
        /// Slack text without formatting (notification fallback); mentions kept.
        SlackPlain,
        /// The Markdown subset of Adaptive Card TextBlocks in Teams.
        Teams,
        /// Markdown of Teams connector cards (MessageCard), which also reads some HTML.
        TeamsConnector,
        /// Rocket.Chat markdown.
        RocketChat,
        /// Google Chat text: the user's markup dropped like [`Dialect::Plain`], and what
        /// Google Chat would read as formatting, a link or a mention in values neutralised.
        GoogleChat,
        /// Plain text: markup dropped, links as `text (url)`.
        Plain,
    }

    /// How a length is counted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Unit {
        /// UTF-16 code units: never fewer than characters, so safe for "characters" limits.
        Utf16,
        /// Bytes once written as a JSON string (escapes included).
        JsonBytes,
    }

    impl Unit {
        pub fn of_char(self, c: char) -> usize {
            match self {
                Unit::Utf16 => c.len_utf16(),
                Unit::JsonBytes => match c {
                    '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
                    c if (c as u32) < 0x20 => 6,
                    c => c.len_utf8(),
                },
            }
        }

        pub fn of(self, text: &str) -> usize {
            text.chars().map(|c| self.of_char(c)).sum()
        }
    }

    /// The template escape for chat messages: fences a substituted value (see the module
    /// documentation). HTML values (`html(…)` of an HTML attribute, `head_html(…)`,
    /// `hyperlink()`) stay HTML; every other value is text, HTML-escaped whatever it holds.
    pub fn mark_value(value: &str, origin: Origin, kind: ValueKind) -> String {
        let clean: String = value.chars().filter(|c| !('\u{E000}'..='\u{E004}').contains(c)).collect();
        let inner = match kind {
            ValueKind::Text => markup::html_escape(&clean),
            // The event's HTML is parsed as browsers do, so that the converter below only
            // ever reads well-formed markup.
            ValueKind::Html => markup::html::normalise(&clean),
            ValueKind::OwnHtml => clean,
        };
        let start = if origin == Origin::Mentioned { MENTIONED_START } else { VALUE_START };
        format!("{start}{inner}{VALUE_END}")
    }

    /// [`mark_value`] for a plain-text value.
    pub fn mark_text(value: &str, origin: Origin) -> String {
        mark_value(value, origin, ValueKind::Text)
    }

    /// A value shown on its own (a field, a name), converted like a placeholder's value.
    pub fn value(text: &str, dialect: Dialect) -> String {
        convert(&mark_text(text, Origin::Event), dialect)
    }

    /// A value shown on its own in at most `max` (counted in `unit`): only its beginning is
    /// converted when it is far longer than that, and the cut is always marked.
    pub fn value_within(text: &str, max: usize, unit: Unit, dialect: Dialect) -> String {
        let cut = text.char_indices().nth(max.saturating_mul(4)).map(|(i, _)| i);
        let shown = truncate(&value(&text[..cut.unwrap_or(text.len())], dialect), max, unit, dialect);
        if cut.is_some() && !shown.ends_with('…') {
            // Room for the mark was not reserved when nothing was cut: make it.
            let mut shown = truncate(&shown, max.saturating_sub(unit.of("…")), unit, dialect);
            if !shown.ends_with('…') {
                shown.push('…');
            }
            return shown;
        }
        shown
    }

    /// A rendered message converted; when it comes out empty (every placeholder in it
    /// was), `name()` (the object's name) instead, since the services refuse an empty one.
    pub fn message(rendered: &str, dialect: Dialect, name: impl FnOnce() -> String) -> String {
        let text = convert(rendered, dialect);
        if text.trim().is_empty() {
            value(&name(), dialect)
        } else {
            text
        }
    }

    /// Characters of a rendered message that are converted at most: more than any service
    /// shows (Slack's 40,000 in all is the most), so a huge attribute costs the same as a
    /// long one; what is left out is marked with `…`.
    const MAX_CONVERTED_CHARS: usize = 65_536;

    /// Converts a rendered message (see the module documentation).
    pub fn convert(rendered: &str, dialect: Dialect) -> String {
        if let Some((cut, _)) = rendered.char_indices().nth(MAX_CONVERTED_CHARS) {
            let mut text = convert(&rendered[..cut], dialect);
            if !text.ends_with('…') {
                text.push('…');
            }
            return text;
        }
        let protected;
        let input = if dialect.is_slack() {
            protected = protect_mentions(rendered);
            protected.as_str()
        } else {
            rendered
        };
        let mut c = Converter::new(dialect);
        c.run(input);
        finish(c.into_text(), dialect)
    }

    /// Cuts `text` to at most `max` (counted in `unit`), ending with `…`, without leaving
    /// half a link, entity or escape behind.
    pub fn truncate(text: &str, max: usize, unit: Unit, dialect: Dialect) -> String {
        if unit.of(text) <= max {
            return text.to_string();
        }
        const MARK: &str = "…";
        const FENCE: &str = "\n```";
        let budget = max.saturating_sub(unit.of(MARK) + unit.of(FENCE));
        let mut used = 0;
        let mut end = 0;
        for (i, c) in text.char_indices() {
            let n = unit.of_char(c);
            if used + n > budget {
                break;
            }
            used += n;
            end = i + c.len_utf8();
        }
        let mut kept = &text[..end];
        if dialect.is_slack() || dialect == Dialect::TeamsConnector {
            // `<…>` links and mentions, `&amp;` entities: never half of one.
            if let Some(open) = kept.rfind('<') {
                if !kept[open..].contains('>') {
                    kept = &kept[..open];
                }
            }
            if let Some(amp) = kept.rfind('&') {
                if kept.len() - amp <= 8 && !kept[amp..].contains(';') {
                    kept = &kept[..amp];
                }
            }
        }
        if dialect.is_markdown() {
            // `[text](url)` cut inside its URL.
            if let Some(open) = kept.rfind("](") {
                if !kept[open..].contains(')') {
                    kept = kept[..open].rfind('[').map_or(&kept[..open], |b| &kept[..b]);
                }
            }
            // A lone trailing backslash would escape the ellipsis.
            let slashes = kept.len() - kept.trim_end_matches('\\').len();
            if slashes % 2 == 1 {
                kept = &kept[..kept.len() - 1];
            }
        }
        let kept = kept.trim_end_matches(ZWSP);
        let mut out = format!("{kept}{MARK}");
        if matches!(dialect, Dialect::Slack | Dialect::RocketChat) && kept.matches("```").count() % 2 == 1 {
            out.push_str(FENCE);
        }
        out
    }

    impl Dialect {
        fn is_slack(self) -> bool {
            matches!(self, Dialect::Slack | Dialect::SlackPlain)
        }

        fn is_markdown(self) -> bool {
            matches!(self, Dialect::Teams | Dialect::TeamsConnector | Dialect::RocketChat)
        }

        fn mark(self, f: Fmt) -> Option<&'static str> {
            match (self, f) {
                (Dialect::Slack | Dialect::RocketChat, Fmt::Bold) => Some("*"),
                (Dialect::Teams | Dialect::TeamsConnector, Fmt::Bold) => Some("**"),
                (Dialect::Slack | Dialect::RocketChat | Dialect::Teams | Dialect::TeamsConnector, Fmt::Italic) => {
                    Some("_")
                }
                (Dialect::Slack | Dialect::RocketChat, Fmt::Strike) => Some("~"),
                (Dialect::TeamsConnector, Fmt::Strike) => Some("~~"),
                (Dialect::Slack | Dialect::RocketChat | Dialect::TeamsConnector, Fmt::Code) => Some("`"),
                (Dialect::Slack | Dialect::RocketChat, Fmt::Pre) => Some("```"),
                _ => None,
            }
        }

        fn bullet(self) -> &'static str {
            if self.is_slack() {
                "• "
            } else {
                "- "
            }
        }

        /// Appends text, escaped for this markup. Text from a value also has its formatting
        /// characters neutralised, and whatever would open a mention or a link in this
        /// service (see [`Dialect::opens_mention`]).
        fn push_text(self, out: &mut String, text: &str, t: TextContext<'_>) {
            let from_value = t.value.is_some();
            let in_code = t.in_code;
            let chars: Vec<char> = text.chars().collect();
            // Inside the name of a mention that was kept (`@` not followed by a joiner): the
            // name is written as it is, since escaping a `_` in it would name someone else.
            let mut in_name = self == Dialect::RocketChat && {
                let name_len = t.before.chars().rev().take_while(|c| is_name_char(*c)).count();
                let mut rest = t.before.chars().rev().skip(name_len);
                rest.next() == Some('@') && !rest.next().is_some_and(char::is_alphanumeric)
            };
            for (i, &c) in chars.iter().enumerate() {
                if in_name && is_name_char(c) {
                    out.push(c);
                    continue;
                }
                in_name = false;
                let prev = if i == 0 { t.before.chars().next_back() } else { Some(chars[i - 1]) };
                let next = chars.get(i + 1).copied();
                let intraword = prev.is_some_and(char::is_alphanumeric) && next.is_some_and(char::is_alphanumeric);
                // Only a letter of the same text counts as a word before `@`: a mark written
                // later (`*` of a bold the value opened) may come between.
                let word_prev = i.checked_sub(1).map(|j| chars[j]);
                let break_after = from_value
                    && self.opens_mention(c, word_prev, &chars[i + 1..], t.value.is_some_and(|v| v.mentioned));
                match self {
                    Dialect::Slack | Dialect::SlackPlain => match c {
                        '&' => out.push_str("&amp;"),
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '`' if from_value && in_code && self == Dialect::Slack => out.push('\u{2CB}'),
                        '*' | '_' | '~' | '`' if from_value && !in_code && !intraword && self == Dialect::Slack => {
                            out.push(ZWSP);
                            out.push(c);
                            out.push(ZWSP);
                        }
                        c => out.push(c),
                    },
                    Dialect::Teams | Dialect::TeamsConnector => match c {
                        '<' if self == Dialect::TeamsConnector => out.push_str("&lt;"),
                        '>' if self == Dialect::TeamsConnector => out.push_str("&gt;"),
                        '&' if self == Dialect::TeamsConnector && looks_like_entity(&chars[i + 1..]) => {
                            out.push_str("&amp;")
                        }
                        '\\' | '*' | '`' | '[' | ']' if from_value => {
                            out.push('\\');
                            out.push(c);
                        }
                        '_' if from_value && !intraword => out.push_str("\\_"),
                        c => out.push(c),
                    },
                    Dialect::RocketChat => {
                        if from_value && !in_code && matches!(c, '*' | '_' | '~' | '`' | '[' | ']') {
                            out.push('\\');
                        }
                        out.push(c);
                        in_name = c == '@' && !break_after && !word_prev.is_some_and(char::is_alphanumeric);
                    }
                    Dialect::GoogleChat => match c {
                        '*' | '_' | '~' | '`' if from_value && !intraword => {
                            out.push(ZWSP);
                            out.push(c);
                            out.push(ZWSP);
                        }
                        c => out.push(c),
                    },
                    Dialect::Plain => out.push(c),
                }
                if break_after {
                    out.push(JOINER);
                }
            }
        }

        /// Whether `c`, in a value, would open a mention, a channel link or a link in this
        /// service with what follows it (`rest`; the end of the value counts as "anything",
        /// since the template goes on there), so a joiner must follow it.
        fn opens_mention(self, c: char, prev: Option<char>, rest: &[char], mentioned: bool) -> bool {
            // Checked first: what follows is only looked at after one of these, so long text
            // stays linear.
            if !matches!(c, '@' | '#' | '<') {
                return false;
            }
            let word_before = prev.is_some_and(char::is_alphanumeric);
            let name_follows = rest.first().is_none_or(|n| is_name_char(*n));
            // Letters and digits only: `@all_` or `@all.x` may still read as `@all` somewhere.
            let token: String = rest.iter().take(16).take_while(|n| n.is_alphanumeric()).collect();
            let group = rest.is_empty() || GROUP_MENTIONS.iter().any(|g| token.eq_ignore_ascii_case(g));
            match (self, c) {
                // `@here` in plain text is not a mention for webhooks, but costs nothing to break.
                (Dialect::Slack | Dialect::SlackPlain, '@') => !word_before && group,
                // `@name`, `@all`, `#channel`; a mentioned contact's value may name a user.
                (Dialect::RocketChat, '@') => !word_before && name_follows && (group || !mentioned),
                (Dialect::RocketChat, '#') => !word_before && name_follows,
                // `<url|text>` links (Rocket.Chat), `<users/…>` mentions and links (Google Chat).
                (Dialect::RocketChat, '<') => rest.first().is_none_or(|n| !n.is_whitespace()),
                (Dialect::GoogleChat, '<') => {
                    let tail: String = rest.iter().take(40).collect();
                    let user = tail.strip_prefix("users/").map(|r| {
                        let id = r.bytes().take_while(u8::is_ascii_digit).count();
                        id > 0 && r[id..].starts_with('>')
                    });
                    rest.first().is_none_or(|n| !n.is_whitespace()) && !(mentioned && user == Some(true))
                }
                _ => false,
            }
        }

        /// Whether a value must start with a joiner because of what was written just before
        /// it (`@$x$`, `#$x$`, `<$x$`, `<users/$x$>`): `content` is the value as fenced.
        /// Only a value that is one plain name can complete what the user wrote: a user name
        /// after `@` (never a group name), a numeric user id after `<users/`. Anything else
        /// (HTML, spaces, entities) starts with a joiner, whatever it would show.
        fn guard_value_start(self, before: &str, content: &str) -> bool {
            let b = before.chars().next_back();
            let name = !content.is_empty() && content.chars().all(is_name_char);
            let token: String = content.chars().take_while(|c| c.is_alphanumeric()).collect();
            let user = name && !GROUP_MENTIONS.iter().any(|g| token.eq_ignore_ascii_case(g));
            match self {
                Dialect::Slack | Dialect::SlackPlain => b == Some('@') && !user,
                Dialect::RocketChat => match b {
                    Some('@') => !user,
                    Some('#' | '<') => true,
                    _ => false,
                },
                Dialect::GoogleChat if before.ends_with("<users/") => {
                    !(name && content.bytes().all(|b| b.is_ascii_digit()))
                }
                Dialect::GoogleChat => b == Some('<'),
                _ => false,
            }
        }

        fn link(self, url: &str, text: &str) -> String {
            let text = text.trim();
            let same = text.is_empty() || text == url || text == escape_url_slack(url);
            match self {
                Dialect::Slack => {
                    let url = escape_url_slack(url);
                    // Mentions or nested links inside the text cannot be in a link label.
                    if same || text.contains(['<', '>']) {
                        if same {
                            format!("<{url}>")
                        } else {
                            text.to_string()
                        }
                    } else {
                        format!("<{url}|{}>", text.replace('\n', " "))
                    }
                }
                Dialect::SlackPlain => {
                    if same {
                        super::super::slack::escape(url)
                    } else {
                        text.to_string()
                    }
                }
                Dialect::Teams | Dialect::TeamsConnector | Dialect::RocketChat => {
                    let target = escape_url_markdown(url);
                    let label =
                        if same { url.replace('[', "\\[").replace(']', "\\]") } else { text.replace('\n', " ") };
                    format!("[{label}]({target})")
                }
                Dialect::Plain | Dialect::GoogleChat => {
                    // Written as text, the URL must not carry what the service would read as
                    // markup (`<users/all>` inside an attribute value of an HTML link).
                    let url = escape_url_plain(url);
                    if same {
                        url
                    } else {
                        format!("{text} ({url})")
                    }
                }
            }
        }
    }

    /// A character of a user or channel name, as the services read names after `@` or `#`.
    fn is_name_char(c: char) -> bool {
        c.is_alphanumeric() || matches!(c, '.' | '_' | '-')
    }

    fn is_fence(c: char) -> bool {
        matches!(c, VALUE_START | VALUE_END | MENTIONED_START)
    }

    /// What [`Dialect::push_text`] needs to know about the text it appends.
    #[derive(Clone, Copy)]
    struct TextContext<'a> {
        /// `None` for the user's own text.
        value: Option<ValueText>,
        /// Inside code or a preformatted block.
        in_code: bool,
        /// The last characters written before this text.
        before: &'a str,
    }

    #[derive(Clone, Copy)]
    struct ValueText {
        /// The value is a mentioned contact's (`$mentioned->…$`).
        mentioned: bool,
    }

    fn looks_like_entity(rest: &[char]) -> bool {
        let name: String = rest.iter().take(10).take_while(|c| **c != ';').collect();
        name.len() < rest.len().min(10)
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '#')
    }

    fn escape_url_slack(url: &str) -> String {
        url.replace('&', "&amp;").replace('<', "%3C").replace('>', "%3E").replace('|', "%7C").replace(' ', "%20")
    }

    fn escape_url_plain(url: &str) -> String {
        let mut out = String::with_capacity(url.len());
        for c in url.chars() {
            match c {
                '<' => out.push_str("%3C"),
                '>' => out.push_str("%3E"),
                '|' => out.push_str("%7C"),
                c if c.is_whitespace() || c.is_control() => {
                    for b in c.encode_utf8(&mut [0; 4]).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    fn escape_url_markdown(url: &str) -> String {
        url.replace(' ', "%20").replace('(', "%28").replace(')', "%29").replace('<', "%3C").replace('>', "%3E")
    }

    /// Slack user mentions the template may make become tokens the converter writes back as
    /// mentions: `<@U…>` (or HTML-escaped `&lt;@U…&gt;`) in the user's own text, with the id
    /// written there or given by a placeholder that is nothing but the id
    /// (`<@$this->agent_id->slack_id$>`), and whole mentions inside a mentioned contact's
    /// value. Anywhere else in a value, a mention is text.
    fn protect_mentions(text: &str) -> String {
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
    fn mention_in<'a>(text: &'a str, fences: &mut String, id_from_value: bool) -> Option<(&'a str, String, &'a str)> {
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

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fmt {
        Bold,
        Italic,
        Strike,
        Code,
        Pre,
    }

    #[derive(Debug)]
    enum Kind {
        Root,
        Format(Fmt),
        Heading,
        Link(Option<String>),
        Skip,
    }

    #[derive(Debug)]
    struct Frame {
        kind: Kind,
        tag: String,
        buf: String,
    }

    struct Converter {
        dialect: Dialect,
        frames: Vec<Frame>,
        /// Open lists: `None` bulleted, `Some(n)` numbered, next number `n`.
        lists: Vec<Option<u32>>,
        /// The values being read, innermost last.
        values: Vec<OpenValue>,
    }

    /// A value being read: what was open when it started (its HTML cannot close what the
    /// user opened, and what it leaves open is closed at its end), and whose it is.
    struct OpenValue {
        frames: usize,
        lists: usize,
        mentioned: bool,
    }

    impl Converter {
        fn new(dialect: Dialect) -> Self {
            Converter {
                dialect,
                frames: vec![Frame { kind: Kind::Root, tag: String::new(), buf: String::new() }],
                lists: Vec::new(),
                values: Vec::new(),
            }
        }

        fn run(&mut self, input: &str) {
            let mut text_start = 0;
            let mut i = 0;
            while i < input.len() {
                let rest = &input[i..];
                let c = rest.chars().next().unwrap_or_default();
                let consumed = match c {
                    VALUE_START | MENTIONED_START => {
                        self.text(&input[text_start..i]);
                        let content = rest[c.len_utf8()..].split(VALUE_END).next().unwrap_or("");
                        let mentioned = c == MENTIONED_START;
                        if self.dialect.guard_value_start(&self.tail(8), content) {
                            self.top().push(JOINER);
                        }
                        self.values.push(OpenValue { frames: self.frames.len(), lists: self.lists.len(), mentioned });
                        Some(c.len_utf8())
                    }
                    VALUE_END => {
                        self.text(&input[text_start..i]);
                        self.end_value();
                        Some(c.len_utf8())
                    }
                    MENTION_START => {
                        self.text(&input[text_start..i]);
                        let end = rest.find(MENTION_END).unwrap_or(rest.len());
                        let id = &rest[c.len_utf8()..end];
                        let mention = if self.dialect.is_slack() { format!("<@{id}>") } else { format!("@{id}") };
                        self.top().push_str(&mention);
                        Some((end + MENTION_END.len_utf8()).min(rest.len()))
                    }
                    '<' => self.markup(rest, &input[text_start..i]),
                    _ => None,
                };
                match consumed {
                    Some(n) => {
                        i += n;
                        text_start = i;
                    }
                    None => i += c.len_utf8(),
                }
            }
            self.text(&input[text_start..]);
            while self.frames.len() > 1 {
                self.pop();
            }
        }

        /// A `<` at the start of `rest`: a tag, a comment, or (in Slack, in the user's own
        /// text) Slack markup such as `<!here>` or `<https://…|label>`. `pending` is the
        /// text before it, flushed when the `<` turns out to be markup.
        fn markup(&mut self, rest: &str, pending: &str) -> Option<usize> {
            if rest.starts_with("<!--") {
                self.text(pending);
                return Some(rest.find("-->").map_or(rest.len(), |e| e + 3));
            }
            let after = &rest[1..];
            if self.dialect.is_slack() && self.values.is_empty() {
                // The link may be a placeholder: `<$this->url()$|Open>`.
                let probe = after.trim_start_matches(is_fence);
                let slack_special = probe.starts_with(['@', '#'])
                    || probe.strip_prefix('!').is_some_and(|s| s.starts_with(|c: char| c.is_ascii_lowercase()))
                    || ["http://", "https://", "mailto:", "tel:"].iter().any(|p| probe.starts_with(p));
                if slack_special {
                    let end = special_end(after)?;
                    let literal = slack_special_text(&after[..end])?;
                    self.text(pending);
                    if self.dialect == Dialect::Slack || !literal.starts_with(['h', 'm', 't']) {
                        self.top().push_str(&format!("<{literal}>"));
                    } else {
                        let shown = literal.split_once('|').map_or(literal.as_str(), |(_, label)| label);
                        self.top().push_str(shown);
                    }
                    return Some(end + 2);
                }
            }
            if self.dialect == Dialect::GoogleChat && self.values.is_empty() {
                // Google Chat's own `<users/…>` mentions and `<https://…|text>` links, as the
                // user wrote them; a placeholder may give a numeric user id and nothing else.
                let lower = after.get(..8).unwrap_or(after).to_ascii_lowercase();
                if ["users/", "http://", "https://"].iter().any(|p| lower.starts_with(p)) {
                    // Anything else that looks like one is text, not an HTML tag.
                    let end = special_end(after)?;
                    let literal = google_special_text(&after[..end])?;
                    self.text(pending);
                    self.top().push_str(&format!("<{literal}>"));
                    return Some(end + 2);
                }
            }
            // `<!` opens a comment or a declaration only when the user wrote what follows.
            let starts_tag = after.starts_with(|c: char| c.is_ascii_alphabetic())
                || after.strip_prefix('/').is_some_and(|s| s.starts_with(|c: char| c.is_ascii_alphabetic()))
                || after
                    .strip_prefix('!')
                    .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '['));
            if !starts_tag {
                return None;
            }
            let end = tag_end(after)?;
            self.text(pending);
            let tag: String = after[..end].chars().filter(|c| !is_fence(*c)).collect();
            self.tag(&tag);
            Some(end + 2)
        }

        fn top(&mut self) -> &mut String {
            &mut self.frames.last_mut().expect("the root frame is never popped").buf
        }

        fn skipping(&self) -> bool {
            self.frames.iter().any(|f| matches!(f.kind, Kind::Skip))
        }

        fn has_fmt(&self, f: Fmt) -> bool {
            self.frames.iter().any(|fr| matches!(fr.kind, Kind::Format(g) if g == f))
        }

        fn text(&mut self, raw: &str) {
            if raw.is_empty() || self.skipping() {
                return;
            }
            let text = markup::decode_entities(&raw.replace("\r\n", "\n").replace('\r', "\n"));
            let value = self.values.last().map(|v| ValueText { mentioned: v.mentioned });
            let in_code = self.has_fmt(Fmt::Code) || self.has_fmt(Fmt::Pre);
            let before = self.tail(8);
            let dialect = self.dialect;
            let top = self.top();
            dialect.push_text(top, &text, TextContext { value, in_code, before: &before });
        }

        /// The last `n` characters written, across open frames.
        fn tail(&self, n: usize) -> String {
            let mut rev: Vec<char> = Vec::with_capacity(n);
            for f in self.frames.iter().rev() {
                for c in f.buf.chars().rev() {
                    if rev.len() == n {
                        return rev.iter().rev().collect();
                    }
                    rev.push(c);
                }
            }
            rev.iter().rev().collect()
        }

        fn at_line_start(&self) -> bool {
            for f in self.frames.iter().rev() {
                if let Some(c) = f.buf.chars().next_back() {
                    return c == '\n';
                }
            }
            true
        }

        fn line_break(&mut self) {
            if !self.at_line_start() {
                self.top().push('\n');
            }
        }

        fn push_frame(&mut self, kind: Kind, tag: &str) {
            // Deeper nesting adds nothing to show and would cost time on hostile input.
            if self.frames.len() < MAX_DEPTH {
                self.frames.push(Frame { kind, tag: tag.to_string(), buf: String::new() });
            }
        }

        fn tag(&mut self, source: &str) {
            if source.starts_with('!') || source.starts_with('?') {
                return;
            }
            let closing = source.starts_with('/');
            let body = source.trim_start_matches('/');
            let name: String =
                body.chars().take_while(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
            if closing {
                self.close(&name);
                return;
            }
            if self.skipping() {
                return;
            }
            let self_closing = body.trim_end().ends_with('/');
            match name.as_str() {
                "b" | "strong" => self.push_frame(Kind::Format(Fmt::Bold), &name),
                "i" | "em" | "cite" => self.push_frame(Kind::Format(Fmt::Italic), &name),
                "s" | "strike" | "del" => self.push_frame(Kind::Format(Fmt::Strike), &name),
                "code" | "tt" | "kbd" | "samp" => self.push_frame(Kind::Format(Fmt::Code), &name),
                "pre" => {
                    self.line_break();
                    self.push_frame(Kind::Format(Fmt::Pre), &name);
                }
                "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                    self.line_break();
                    self.push_frame(Kind::Heading, &name);
                }
                "a" if !self_closing => {
                    let href = attribute(body, "href").map(|h| markup::decode_entities(&h)).filter(|h| {
                        let lower = h.trim_start().to_ascii_lowercase();
                        ["http://", "https://", "mailto:"].iter().any(|p| lower.starts_with(p))
                    });
                    self.push_frame(Kind::Link(href.map(|h| h.trim().to_string())), &name);
                }
                "script" | "style" | "head" | "title" | "template" if !self_closing => {
                    self.push_frame(Kind::Skip, &name)
                }
                "br" => self.top().push('\n'),
                "p" | "div" | "blockquote" | "table" | "tr" | "section" | "article" | "header" | "footer" | "hr"
                | "dl" | "dt" | "dd" => self.line_break(),
                "ul" => {
                    self.line_break();
                    self.lists.push(None);
                }
                "ol" => {
                    self.line_break();
                    let start = attribute(body, "start").and_then(|s| s.trim().parse().ok()).unwrap_or(1);
                    self.lists.push(Some(start));
                }
                "li" => {
                    self.line_break();
                    let depth = (self.lists.len().max(1) - 1).min(MAX_LIST_INDENT);
                    let marker = match self.lists.last_mut() {
                        Some(Some(n)) => {
                            let shown = *n;
                            *n = n.saturating_add(1);
                            format!("{shown}. ")
                        }
                        _ => self.dialect.bullet().to_string(),
                    };
                    let indent = "  ".repeat(depth);
                    self.top().push_str(&format!("{indent}{marker}"));
                }
                "td" | "th" if !self.at_line_start() => self.top().push_str(" | "),
                _ => {}
            }
        }

        fn close(&mut self, name: &str) {
            let (frame_floor, list_floor) = self.values.last().map_or((1, 0), |v| (v.frames, v.lists));
            if let Some(pos) = self.frames.iter().rposition(|f| f.tag == name) {
                if pos >= frame_floor.max(1) {
                    while self.frames.len() > pos {
                        self.pop();
                    }
                }
                return;
            }
            if self.skipping() {
                return;
            }
            match name {
                "ul" | "ol" => {
                    if self.lists.len() > list_floor {
                        self.lists.pop();
                    }
                    self.line_break();
                    // Teams joins list items with one line break and everything else with
                    // two: a blank line keeps the next list or paragraph apart.
                    if self.lists.is_empty() && matches!(self.dialect, Dialect::Teams | Dialect::TeamsConnector) {
                        self.top().push('\n');
                    }
                }
                "p" | "div" | "blockquote" | "table" | "tr" | "li" | "section" | "article" | "header" | "footer"
                | "dl" | "dt" | "dd" => self.line_break(),
                _ => {}
            }
        }

        fn end_value(&mut self) {
            let Some(OpenValue { frames, lists, .. }) = self.values.pop() else { return };
            while self.frames.len() > frames.max(1) {
                self.pop();
            }
            self.lists.truncate(lists);
        }

        /// Closes the innermost frame, writing its content into its parent.
        fn pop(&mut self) {
            let Some(frame) = self.frames.pop() else { return };
            let dialect = self.dialect;
            let in_code = self.has_fmt(Fmt::Code) || self.has_fmt(Fmt::Pre);
            let out = match frame.kind {
                Kind::Root => frame.buf,
                Kind::Skip => String::new(),
                Kind::Format(f) => {
                    let nested = self.has_fmt(f) || (in_code && f != Fmt::Pre);
                    match dialect.mark(f).filter(|_| !nested) {
                        Some(fence) if f == Fmt::Pre => {
                            let content = frame.buf.trim_matches('\n');
                            if content.is_empty() {
                                String::new()
                            } else {
                                format!("{fence}\n{content}\n{fence}\n")
                            }
                        }
                        Some(mark) => wrap_lines(&frame.buf, mark),
                        None if f == Fmt::Pre => format!("{}\n", frame.buf.trim_matches('\n')),
                        None => frame.buf,
                    }
                }
                Kind::Heading => {
                    let mark = dialect.mark(Fmt::Bold).filter(|_| !self.has_fmt(Fmt::Bold) && !in_code);
                    let content = match mark {
                        Some(m) => wrap_lines(&frame.buf, m),
                        None => frame.buf,
                    };
                    format!("{content}\n")
                }
                Kind::Link(href) => match href {
                    Some(url) if !in_code => dialect.link(&url, &frame.buf),
                    _ => frame.buf,
                },
            };
            self.top().push_str(&out);
        }

        fn into_text(mut self) -> String {
            while self.frames.len() > 1 {
                self.pop();
            }
            self.frames.pop().map(|f| f.buf).unwrap_or_default()
        }
    }

    /// The text of a Slack special the user opened with `<` (`<!here>`, `<#C…|name>`,
    /// `<https://…|label>`), values in it included, or `None` when a value inside would
    /// decide what it is: only a link target may come from a value, and only as a URL with
    /// its own scheme; then it is written as a URL, so it cannot end the link early.
    fn slack_special_text(inner: &str) -> Option<String> {
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
            let url = markup::decode_entities(&plain(target));
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
            let text = markup::decode_entities(value);
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
    fn special_end(after: &str) -> Option<usize> {
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
    fn google_special_text(inner: &str) -> Option<String> {
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

    /// Wraps each non-blank line in `mark`, outside its surrounding spaces: mrkdwn and
    /// Markdown emphasis neither spans lines nor starts or ends with a space.
    fn wrap_lines(content: &str, mark: &str) -> String {
        content
            .split('\n')
            .map(|line| {
                let core = line.trim();
                if core.is_empty() {
                    return line.to_string();
                }
                let lead = &line[..line.len() - line.trim_start().len()];
                let trail = &line[line.trim_end().len()..];
                format!("{lead}{mark}{core}{mark}{trail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where a tag that starts after `<` ends (the index of its `>`), quotes respected.
    fn tag_end(after: &str) -> Option<usize> {
        let mut quote = None;
        for (i, c) in after.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => return Some(i),
                (None, '<') => return None,
                _ => {}
            }
        }
        None
    }

    /// The value of attribute `name` in a tag's source (`a href="…" title=…`).
    fn attribute(tag: &str, name: &str) -> Option<String> {
        let mut rest = tag.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
            if rest.is_empty() {
                return None;
            }
            let key_len = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '/').unwrap_or(rest.len());
            let key = &rest[..key_len];
            rest = rest[key_len..].trim_start();
            let mut val = None;
            if let Some(after) = rest.strip_prefix('=') {
                let after = after.trim_start();
                let (v, tail) = match after.chars().next() {
                    Some(q @ ('"' | '\'')) => {
                        let end = after[1..].find(q).map_or(after.len(), |e| e + 1);
                        (&after[1..end], after.get(end + 1..).unwrap_or(""))
                    }
                    _ => {
                        let end = after.find(char::is_whitespace).unwrap_or(after.len());
                        (&after[..end], &after[end..])
                    }
                };
                val = Some(v.to_string());
                rest = tail;
            }
            if key.eq_ignore_ascii_case(name) {
                return val;
            }
            if key_len == 0 && val.is_none() {
                return None;
            }
        }
    }

    /// Tidies the converted text: no trailing spaces, at most one blank line in a row, no
    /// blank lines around it; Teams needs a blank line for each line break outside lists.
    fn finish(text: String, dialect: Dialect) -> String {
        let lines: Vec<&str> = text.split('\n').map(str::trim_end).collect();
        let mut out = String::with_capacity(text.len());
        match dialect {
            Dialect::Teams | Dialect::TeamsConnector => {
                let mut prev_item = false;
                let mut blank = false;
                for line in lines {
                    if line.trim().is_empty() {
                        blank = true;
                        continue;
                    }
                    let item = is_list_item(line);
                    if !out.is_empty() {
                        out.push_str(if item && prev_item && !blank { "\n" } else { "\n\n" });
                    }
                    out.push_str(line);
                    prev_item = item;
                    blank = false;
                }
            }
            _ => {
                let mut blank = false;
                for line in lines {
                    if line.trim().is_empty() {
                        blank = true;
                        continue;
                    }
                    if !out.is_empty() {
                        out.push_str(if blank { "\n\n" } else { "\n" });
                    }
                    blank = false;
                    out.push_str(line);
                }
            }
        }
        out
    }

    fn is_list_item(line: &str) -> bool {
        let l = line.trim_start();
        l.starts_with("- ") || {
            let digits = l.bytes().take_while(u8::is_ascii_digit).count();
            digits > 0 && l[digits..].starts_with(". ")
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A value from the event, as the template fences it.
        fn ev(text: &str) -> String {
            mark_text(text, Origin::Event)
        }

        /// An HTML value from the event (`$this->html(…)$` of an HTML attribute).
        fn evh(text: &str) -> String {
            mark_value(text, Origin::Event, ValueKind::Html)
        }

        fn msg(parts: &[(&str, bool)]) -> String {
            parts.iter().map(|(t, v)| if *v { ev(t) } else { t.to_string() }).collect()
        }

        #[test]
        fn user_markup_is_kept_and_values_are_escaped() {
            let m = msg(&[("*Ticket* ", false), ("R-1 *urgent* <!channel>", true), (" is _new_", false)]);
            assert_eq!(
                convert(&m, Dialect::Slack),
                "*Ticket* R-1 \u{200B}*\u{200B}urgent\u{200B}*\u{200B} &lt;!channel&gt; is _new_"
            );
            assert_eq!(convert(&m, Dialect::Plain), "*Ticket* R-1 *urgent* <!channel> is _new_");
            assert_eq!(convert(&msg(&[("snake_case a*b", true)]), Dialect::Slack), "snake_case a*b");
        }

        #[test]
        fn html_becomes_mrkdwn() {
            let html = "<p>Hello <b>big</b> <i>world</i> <s>old</s> <code>x=1</code></p>\
                        <ul><li>one</li><li>two &amp; three</li></ul><ol><li>first</li><li>second</li></ol>\
                        <a href=\"https://ex.com/a?b=1&amp;c=2\">the <b>link</b></a>";
            assert_eq!(
                convert(&evh(html), Dialect::Slack),
                "Hello *big* _world_ ~old~ `x=1`\n• one\n• two &amp; three\n1. first\n2. second\n<https://ex.com/a?b=1&amp;c=2|the *link*>"
            );
            assert_eq!(
                convert(&evh(html), Dialect::Teams),
                "Hello **big** _world_ old x=1\n\n- one\n- two & three\n\n1. first\n2. second\n\n[the **link**](https://ex.com/a?b=1&c=2)"
            );
            assert_eq!(
                convert(&evh(html), Dialect::Plain),
                "Hello big world old x=1\n- one\n- two & three\n1. first\n2. second\nthe link (https://ex.com/a?b=1&c=2)"
            );
        }

        #[test]
        fn mentions_come_only_from_the_template() {
            // The user wrote the mention; the placeholder gives the id only.
            let m = msg(&[("Hi <@", false), ("U024BE7LH", true), ("> and &lt;@W0123ABC&gt; ", false)]);
            assert_eq!(convert(&m, Dialect::Slack), "Hi <@U024BE7LH> and <@W0123ABC>");
            // Mentions inside values are text, in any spelling.
            let m = msg(&[("Values: ", false), ("&lt;@W0123ABC&gt; <@U024BE7LH> <!here>", true)]);
            assert_eq!(
                convert(&m, Dialect::Slack),
                "Values: &amp;lt;@W0123ABC&amp;gt; &lt;@U024BE7LH&gt; &lt;!here&gt;"
            );
            assert_eq!(convert(&evh("<p>&lt;@U024BE7LH&gt;</p>"), Dialect::Slack), "&lt;@U024BE7LH&gt;");
            // A value that is more than an id does not complete the user's mention.
            let m = msg(&[("<@", false), ("U024BE7LH> <!channel", true), (">", false)]);
            assert_eq!(convert(&m, Dialect::Slack), format!("&lt;@{JOINER}U024BE7LH&gt; &lt;!channel&gt;"));
            // What precedes a placeholder cannot make it markup.
            let m = msg(&[("<", false), ("!channel", true), ("|open>", false)]);
            assert_eq!(convert(&m, Dialect::Slack), "&lt;!channel|open&gt;");
            let m = msg(&[("<!", false), ("channel", true), (">", false)]);
            assert_eq!(convert(&m, Dialect::Slack), "&lt;!channel&gt;");
            // A mentioned contact's own value may name that contact, never a group.
            let mentioned = |t: &str| mark_text(t, Origin::Mentioned);
            assert_eq!(convert(&mentioned("<@U024BE7LH>"), Dialect::Slack), "<@U024BE7LH>");
            assert_eq!(convert(&mentioned("<!channel>"), Dialect::Slack), "&lt;!channel&gt;");
            assert_eq!(convert(&m, Dialect::Teams), "<!channel>");
        }

        #[test]
        fn rocket_chat_and_google_chat_values_cannot_mention() {
            let j = JOINER;
            let m = msg(&[
                ("Hi @", false),
                ("all", true),
                (" and ", false),
                ("@here #general bob@example.com <users/all>", true),
            ]);
            assert_eq!(
                convert(&m, Dialect::RocketChat),
                format!("Hi @{j}all and @{j}here #{j}general bob@example.com <{j}users/all>")
            );
            // The user's `@` with a user name from a placeholder is the user's mention.
            let m = msg(&[("cc @", false), ("jdoe", true)]);
            assert_eq!(convert(&m, Dialect::RocketChat), "cc @jdoe");
            let mentioned = mark_text("@jdoe @all", Origin::Mentioned);
            assert_eq!(convert(&mentioned, Dialect::RocketChat), format!("@jdoe @{j}all"));
            // Google Chat: `<users/…>` only as the user wrote it, with a numeric id at most.
            let m = msg(&[("<users/", false), ("all", true), ("> <users/", false), ("1234", true), (">", false)]);
            assert_eq!(convert(&m, Dialect::GoogleChat), format!("<users/{j}all> <users/1234>"));
            let m = msg(&[("<", false), ("users/all", true), ("> ", false), ("*bold* <https://x.example|y>", true)]);
            assert_eq!(
                convert(&m, Dialect::GoogleChat),
                format!("<{j}users/all> {ZWSP}*{ZWSP}bold{ZWSP}*{ZWSP} <{j}https://x.example|y>")
            );
            let mentioned = mark_text("<users/42> <users/all>", Origin::Mentioned);
            assert_eq!(convert(&mentioned, Dialect::GoogleChat), format!("<users/42> <{j}users/all>"));
        }

        #[test]
        fn slack_markup_written_by_the_user_passes() {
            let m = format!("<!here> see <https://x.example/?a=1&amp;b=2|the page> for {}", evh("<b>x</b>"));
            assert_eq!(convert(&m, Dialect::Slack), "<!here> see <https://x.example/?a=1&amp;b=2|the page> for *x*");
            // The same characters in a text value are text.
            let t = msg(&[("for ", false), ("<b>x</b>", true)]);
            assert_eq!(convert(&t, Dialect::Slack), "for &lt;b&gt;x&lt;/b&gt;");
            assert_eq!(convert(&m, Dialect::SlackPlain), "<!here> see the page for x");
            let m = msg(&[
                ("<", false),
                ("https://x.example/?a=1&b=<2>", true),
                ("|Open> <ol start=\"4294967295\"><li>a<li>b</ol>", false),
            ]);
            assert_eq!(
                convert(&m, Dialect::Slack),
                "<https://x.example/?a=1&amp;b=%3C2%3E|Open>\n4294967295. a\n4294967295. b"
            );
        }

        #[test]
        fn a_value_cannot_close_or_leak_the_users_markup() {
            let m = format!("<b>{} tail</b>", evh("</b>plain <i>open"));
            assert_eq!(convert(&m, Dialect::Slack), "*plain _open_ tail*");
        }

        #[test]
        fn truncation_keeps_links_and_entities_whole() {
            let t = format!("{}<https://a.example/|x>", "a".repeat(20));
            assert_eq!(truncate(&t, 30, Unit::Utf16, Dialect::Slack), format!("{}…", "a".repeat(20)));
            let t = format!("{}&amp;b", "a".repeat(20));
            assert_eq!(truncate(&t, 25, Unit::Utf16, Dialect::Slack), format!("{}…", "a".repeat(20)));
            let t = format!("```\n{}\n```", "a".repeat(50));
            let cut = truncate(&t, 30, Unit::Utf16, Dialect::Slack);
            assert!(cut.ends_with("…\n```") && cut.encode_utf16().count() <= 30, "{cut}");
            assert_eq!(truncate("short", 30, Unit::Utf16, Dialect::Slack), "short");
            let t = format!("{}[label](https://a.example/long)", "a".repeat(10));
            assert_eq!(truncate(&t, 30, Unit::JsonBytes, Dialect::Teams), format!("{}…", "a".repeat(10)));
        }

        #[test]
        fn comments_scripts_and_odd_tags() {
            let html = "<p>a<!-- hidden --> <script>alert(1)</script>b <span title=\"x>y\">c</span></p><table><tr><td>k</td><td>v</td></tr></table>";
            assert_eq!(convert(&evh(html), Dialect::Plain), "a b c\nk | v");
            assert_eq!(convert(&evh("<a href=\"javascript:alert(1)\">x</a>"), Dialect::Slack), "x");
            assert_eq!(convert("a < b > c & d", Dialect::Slack), "a &lt; b &gt; c &amp; d");
            assert_eq!(convert(&ev("Service Desk <L1> & Ops"), Dialect::Slack), "Service Desk &lt;L1&gt; &amp; Ops");
            assert_eq!(convert(&evh("x <BR/>y <Span>z</SPAN>"), Dialect::Plain), "x\ny z");
        }
    }
}
