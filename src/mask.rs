//! Masking of the secret parts of URLs and headers wherever they are shown: results, dead
//! letters, logs, `render` output, error messages.
//!
//! Masking works on parsed URLs, never on patterns in text: a URL is taken apart by the URL
//! parser, and each part is judged on its own. Chat webhook URLs carry their credential in
//! the URL itself (Slack's `/services/T…/B…/token` and `/triggers/…`, Teams Workflows'
//! `sig=`, Google Chat's `key=`/`token=`, Rocket.Chat's and Mattermost's `/hooks/…`), so
//! the URL of a connection that a chat action uses is shown as its host only
//! ([`host_only`]); other URLs lose their user info, the values of credential-like query
//! parameters, and the path after a webhook prefix or any token-like path segment
//! ([`url`]). Text that may hold URLs (error messages) goes through [`urls_in_text`].

/// Query parameters whose value is a credential (compared without case).
const SECRET_PARAMS: [&str; 30] = [
    "token",
    "access_token",
    "access-token",
    "accesstoken",
    "private_token",
    "private-token",
    "refresh_token",
    "id_token",
    "auth_token",
    "api_key",
    "api-key",
    "apikey",
    "key",
    "client_secret",
    "secret",
    "sig",
    "signature",
    "password",
    "passwd",
    "pwd",
    "pass",
    "auth",
    "authorization",
    "code",
    "credential",
    "credentials",
    "session",
    "sessionid",
    "jwt",
    "sv",
];

/// Words that make a query parameter or header name a credential wherever they appear in
/// it (`x-goog-api-key`, `hub.verify_token`, `X-Auth-Token`, `X-Credentials`).
const SECRET_WORDS: [&str; 9] =
    ["token", "secret", "password", "passwd", "apikey", "api_key", "api-key", "credential", "signature"];

/// Path prefixes after which everything is a credential: Slack incoming webhooks and
/// Workflow triggers, Teams connectors, Discord.
const SECRET_PATHS: [&str; 4] = ["/services/", "/triggers/", "/webhookb2/", "/api/webhooks/"];

/// Path prefixes after which the rest is a credential when it holds a key-like segment:
/// Mattermost's `/hooks/<key>`, Rocket.Chat's `/hooks/<id>/<token>`, while an API path such
/// as `/hooks/tickets/R-1` stays readable.
const HOOK_PATHS: [&str; 3] = ["/hooks/", "/webhook/", "/webhooks/"];

/// A segment after a hook prefix at least this long, of key characters, is a key.
const HOOK_KEY: usize = 16;

/// A path segment at least this long, made of token characters with letters and digits
/// mixed, is taken for a credential.
const TOKEN_SEGMENT: usize = 20;

/// The URL with its credentials replaced by `***`: user info, credential-like query
/// values, the path after a webhook prefix and token-like path segments. A URL that does
/// not parse shows only its scheme.
pub fn url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw.trim()) else {
        return unparsed(raw);
    };
    mask_userinfo(&mut u);
    if !u.cannot_be_a_base() {
        let path = u.path().to_string();
        let masked = mask_path(&path);
        if masked != path {
            u.set_path(&masked);
        }
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let value = if is_secret_param(&k) { "***".to_string() } else { v.into_owned() };
                (k.into_owned(), value)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if u.fragment().is_some() {
        u.set_fragment(Some("***"));
    }
    restore_stars(u.as_str())
}

/// The URL with everything but its scheme, host and port replaced by `***`: for chat
/// webhooks, whose path and query are the credential whatever their shape (a webhook
/// behind a proxy path, a new URL format).
pub fn host_only(raw: &str) -> String {
    let Ok(u) = url::Url::parse(raw.trim()) else {
        return unparsed(raw);
    };
    let host = match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return format!("{}:***", u.scheme()),
    };
    let user = if u.username().is_empty() && u.password().is_none() { "" } else { "***@" };
    format!("{}://{user}{host}/***", u.scheme())
}

/// A comma-separated list of server URLs (NATS), each masked with [`url`].
pub fn url_list(raw: &str) -> String {
    raw.split(',')
        .map(|s| if s.trim().is_empty() { s.to_string() } else { url(s.trim()) })
        .collect::<Vec<_>>()
        .join(",")
}

