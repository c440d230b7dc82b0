//! The module graph of `src/`, as ARCHITECTURE.md describes it: no cycle between the
//! crate's top-level modules (folders and single files), counting every `crate::…` path
//! outside comments and test code. A cycle means two parts can no longer be read, changed
//! or tested one without the other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module each non-test source file belongs to, and the top-level modules
/// it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).unwrap();
        let name = rel.file_name().unwrap().to_str().unwrap();
        if !name.ends_with(".rs") || name == "tests.rs" || name == "main.rs" || name == "lib.rs" {
            continue;
        }
        let top = rel.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests at the end of a file may use anything.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let from = edges.entry(top.clone()).or_default();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let module: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !module.is_empty() && module != top {
                    from.insert(module);
                }
            }
        }
    }
    edges
}

/// The modules reachable from `start`.
fn reachable(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = edges.get(start).into_iter().flatten().map(String::as_str).collect();
    while let Some(m) = todo.pop() {
        if seen.insert(m.to_string()) {
            todo.extend(edges.get(m).into_iter().flatten().map(String::as_str));
        }
    }
    seen
}

#[test]
fn no_two_top_level_modules_depend_on_each_other() {
    let edges = graph();
    assert!(edges.contains_key("config") && edges.contains_key("source"), "the walk found the modules: {edges:?}");
    let cycles: Vec<String> = edges
        .iter()
        .flat_map(|(from, to)| to.iter().map(move |t| (from, t)))
        .filter(|(from, to)| reachable(&edges, to).contains(from.as_str()))
        .map(|(from, to)| format!("{from} -> {to} (and back)"))
        .collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_walk_sees_a_cycle_when_there_is_one() {
    let mut edges = graph();
    // `source` reads the compiled config; a path back from config would close a cycle.
    assert!(reachable(&edges, "source").contains("config"));
    edges.entry("config".into()).or_default().insert("source".into());
    assert!(reachable(&edges, "config").contains("config"));
}
