use super::*;
use crate::event::parse_event;
use proptest::prelude::*;
use serde_json::json;

fn event() -> Event {
    let doc = json!({
        "id": "e1", "time": "2026-11-28T09:00:00Z", "operation": "update",
        "class": "UserRequest", "ancestors": ["Ticket"], "key": 42,
        "object": {
            "ref": "R-42", "title": "Say \"hi\"\nnow – é", "priority": 2, "urgent": true, "closed": null,
            "status": "assigned", "team_id": {"id": 5, "name": "Ops", "slack": "#ops"},
            "contacts_list": [{"name": "A"}, {"name": "B"}],
            "description": "<p>Hello <b>you</b> &amp; me</p>",
            "public_log": {"entries": [
                {"date": "2026-11-28", "user_login": "ada", "message": "newest", "message_html": "<p>newest</p>"},
                {"date": "2026-11-27", "user_login": "bob", "message": "older"}
            ]},
            "path_value": "a b/c?d"
        },
        "previous": {"status": "new"},
        "formats": {"description": "html"},
        "labels": {"values": {"status": "Assigned"}},
        "source": {"name": "iTop", "url": "https://itop.example.com"},
        "actor": {"user": {"login": "ada"}, "contact": {"name": "Lovelace", "email": "ada@example.com"}},
        "mentions": [{"name": "Bob", "email": "bob@example.com"}]
    });
    parse_event(doc.to_string().as_bytes(), None).unwrap()
}

fn render(text: &str) -> (String, Vec<String>) {
    let e = event();
    let ctx = RenderContext::new(&e, "trig", "act", e.mentions.first());
    let out = Template::parse(text).unwrap().render(&ctx, Escape::None);
    (out, ctx.missing())
}

#[test]
fn every_placeholder_form() {
    let cases = [
        ("$this->ref$", "R-42"),
        ("$this->team_id->name$", "Ops"),
        ("$this->team_id$", "Ops"),
        ("$this->contacts_list$", "A, B"),
        ("$this->html(description)$", "<p>Hello <b>you</b> &amp; me</p>"),
        ("$this->text(description)$", "Hello you & me"),
        ("$this->label(status)$", "Assigned"),
        ("$this->label(ref)$", "R-42"),
        ("$this->head(public_log)$", "newest"),
        ("$this->head_html(public_log)$", "<p>newest</p>"),
        ("$this->id$", "42"),
        ("$this->name()$", "R-42"),
        ("$this->url()$", "https://itop.example.com/pages/UI.php?operation=details&class=UserRequest&id=42"),
        (
            "$this->hyperlink()$",
            "<a href=\"https://itop.example.com/pages/UI.php?operation=details&amp;class=UserRequest&amp;id=42\">R-42</a>",
        ),
        ("$current_contact->email$", "ada@example.com"),
        ("$current_user->login$", "ada"),
        ("$mentioned->email$", "bob@example.com"),
        ("$previous->status$", "new"),
        ("$APP_URL$", "https://itop.example.com/"),
        ("$trigger->name$", "trig"),
        ("$action->name$", "act"),
        ("$this->priority$", "2"),
        ("$this->urgent$", "true"),
        ("$this->closed$", ""),
    ];
    for (text, want) in cases {
        let (got, missing) = render(text);
        assert_eq!(got, want, "{text}");
        assert!(missing.is_empty(), "{text}: {missing:?}");
    }
}

#[test]
fn literal_dollars_stay() {
    assert_eq!(render("costs $5 and $6, ref $this->ref$").0, "costs $5 and $6, ref R-42");
    assert_eq!(render("$").0, "$");
}

#[test]
fn missing_attribute_renders_empty_and_is_reported() {
    let (out, missing) = render("[$this->nope$][$this->team_id->nope$][$this->ref->deeper$]");
    assert_eq!(out, "[][][]");
    assert_eq!(missing, vec!["$this->nope$", "$this->ref->deeper$", "$this->team_id->nope$"]);
}

#[test]
fn parse_errors_name_the_placeholder() {
    for bad in [
        "$this->html(x$",
        "$this->bogus()$",
        "$this->a b$",
        "$trigger->class$",
        "$current_user->text(x)$",
        "$this->name(x)$",
    ] {
        let e = Template::parse(bad).unwrap_err();
        assert_eq!(e.placeholder, bad, "{bad}");
    }
}

#[test]
fn url_escaping_percent_encodes_values() {
    let e = event();
    let ctx = RenderContext::new(&e, "t", "a", None);
    let t = Template::parse("https://x.example.com/tickets/$this->path_value$?ref=$this->ref$").unwrap();
    assert_eq!(t.render(&ctx, Escape::Url), "https://x.example.com/tickets/a%20b%2Fc%3Fd?ref=R-42");
}

