//! Small text conversions shared by placeholders and chat payloads: HTML escaping, entity
//! decoding, and HTML to plain text (the HTML parsed by [`super::html::normalise`] first,
//! so that what is stripped here is always well-formed).

/// Escapes `&`, `<`, `>` and `"` for HTML text and attributes.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text, false);
    out
}

/// Escapes `text` for XML character data and quoted attribute values (`'` too); characters
/// XML 1.0 cannot carry at all (most C0 controls, U+FFFE, U+FFFF) are dropped.
pub fn xml_escape_into(out: &mut String, text: &str) {
    escape_into(out, text, true);
}

/// The one markup escape: HTML's, and with `xml` also `'` and what XML cannot carry.
fn escape_into(out: &mut String, text: &str, xml: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' if xml => out.push_str("&apos;"),
            c if xml
                && !matches!(c, '\t' | '\n' | '\r')
                && ((c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}') => {}
            c => out.push(c),
        }
    }
}

/// Decodes the named entities editors produce and numeric ones.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        // Entities are short: look for the `;` only nearby, so long text stays linear.
        let decoded = tail.bytes().take(12).position(|b| b == b';').and_then(|end| {
            let name = &tail[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// HTML to plain text: block ends and `<br>` become newlines, list items get a dash,
/// other tags are dropped, entities decoded.
pub fn html_to_text(html: &str) -> String {
    let html = super::html::normalise(html);
    let mut rest = html.as_str();
    let mut out = String::with_capacity(html.len());
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let tag = rest[open + 1..open + close].trim().to_ascii_lowercase();
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        match (tag.starts_with('/'), name.as_str()) {
            (_, "br") => out.push('\n'),
            (false, "li") => out.push_str("\n- "),
            (true, "p" | "div" | "ul" | "ol" | "h1" | "h2" | "h3" | "h4" | "tr" | "blockquote" | "pre") => {
                out.push('\n')
            }
            _ => {}
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    let text = decode_entities(&out);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_strips() {
        assert_eq!(html_escape("a<b>&\"c\"'\u{1}"), "a&lt;b&gt;&amp;&quot;c&quot;'\u{1}");
        let mut xml = String::new();
        xml_escape_into(&mut xml, "a<b>&\"c\"'\u{1}\t\u{FFFE}");
        assert_eq!(xml, "a&lt;b&gt;&amp;&quot;c&quot;&apos;\t");
        assert_eq!(
            html_to_text("<p>Hello <b>world</b></p><ul><li>one</li><li>two &amp; three</li></ul>"),
            "Hello world\n\n- one\n- two & three"
        );
        assert_eq!(html_to_text("a &lt; b"), "a < b");
        assert_eq!(decode_entities("&#233;t&#xE9; &unknown; &"), "été &unknown; &");
        assert_eq!(html_to_text("<p>broken <b>nesting</p> &nbsp;<ul><li>a<li>b</ul>"), "broken nesting\n\n- a\n- b");
    }
}
