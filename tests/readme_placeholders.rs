//! The README's placeholder table is what hookbridge renders: every row's placeholder,
//! rendered for examples/placeholders.json, gives the row's example output.

use hookbridge::parse_event;
use hookbridge::render_event;
use hookbridge::Config;
use serde_json::json;

#[test]
fn every_row_of_the_readme_table_renders_as_shown() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let table = readme
        .split("<!-- placeholder-table:start -->")
        .nth(1)
        .and_then(|t| t.split("<!-- placeholder-table:end -->").next())
        .expect("the README holds the placeholder table");
    let rows: Vec<(String, String)> = table
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let code = |c: &str| c.trim_matches(['|', ' ']).strip_prefix('`')?.strip_suffix('`').map(str::to_string);
            Some((code(cells.first()?)?, code(cells.get(1)?)?))
        })
        .collect();
    assert!(rows.len() >= 25, "{rows:?}");
    let event = parse_event(&std::fs::read(format!("{root}/examples/placeholders.json")).unwrap(), None).unwrap();
    for (placeholder, expected) in rows {
        // A text/plain webhook sends the value as is: exactly what the table shows.
        // `$mentioned->…$` is fed by mention triggers.
        let on = if placeholder.starts_with("$mentioned->") { "mention" } else { "update" };
        let config = json!({
            "connections": {"c": {"url": "https://api.example.com"}},
            "actions": [{
                "name": "slack-ops", "type": "webhook", "connection": "c",
                "content_type": "text/plain", "payload": placeholder,
            }],
            "triggers": [{"name": "ticket-assigned", "on": on, "class": "Ticket", "actions": ["slack-ops"]}],
        });
        let config = Config::from_yaml(&config.to_string()).unwrap_or_else(|e| panic!("{placeholder}: {e}"));
        let out = render_event(&config, &event, None);
        let request = out.matched[0].request.as_ref().unwrap();
        assert_eq!(request.body, expected, "{placeholder}");
        assert!(out.matched[0].missing_placeholders.is_empty(), "{placeholder}");
    }
}
