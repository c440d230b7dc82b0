//! Rich text: what an attribute's HTML becomes in plain text and in each chat service's
//! markup, with escaping in one place.
//!
//! - [`escape`]: HTML escaping, entity decoding, HTML to plain text.
//! - [`html`]: HTML values (attributes the event declares HTML, case-log entries) parsed
//!   with a real HTML parser (html5ever) and written back as the well-formed subset the
//!   chat converter reads. Plain-text values never go through it.
//!
//! Only what the event declares HTML (`formats`) or what a placeholder makes HTML
//! (`html(…)`, `head_html(…)`, `hyperlink()`) is read as markup; nothing is guessed from
//! a value's content.

pub mod escape;
pub mod html;

pub use escape::{decode_entities, html_escape, html_to_text};
