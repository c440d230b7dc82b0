//! The converter's cases, one per rule of the module documentation.

use super::*;
use crate::rich_text::{Origin, ValueKind};

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
    assert_eq!(convert(&m, Dialect::Slack), "Values: &amp;lt;@W0123ABC&amp;gt; &lt;@U024BE7LH&gt; &lt;!here&gt;");
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
    let m =
        msg(&[("Hi @", false), ("all", true), (" and ", false), ("@here #general bob@example.com <users/all>", true)]);
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

proptest::proptest! {
    /// The shortcut of [`value`] for inert text gives what converting the fenced value gives,
    /// in every dialect.
    #[test]
    fn inert_values_convert_to_themselves(text in "[a-zA-Z0-9 .,:;!?'()/+=%-]{1,40}") {
        if is_inert(&text) {
            for dialect in [
                Dialect::Slack,
                Dialect::SlackPlain,
                Dialect::Teams,
                Dialect::TeamsConnector,
                Dialect::RocketChat,
                Dialect::GoogleChat,
                Dialect::Plain,
            ] {
                proptest::prop_assert_eq!(convert(&ev(&text), dialect), text.clone(), "{:?}", dialect);
            }
        }
    }
}

#[test]
fn what_is_not_inert_is_converted() {
    for text in ["", " a", "a ", "a  b", "a\nb", "a_b", "a*b", "@here", "#x", "a&b", "<a>", "a`b", "[x]", "~x", "x\\y"]
    {
        assert!(!is_inert(text), "{text:?}");
    }
    assert!(is_inert("R-000123"));
    assert!(is_inert("Printer broken on floor 3 (again)."));
}
