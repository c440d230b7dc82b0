//! The fuzz targets' short pass: every input kept in `fuzz/corpus/<target>/` (what the
//! fuzzers found interesting, and the inputs of fixed crashes) runs through the same target
//! bodies as `cargo fuzz run`, on the stable toolchain, in seconds.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus for {target}");
    for path in inputs {
        let data = std::fs::read(&path).expect("corpus file");
        let name = path.display().to_string();
        std::panic::catch_unwind(|| body(&data)).unwrap_or_else(|_| panic!("{target} fails on {name}"));
    }
}

#[test]
fn event_parse() {
    replay("event_parse", targets::event_parse);
}

#[test]
fn config_load() {
    replay("config_load", targets::config_load);
}

#[test]
fn placeholder_render() {
    replay("placeholder_render", targets::placeholder_render);
}

#[test]
fn chat_markup() {
    replay("chat_markup", targets::chat_markup);
}

#[test]
fn url_mask() {
    replay("url_mask", targets::url_mask);
}

#[test]
fn cel_eval() {
    replay("cel_eval", targets::cel_eval);
}
