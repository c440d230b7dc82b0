//! Rich text: what an attribute's HTML becomes in plain text and in each chat service's
//! markup, with escaping in one place.
//!
//! - [`escape`]: HTML and XML escaping, entity decoding, HTML to plain text.
//! - [`chat`]: a rendered chat message (the user's text, HTML, fenced values) to each chat
//!   service's markup ([`chat::Dialect`]), and truncation to a service's limits.
//! - [`html`]: HTML values (attributes the event declares HTML, case-log entries) parsed
//!   with a real HTML parser (html5ever) and written back as the well-formed subset the
//!   chat converter reads. Plain-text values never go through it.
//!
//! Only what the event declares HTML (`formats`) or what a placeholder makes HTML
//! (`html(…)`, `head_html(…)`, `hyperlink()`) is read as markup; nothing is guessed from
//! a value's content.

pub mod chat;
pub mod escape;
pub mod html;

pub use escape::{decode_entities, html_escape, html_to_text, xml_escape_into};

/// What a substituted value holds, for the chat markup escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Text: shown as written, never read as markup.
    Text,
    /// HTML from the event (an attribute declared HTML, a case-log entry): parsed as HTML.
    Html,
    /// Well-formed HTML written here (a link, an escaped text value).
    OwnHtml,
}

/// Where a substituted value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The event: the object, the actor, previous values, names.
    Event,
    /// `$mentioned->…$`: the contact a mention trigger fired for.
    Mentioned,
}