#[test]
fn dot_segments_cannot_climb_a_url_path() {
    let doc = json!({"id": "p", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "C", "key": 1, "object": {"v": ".."}});
    let e = parse_event(doc.to_string().as_bytes(), None).unwrap();
    let ctx = RenderContext::new(&e, "t", "a", None);
    Template::parse("https://h.example.com/api/$this->v$/x").unwrap().render(&ctx, Escape::Url);
    assert_eq!(ctx.invalid().len(), 1, "a `..` segment makes the request invalid");
    assert!(ctx.invalid()[0].contains("$this->v$"), "{:?}", ctx.invalid());
}

#[test]
fn a_value_that_would_drop_or_climb_a_path_level_makes_the_request_invalid() {
    for (value, template, invalid) in [
        ("..", "/items/$this->v$", true),
        (".", "/items/$this->v$", true),
        ("", "/items/$this->v$", true),
        ("", "/items/$this->v$/history", true),
        ("", "https://h.example.com/items/$this->v$?x=1", true),
        ("..", "https://h.example.com/$this->v$", true),
        // Not a whole path segment: fine.
        ("", "/items/$this->v$.json", false),
        ("..", "/items/x$this->v$", false),
        ("", "https://h.example.com/items?ref=$this->v$", false),
        ("", "https://h.example.com/items#/$this->v$", false),
        ("R-1", "/items/$this->v$", false),
    ] {
        let doc = json!({"id": "p", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "C", "key": 1, "object": {"v": value}});
        let e = parse_event(doc.to_string().as_bytes(), None).unwrap();
        let ctx = RenderContext::new(&e, "t", "a", None);
        Template::parse(template).unwrap().render(&ctx, Escape::Url);
        assert_eq!(!ctx.invalid().is_empty(), invalid, "{value:?} in {template}");
    }
}

#[test]
fn header_values_lose_every_control_character() {
    let doc = json!({"id": "p", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "C", "key": 1, "object": {"v": "a\u{1}b\r\nc\u{7f}d\u{85}e\tf"}});
    let e = parse_event(doc.to_string().as_bytes(), None).unwrap();
    let ctx = RenderContext::new(&e, "t", "a", None);
    let out = Template::parse("X $this->v$").unwrap().render(&ctx, Escape::Header);
    assert_eq!(out, "X ab  cde\tf");
    assert!(reqwest::header::HeaderValue::from_str(&out).is_ok());
}

#[test]
fn header_escaping_removes_line_breaks() {
    let e = event();
    let ctx = RenderContext::new(&e, "t", "a", None);
    let t = Template::parse("X $this->title$").unwrap();
    let out = t.render(&ctx, Escape::Header);
    assert!(!out.contains('\n') && !out.contains('\r'), "{out}");
}

#[test]
fn markup_escaping_applies_to_values_only() {
    let e = event();
    let ctx = RenderContext::new(&e, "t", "a", None);
    let t = Template::parse("*$this->html(description)$*").unwrap();
    let out = t.render(&ctx, Escape::Markup(|s, _, _| s.replace('<', "&lt;")));
    assert!(out.starts_with("*&lt;p>"), "{out}");
}

#[test]
fn json_payload_substitution_keeps_types_and_escapes_strings() {
    let e = event();
    let ctx = RenderContext::new(&e, "t", "a", None);
    let t = JsonTemplate::parse_text(
        r#"{"title": "$this->title$", "n": "$this->priority$", "u": "$this->urgent$", "c": "$this->closed$",
            "mixed": "P$this->priority$", "$this->ref$": ["$this->team_id->slack$"], "fixed": 1}"#,
    )
    .unwrap();
    let v = t.render(&ctx);
    assert_eq!(v["title"], json!("Say \"hi\"\nnow – é"));
    assert_eq!(v["n"], json!(2));
    assert_eq!(v["u"], json!(true));
    assert_eq!(v["c"], json!(null));
    assert_eq!(v["mixed"], json!("P2"));
    assert_eq!(v["R-42"], json!(["#ops"]));
    assert_eq!(v["fixed"], json!(1));
}

