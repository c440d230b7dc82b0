//! Text appended to a message, escaped for each dialect: what a value may not turn into
//! markup, a mention or a link, and how links are written.

use super::convert::Fmt;
use super::{Dialect, GROUP_MENTIONS, JOINER, MENTIONED_START, VALUE_END, VALUE_START, ZWSP};

impl Dialect {
    pub(super) fn is_slack(self) -> bool {
        matches!(self, Dialect::Slack | Dialect::SlackPlain)
    }

    pub(super) fn is_markdown(self) -> bool {
        matches!(self, Dialect::Teams | Dialect::TeamsConnector | Dialect::RocketChat)
    }

    pub(super) fn mark(self, f: Fmt) -> Option<&'static str> {
        match (self, f) {
            (Dialect::Slack | Dialect::RocketChat, Fmt::Bold) => Some("*"),
            (Dialect::Teams | Dialect::TeamsConnector, Fmt::Bold) => Some("**"),
            (Dialect::Slack | Dialect::RocketChat | Dialect::Teams | Dialect::TeamsConnector, Fmt::Italic) => Some("_"),
            (Dialect::Slack | Dialect::RocketChat, Fmt::Strike) => Some("~"),
            (Dialect::TeamsConnector, Fmt::Strike) => Some("~~"),
            (Dialect::Slack | Dialect::RocketChat | Dialect::TeamsConnector, Fmt::Code) => Some("`"),
            (Dialect::Slack | Dialect::RocketChat, Fmt::Pre) => Some("```"),
            _ => None,
        }
    }

    pub(super) fn bullet(self) -> &'static str {
        if self.is_slack() {
            "• "
        } else {
            "- "
        }
    }

    /// Appends text, escaped for this markup. Text from a value also has its formatting
    /// characters neutralised, and whatever would open a mention or a link in this
    /// service (see [`Dialect::opens_mention`]).
    pub(super) fn push_text(self, out: &mut String, text: &str, t: TextContext<'_>) {
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
            let break_after =
                from_value && self.opens_mention(c, word_prev, &chars[i + 1..], t.value.is_some_and(|v| v.mentioned));
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
    pub(super) fn opens_mention(self, c: char, prev: Option<char>, rest: &[char], mentioned: bool) -> bool {
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
    pub(super) fn guard_value_start(self, before: &str, content: &str) -> bool {
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

    pub(super) fn link(self, url: &str, text: &str) -> String {
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
                    escape_slack_text(url)
                } else {
                    text.to_string()
                }
            }
            Dialect::Teams | Dialect::TeamsConnector | Dialect::RocketChat => {
                let target = escape_url_markdown(url);
                let label = if same { url.replace('[', "\\[").replace(']', "\\]") } else { text.replace('\n', " ") };
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
pub(super) fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-')
}

pub(super) fn is_fence(c: char) -> bool {
    matches!(c, VALUE_START | VALUE_END | MENTIONED_START)
}

/// What [`Dialect::push_text`] needs to know about the text it appends.
#[derive(Clone, Copy)]
pub(super) struct TextContext<'a> {
    /// `None` for the user's own text.
    pub(super) value: Option<ValueText>,
    /// Inside code or a preformatted block.
    pub(super) in_code: bool,
    /// The last characters written before this text.
    pub(super) before: &'a str,
}

#[derive(Clone, Copy)]
pub(super) struct ValueText {
    /// The value is a mentioned contact's (`$mentioned->…$`).
    pub(super) mentioned: bool,
}

pub(super) fn looks_like_entity(rest: &[char]) -> bool {
    let name: String = rest.iter().take(10).take_while(|c| **c != ';').collect();
    name.len() < rest.len().min(10) && !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '#')
}

pub(super) fn escape_url_slack(url: &str) -> String {
    url.replace('&', "&amp;").replace('<', "%3C").replace('>', "%3E").replace('|', "%7C").replace(' ', "%20")
}

pub(super) fn escape_url_plain(url: &str) -> String {
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

pub(super) fn escape_url_markdown(url: &str) -> String {
    url.replace(' ', "%20").replace('(', "%28").replace(')', "%29").replace('<', "%3C").replace('>', "%3E")
}

/// Slack text outside a link: `&`, `<` and `>` as entities, as Slack's own formatting
/// rules ask, so a URL shown as text cannot open a mention or a link.
fn escape_slack_text(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