/// Text with every URL in it masked with [`url`]: each candidate (a scheme followed by
/// `://` and everything up to the next space, `"`, `<`, `>` or backtick) is parsed as a whole, so a
/// credential holding `)` is masked entirely. Trailing sentence punctuation, and a `)`
/// closing a `(` right before the URL (`url (https://…)`), are kept outside.
pub fn urls_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let scheme_start = rest[..sep]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(sep, |(i, _)| i);
        if scheme_start == sep || !rest[scheme_start..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(&rest[..sep + 3]);
            rest = &rest[sep + 3..];
            continue;
        }
        let end = rest[sep..]
            // `'` is not here: URLs keep it unescaped in their path.
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '`'))
            .map_or(rest.len(), |e| sep + e);
        // Sentence punctuation after a URL, and the `)` closing a `(` just before it, stay
        // outside: at most one character of a credential could end up shown that way.
        let mut candidate = rest[scheme_start..end].trim_end_matches(['.', ',', ';', ':', '!', '?']);
        if rest[..scheme_start].ends_with('(') && candidate.ends_with(')') {
            candidate = &candidate[..candidate.len() - 1];
        }
        let kept = scheme_start + candidate.len();
        out.push_str(&rest[..scheme_start]);
        out.push_str(&url(candidate));
        rest = &rest[kept..];
    }
    out.push_str(rest);
    out
}

/// Whether a header's value is a credential by its name.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "webhook-signature" | "x-api-key"
    ) || SECRET_WORDS.iter().any(|w| n.contains(w))
        || ["key", "auth", "session", "sig"].iter().any(|w| n.split(['-', '_', '.']).any(|part| part == *w))
}

fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&n.as_str()) || SECRET_WORDS.iter().any(|w| n.contains(w))
}

fn mask_userinfo(u: &mut url::Url) {
    // A token is often the user name itself (`https://ghp_…@host`).
    if !u.username().is_empty() {
        let _ = u.set_username("***");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
}

fn mask_path(path: &str) -> String {
    let lower = path.to_ascii_lowercase();
    if let Some((i, prefix)) =
        SECRET_PATHS.iter().filter_map(|p| lower.find(p).map(|i| (i, *p))).min_by_key(|(i, _)| *i)
    {
        if path.len() > i + prefix.len() {
            return format!("{}***", &path[..i + prefix.len()]);
        }
        return path.to_string();
    }
    for prefix in HOOK_PATHS {
        if let Some(i) = lower.find(prefix) {
            let rest = &path[i + prefix.len()..];
            let key = |seg: &str| {
                seg.len() >= HOOK_KEY && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            };
            if rest.split('/').any(key) {
                return format!("{}***", &path[..i + prefix.len()]);
            }
        }
    }
    path.split('/').map(|seg| if looks_like_token(seg) { "***" } else { seg }).collect::<Vec<_>>().join("/")
}

fn looks_like_token(segment: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    decoded.len() >= TOKEN_SEGMENT
        && decoded.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'='))
        && decoded.bytes().any(|b| b.is_ascii_digit())
        && decoded.bytes().any(|b| b.is_ascii_alphabetic())
}

fn unparsed(raw: &str) -> String {
    match raw.trim().split_once("://") {
        Some((scheme, _)) if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            format!("{scheme}://***")
        }
        _ => "***".into(),
    }
}

/// The URL serialiser percent-encodes the `*` of `***` in some places; show it plainly.
fn restore_stars(s: &str) -> String {
    s.replace("%2A%2A%2A", "***")
}