#[test]
fn strict_json_errors_are_explained() {
    let e = JsonTemplate::parse_text("{'a': 1}").unwrap_err();
    assert_eq!(e.to_string(), "line 1 column 2: key must be a string (single quotes are not JSON)");
    let e = JsonTemplate::parse_text("{\"a\": 1,}").unwrap_err();
    assert!(e.to_string().contains("trailing comma"), "{e}");
    let e = JsonTemplate::parse_text("{\"a\": 1 // note\n}").unwrap_err();
    assert!(e.to_string().contains("comments are not JSON"), "{e}");
    // An unquoted placeholder standing for a whole value is read as if quoted.
    let t = JsonTemplate::parse_text("{\"a\": $this->ref$, \"n\": $this->priority$}").unwrap();
    let e = event();
    let ctx = RenderContext::new(&e, "t", "a", None);
    assert_eq!(t.render(&ctx), json!({"a": "R-42", "n": 2}));
    // Anything else around it is still refused, with the position.
    let e = JsonTemplate::parse_text("{\"a\": x$this->ref$}").unwrap_err();
    assert!(e.to_string().starts_with("line 1 column 7"), "{e}");
}

proptest! {
    #[test]
    fn any_string_substituted_into_json_stays_valid_and_round_trips(s in any::<String>()) {
        let doc = json!({
            "id": "p", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "C", "key": 1,
            "object": {"title": s.clone()}
        });
        let e = parse_event(doc.to_string().as_bytes(), None).unwrap();
        let ctx = RenderContext::new(&e, "t", "a", None);
        let t = JsonTemplate::parse_text(r#"{"title": "$this->title$", "wrapped": "<$this->title$>"}"#).unwrap();
        let bytes = serde_json::to_vec(&t.render(&ctx)).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(back["title"].as_str().unwrap(), s.as_str());
        let wrapped = format!("<{s}>");
        prop_assert_eq!(back["wrapped"].as_str().unwrap(), wrapped.as_str());
    }

    #[test]
    fn any_value_in_a_url_stays_one_component(s in any::<String>().prop_filter("dot-segments render empty", |s| s != "." && s != "..")) {
        let doc = json!({
            "id": "p", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "C", "key": 1,
            "object": {"v": s.clone()}
        });
        let e = parse_event(doc.to_string().as_bytes(), None).unwrap();
        let ctx = RenderContext::new(&e, "t", "a", None);
        let out = Template::parse("https://h.example.com/x/$this->v$").unwrap().render(&ctx, Escape::Url);
        let url = reqwest::Url::parse(&out).unwrap();
        prop_assert_eq!(url.path_segments().unwrap().count(), 2);
        let decoded = percent_encoding::percent_decode_str(url.path_segments().unwrap().nth(1).unwrap()).decode_utf8().unwrap();
        prop_assert_eq!(decoded.as_ref(), s.as_str());
    }
}

fn event_from(doc: serde_json::Value) -> Event {
    parse_event(doc.to_string().as_bytes(), None).unwrap()
}

fn render_with(e: &Event, text: &str) -> (String, Vec<String>) {
    let ctx = RenderContext::new(e, "trig", "act", None);
    let out = Template::parse(text).unwrap().render(&ctx, Escape::None);
    (out, ctx.missing())
}

#[test]
fn text_stays_text_unless_declared_html() {
    let e = event_from(json!({
        "id": "e", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest", "key": 1,
        "object": {"title": "How to fix the <p> tag", "bold": "<b>x</b>", "description": "<p>a &amp; <b>b</b></p>"},
        "formats": {"description": "html"}
    }));
    assert_eq!(render_with(&e, "$this->title$").0, "How to fix the <p> tag");
    assert_eq!(render_with(&e, "$this->text(title)$").0, "How to fix the <p> tag");
    assert_eq!(render_with(&e, "$this->html(title)$").0, "How to fix the &lt;p&gt; tag");
    assert_eq!(render_with(&e, "$this->html(bold)$").0, "&lt;b&gt;x&lt;/b&gt;");
    // Declared HTML: as is for html(), as text otherwise.
    assert_eq!(render_with(&e, "$this->html(description)$").0, "<p>a &amp; <b>b</b></p>");
    assert_eq!(render_with(&e, "$this->description$").0, "a & b");
    assert_eq!(render_with(&e, "$this->text(description)$").0, "a & b");
}

#[test]
fn case_log_placeholders_read_the_events_log_entry() {
    let e = event_from(json!({
        "id": "e", "time": "2026-11-28T09:00:00Z", "operation": "update", "class": "UserRequest", "key": 1,
        "object": {"ref": "R-1"},
        "log": {"attribute": "public_log", "entry": {"date": "2026-11-28 09:00:00", "user_login": "ada",
            "message": "Rebooted <the> server", "message_html": "<p>Rebooted &lt;the&gt; server</p>"}}
    }));
    assert_eq!(render_with(&e, "$this->head(public_log)$"), ("Rebooted <the> server".into(), vec![]));
    assert_eq!(render_with(&e, "$this->head_html(public_log)$").0, "<p>Rebooted &lt;the&gt; server</p>");
    assert_eq!(render_with(&e, "$this->html(public_log)$").0, "<p>Rebooted &lt;the&gt; server</p>");
    assert_eq!(render_with(&e, "$this->text(public_log)$").0, "2026-11-28 09:00:00 ada: Rebooted <the> server");
    assert_eq!(render_with(&e, "$this->public_log$").0, "2026-11-28 09:00:00 ada: Rebooted <the> server");
    // Another log than the event's: missing, reported.
    assert_eq!(render_with(&e, "$this->head(private_log)$"), (String::new(), vec!["$this->head(private_log)$".into()]));
}

#[test]
fn unknown_placeholders_are_refused_with_the_known_forms() {
    for (bad, hint) in [
        ("$current_date$", "no date or time placeholder"),
        ("$current_time$", "no date or time placeholder"),
        ("$current_contact_name$", "did you mean $current_contact->name$?"),
        ("$current_contact_firstname$", "did you mean $current_contact->first_name$?"),
        ("$SERVER_NAME$", "known forms"),
        ("$this->hyperlink(intranet)$", "hyperlink(portal)"),
        ("$org->name$", "known forms"),
    ] {
        let e = Template::parse(&format!("x {bad} y")).unwrap_err();
        assert_eq!(e.placeholder, bad);
        assert!(e.message.contains(hint), "{bad}: {}", e.message);
        assert!(e.to_string().contains("$MODULES_URL$") || bad.contains("hyperlink"), "{e}");
    }
    // Dollar signs that are not placeholders stay text.
    for text in ["costs $5 or $10", "$ 3 $", r#"{"$ref": "$defs"}"#] {
        assert!(Template::parse(text).unwrap().is_static(), "{text}");
    }
}

#[test]
fn constants_links_and_portal_forms() {
    let e = event_from(json!({
        "id": "e", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest", "key": 42,
        "object": {"ref": "R-42", "friendlyname": "R-42", "org_id": {"id": 3, "class": "Organization", "name": "Demo & Co"}},
        "source": {"url": "https://itop.example.com/",
            "portal_url": "https://itop.example.com/pages/exec.php?exec_module=itop-portal-base&exec_page=index.php&portal_id=itop-portal"}
    }));
    let portal = "https://itop.example.com/pages/exec.php/object/view/UserRequest/42?exec_module=itop-portal-base&exec_page=index.php&portal_id=itop-portal";
    assert_eq!(render_with(&e, "$APP_URL$").0, "https://itop.example.com/");
    assert_eq!(render_with(&e, "$MODULES_URL$").0, "https://itop.example.com/env-production/");
    assert_eq!(render_with(&e, "$this->url(portal)$").0, portal);
    assert_eq!(render_with(&e, "$this->url(itop-portal-view)$").0, portal);
    assert_eq!(render_with(&e, "$this->url(itop-portal-edit)$").0, portal.replace("/view/", "/edit/"));
    assert_eq!(
        render_with(&e, "$this->hyperlink(portal)$").0,
        format!("<a href=\"{}\">R-42</a>", portal.replace('&', "&amp;"))
    );
    assert_eq!(
        render_with(&e, "$this->org_id->hyperlink()$").0,
        "<a href=\"https://itop.example.com/pages/UI.php?operation=details&amp;class=Organization&amp;id=3\">Demo &amp; Co</a>"
    );
    assert_eq!(render_with(&e, "$this->org_id->name()$").0, "Demo & Co");
    // No portal in the event: missing, reported.
    let no_portal = event();
    assert_eq!(render_with(&no_portal, "$this->hyperlink(portal)$").1, vec!["$this->hyperlink(portal)$"]);
}

#[test]
fn form_and_xml_escaping() {
    let e = event_from(json!({
        "id": "e", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest", "key": 1,
        "object": {"title": "Q&A: 1+1=2? <ok> 'é'"}
    }));
    let ctx = RenderContext::new(&e, "t", "a", None);
    let t = Template::parse("title=$this->title$").unwrap();
    assert_eq!(t.render(&ctx, Escape::Form), "title=Q%26A%3A+1%2B1%3D2%3F+%3Cok%3E+%27%C3%A9%27");
    let t = Template::parse("<t a=\"$this->title$\">$this->title$</t>").unwrap();
    assert_eq!(
        t.render(&ctx, Escape::Xml),
        "<t a=\"Q&amp;A: 1+1=2? &lt;ok&gt; &apos;é&apos;\">Q&amp;A: 1+1=2? &lt;ok&gt; &apos;é&apos;</t>"
    );
}
