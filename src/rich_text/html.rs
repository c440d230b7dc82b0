//! HTML values parsed with html5ever (through `scraper`), as browsers parse them: editor
//! output (CKEditor in iTop: nested lists, tables, entities) and broken markup alike come
//! out as one well-formed tree, written back with only the elements and attributes a chat
//! message can show.

use ego_tree::iter::Edge;
use scraper::{Html, Node};

use super::escape::html_escape;

/// Elements whose content is never shown.
const HIDDEN: [&str; 9] = ["script", "style", "template", "head", "title", "noscript", "iframe", "object", "svg"];

/// Elements without content (no closing tag is written).
const VOID: [&str; 6] = ["br", "hr", "img", "input", "col", "wbr"];

/// Attributes kept: a link's target, an ordered list's first number.
const KEPT_ATTRIBUTES: [&str; 2] = ["href", "start"];

/// Parses `html` as an HTML fragment and writes it back well-formed: every element closed
/// and properly nested, text and attribute values escaped, comments, scripts and styles
/// dropped, attributes other than `href` and `start` left out.
pub fn normalise(html: &str) -> String {
    let doc = Html::parse_fragment(html);
    let mut out = String::with_capacity(html.len() + 16);
    // Inside a hidden element: the depth of elements opened since.
    let mut hidden = 0usize;
    // The traversal is iterative: deep nesting cannot exhaust the stack.
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                // A no-break space is written as its entity, which the converters read as a space.
                Node::Text(t) if hidden == 0 => out.push_str(&html_escape(t).replace('\u{a0}', "&nbsp;")),
                Node::Element(e) => {
                    let name = e.name();
                    if hidden > 0 || HIDDEN.contains(&name) {
                        hidden += 1;
                    } else if name != "html" {
                        out.push('<');
                        out.push_str(name);
                        for attr in KEPT_ATTRIBUTES {
                            if let Some(v) = e.attr(attr) {
                                out.push(' ');
                                out.push_str(attr);
                                out.push_str("=\"");
                                out.push_str(&html_escape(v));
                                out.push('"');
                            }
                        }
                        out.push('>');
                    }
                }
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(e) = node.value() {
                    let name = e.name();
                    if hidden > 0 {
                        hidden -= 1;
                    } else if name != "html" && !VOID.contains(&name) {
                        out.push_str("</");
                        out.push_str(name);
                        out.push('>');
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_output_and_broken_markup_come_out_well_formed() {
        assert_eq!(normalise("<p>a &amp; b<p>c"), "<p>a &amp; b</p><p>c</p>");
        assert_eq!(normalise("<b>bold <i>both</b> italic</i>"), "<b>bold <i>both</i></b><i> italic</i>");
        assert_eq!(normalise("x<!-- c --><script>alert(1)</script><style>p{}</style>y"), "xy");
        assert_eq!(
            normalise("<ul><li>one<ul><li>nested</li></ul></li><li>two</ul>"),
            "<ul><li>one<ul><li>nested</li></ul></li><li>two</li></ul>"
        );
        assert_eq!(
            normalise("<table><tr><td>k<td>v</table>"),
            "<table><tbody><tr><td>k</td><td>v</td></tr></tbody></table>"
        );
        assert_eq!(normalise("&eacute;&nbsp;&lt;x&gt; &#128512;"), "é&nbsp;&lt;x&gt; 😀");
        assert_eq!(
            normalise("<a href=\"https://x.example/?a=1&amp;b=2\" onclick=\"evil()\" class=c>l</a><br>"),
            "<a href=\"https://x.example/?a=1&amp;b=2\">l</a><br>"
        );
        assert_eq!(normalise("a < b > c"), "a &lt; b &gt; c");
        let deep = "<div>".repeat(5000) + "x";
        assert!(normalise(&deep).contains('x'));
    }
}