/// An error and its causes on one line, with any URL in it masked (reqwest puts the URL in
/// its messages).
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    // reqwest puts the URL in its message: parsed and masked like every other shown URL.
    urls_in_text(&parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_chat_webhook_credentials() {
        assert_eq!(url("https://hooks.slack.com/services/T000/B000/XXXX"), "https://hooks.slack.com/services/***");
        assert_eq!(
            url("https://hooks.slack.com/triggers/T0123/4567/abcdef0123456789"),
            "https://hooks.slack.com/triggers/***"
        );
        assert_eq!(
            url("https://chat.googleapis.com/v1/spaces/AAA/messages?key=abc&token=def"),
            "https://chat.googleapis.com/v1/spaces/AAA/messages?key=***&token=***"
        );
        let teams = url("https://prod-01.westus.logic.azure.com:443/workflows/123/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig=SECRET");
        assert!(!teams.contains("SECRET"), "{teams}");
        assert_eq!(
            url("https://chat.example.com/hooks/5f3a9c1e/aZ3kL9pQ2wX8yV7bN4mR6tU1"),
            "https://chat.example.com/hooks/***"
        );
        assert_eq!(
            url("https://mattermost.example.com/hooks/xkq7b1m3afgy8ec6zz"),
            "https://mattermost.example.com/hooks/***"
        );
        assert_eq!(url("https://example.com/api/tickets?id=4"), "https://example.com/api/tickets?id=4");
        assert_eq!(url("https://example.com/api/tickets/R-000123"), "https://example.com/api/tickets/R-000123");
        assert_eq!(
            url("https://api.example.com/hooks/tickets/R%201%2F2"),
            "https://api.example.com/hooks/tickets/R%201%2F2"
        );
    }

    #[test]
    fn user_info_query_keys_and_token_segments() {
        assert_eq!(url("https://user:pw@example.com/x"), "https://***:***@example.com/x");
        assert_eq!(url("https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@example.com/x"), "https://***@example.com/x");
        for key in [
            "token",
            "private_token",
            "access-token",
            "Access_Token",
            "apikey",
            "api_key",
            "X-Api-Key",
            "hub.verify_token",
            "sig",
            "password",
            "client_secret",
        ] {
            let masked = url(&format!("https://example.com/x?{key}=s3cr3t&page=2"));
            assert!(!masked.contains("s3cr3t") && masked.contains("page=2"), "{key}: {masked}");
        }
        assert_eq!(
            url("https://proxy.example.com/relay/xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy/post"),
            "https://proxy.example.com/relay/***/post"
        );
        assert_eq!(url("https://example.com/a#access_token=abc"), "https://example.com/a#***");
        assert_eq!(url("not a url with token=abc"), "***");
        assert_eq!(url("https://exa mple.com/?token=abc"), "https://***");
    }

    #[test]
    fn host_only_for_chat_connections() {
        assert_eq!(host_only("https://hooks.slack.com/services/T0/B0/X"), "https://hooks.slack.com/***");
        assert_eq!(host_only("https://u:p@proxy.corp:8443/slack/T0/B0/X?x=1"), "https://***@proxy.corp:8443/***");
        assert_eq!(host_only("::nope"), "***");
    }

    #[test]
    fn urls_inside_text_are_parsed_whole() {
        assert_eq!(
            urls_in_text("error sending request for url (https://h.example/x?token=abc)REST): connection refused"),
            "error sending request for url (https://h.example/x?token=***): connection refused"
        );
        assert_eq!(
            urls_in_text(
                "a https://u:pw@h.example/hooks/abcdefghijklmnopqrst, then nats://bridge:pw@127.0.0.1:4222 failed"
            ),
            "a https://***:***@h.example/hooks/***, then nats://***:***@127.0.0.1:4222 failed"
        );
        assert_eq!(urls_in_text("no url here: 10://x"), "no url here: 10://x");
        // Found by fuzzing: a `'` in a path ended the URL, and its query was shown.
        assert_eq!(
            urls_in_text("error (https://h.example/it's/x?token=abc): refused"),
            "error (https://h.example/it's/x?token=***): refused"
        );
        assert_eq!(url_list("nats://a:pw@h1:4222, nats://h2"), "nats://***:***@h1:4222,nats://h2");
    }

    #[test]
    fn secret_headers_by_name() {
        for h in [
            "Authorization",
            "X-Api-Key",
            "auth-token",
            "X-Credentials",
            "Cookie",
            "Set-Cookie",
            "X-Auth",
            "x-session",
            "Private-Token",
            "x-client-secret",
            "Api-Key",
        ] {
            assert!(is_secret_header(h), "{h}");
        }
        for h in ["content-type", "x-request-id", "accept", "x-api-version", "keep-alive"] {
            assert!(!is_secret_header(h), "{h}");
        }
    }
}
