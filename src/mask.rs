//! Masking of the secret parts of URLs and headers wherever they are shown: results,
//! logs, `render` output.
//!
//! Chat webhook URLs carry their credential in the URL itself (Slack's
//! `/services/T…/B…/token`, Teams Workflows' `sig=`, Google Chat's `key=`/`token=`,
//! Rocket.Chat's `/hooks/id/token`), so a URL is never shown unmasked.

/// Query parameters whose value is a credential.
const SECRET_PARAMS: [&str; 12] = [
    "sig",
    "signature",
    "token",
    "key",
    "api_key",
    "apikey",
    "access_token",
    "secret",
    "password",
    "code",
    "auth",
    "sv",
];

/// Path prefixes after which everything is a credential.
const SECRET_PATHS: [&str; 3] = ["/services/", "/webhookb2/", "/api/webhooks/"];

/// Path prefixes followed by `<id>/<token>` in chat webhooks (Rocket.Chat, Mattermost).
const TOKEN_PATHS: [&str; 2] = ["/hooks/", "/webhook/"];

/// The URL with credentials replaced by `***`.
pub fn url(raw: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(raw) else {
        // Not a URL we can take apart: show only the scheme and host part.
        return raw.split("://").next().map(|s| format!("{s}://***")).unwrap_or_else(|| "***".into());
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let path = u.path().to_string();
    let secret_prefix = SECRET_PATHS.iter().find_map(|p| path.find(p).map(|i| &path[..i + p.len()])).or_else(|| {
        TOKEN_PATHS.iter().find_map(|p| {
            let i = path.find(p)?;
            let rest: Vec<&str> = path[i + p.len()..].split('/').collect();
            // `<id>/<long token>`: a credential, not an ordinary API path.
            (rest.len() == 2 && rest[1].len() >= 20).then(|| &path[..i + p.len()])
        })
    });
    if let Some(prefix) = secret_prefix {
        if path.len() > prefix.len() {
            u.set_path(&format!("{prefix}***"));
        }
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str());
                (k.into_owned(), if secret { "***".to_string() } else { v.into_owned() })
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string().replace("%2A%2A%2A", "***")
}

/// Whether a header's value is a credential by its name.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || n == "webhook-signature"
        || ["token", "secret", "key", "password", "auth", "signature"].iter().any(|w| n.contains(w))
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
    let joined = parts.join(": ");
    match joined.find("(http") {
        Some(start) => {
            let end = joined[start..].find(')').map(|e| start + e).unwrap_or(joined.len());
            format!("{}({}){}", &joined[..start], url(&joined[start + 1..end]), &joined[(end + 1).min(joined.len())..])
        }
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_chat_webhook_credentials() {
        assert_eq!(url("https://hooks.slack.com/services/T000/B000/XXXX"), "https://hooks.slack.com/services/***");
        assert_eq!(
            url("https://chat.googleapis.com/v1/spaces/AAA/messages?key=abc&token=def"),
            "https://chat.googleapis.com/v1/spaces/AAA/messages?key=***&token=***"
        );
        let teams = url("https://prod-01.westus.logic.azure.com:443/workflows/123/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig=SECRET");
        assert!(!teams.contains("SECRET"), "{teams}");
        assert!(teams.contains("api-version=2016-06-01"), "{teams}");
        assert_eq!(
            url("https://chat.example.com/hooks/5f3a9c1e/aZ3kL9pQ2wX8yV7bN4mR6tU1"),
            "https://chat.example.com/hooks/***"
        );
        assert_eq!(url("https://api.example.com/hooks/tickets/R-1"), "https://api.example.com/hooks/tickets/R-1");
        assert_eq!(url("https://user:pw@example.com/x"), "https://user:***@example.com/x");
        assert_eq!(url("https://example.com/api/tickets?id=4"), "https://example.com/api/tickets?id=4");
    }

    #[test]
    fn secret_headers_by_name() {
        assert!(is_secret_header("Authorization"));
        assert!(is_secret_header("X-Api-Key"));
        assert!(is_secret_header("auth-token"));
        assert!(!is_secret_header("content-type"));
    }
}
