//! The shape the code keeps as it grows: modules do not import each other in
//! circles (at the top level, and among the modules of one top-level module),
//! and functions fit on a screen or two. Read from `src/` as text: a new module
//! or function is checked the day it lands.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Longest function body allowed outside tests.
const MAX_FN_LINES: usize = 80;
/// The simulators' routing tables: one match arm per endpoint, long by nature.
const ROUTING_TABLES: &[(&str, &str)] = &[
    ("sim/pve/routes.rs", "dispatch"),
    ("sim/pve/firewall.rs", "firewall"),
    ("sim/npm/mod.rs", "respond"),
];

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// `src/a/b.rs` → `["a", "b"]`; `src/a/mod.rs` → `["a"]`.
fn module_of(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).unwrap();
    let mut parts: Vec<String> = rel.with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file before its test module, without line comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` tree names: `a::{b, c::{d}}` → `a::b`, `a::c::d`.
fn expand(tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(tree.split(" as ").next().unwrap_or_default().to_string());
        return;
    };
    let (prefix, body) = (&tree[..open], &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())]);
    let (mut depth, mut current) = (0, String::new());
    for ch in body.chars().chain([',']) {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            if !current.is_empty() {
                expand(&format!("{prefix}{current}"), out);
            }
            current.clear();
        } else {
            current.push(ch);
        }
    }
}

/// The modules a file refers to, as absolute module paths.
fn references(path: &Path) -> BTreeSet<Vec<String>> {
    let code = code(path);
    let mut paths = vec![];
    let use_re = regex::Regex::new(r"\buse\s+([^;]+);").unwrap();
    for c in use_re.captures_iter(&code) {
        expand(&c[1].split_whitespace().collect::<String>(), &mut paths);
    }
    let inline = regex::Regex::new(r"\b(?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+").unwrap();
    paths.extend(inline.find_iter(&code).map(|m| m.as_str().to_string()));
    let me = module_of(path);
    paths
        .iter()
        .filter_map(|p| {
            let parts: Vec<&str> = p.split("::").collect();
            match parts.first() {
                Some(&"crate") => Some(parts[1..].iter().map(|s| s.to_string()).collect()),
                Some(&"super") => {
                    // In `a/b.rs` and in `a/b/mod.rs` alike, `super` is `a`.
                    let supers = parts.iter().take_while(|s| **s == "super").count();
                    let base = &me[..me.len().saturating_sub(supers)];
                    Some(base.iter().cloned().chain(parts[supers..].iter().map(|s| s.to_string())).collect())
                }
                _ => None,
            }
        })
        .collect()
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut vec![], &mut done))
}

fn is_module(parts: &[String]) -> bool {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(parts.join("/"));
    base.is_dir() || base.with_extension("rs").is_file()
}

#[test]
fn modules_do_not_import_each_other_in_circles() {
    let edges: Vec<(Vec<String>, Vec<String>)> = sources()
        .iter()
        .flat_map(|p| references(p).into_iter().map(move |r| (module_of(p), r)))
        .collect();
    // Between top-level modules.
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in &edges {
        if let (Some(a), Some(b)) = (from.first(), to.first())
            && a != b
            && is_module(&to[..1])
        {
            top.entry(a.clone()).or_default().insert(b.clone());
        }
    }
    assert_eq!(cycle(&top), None, "top-level modules import each other in a circle");
    // Between the modules of one top-level module (a parent and its children are not a circle).
    let parents: BTreeSet<&String> = edges.iter().filter_map(|(f, _)| f.first()).collect();
    for parent in parents {
        let mut inner: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in &edges {
            if from.len() >= 2 && to.len() >= 2 && &from[0] == parent && &to[0] == parent && from[1] != to[1] && is_module(&to[..2]) {
                inner.entry(from[1].clone()).or_default().insert(to[1].clone());
            }
        }
        assert_eq!(cycle(&inner), None, "modules of {parent}/ import each other in a circle");
    }
}

/// `(lines, file, function)` for every function body in `path` before its tests.
fn functions(path: &Path) -> Vec<(usize, String, String)> {
    let rel = path
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let strings = regex::Regex::new(r#""(\\.|[^"\\])*"|'(\\.|[^'\\])'"#).unwrap();
    let start = regex::Regex::new(r"^\s*(pub(\([^)]*\))? )?(async )?(const )?(unsafe )?fn (\w+)").unwrap();
    let lines: Vec<String> = code(path).lines().map(|l| strings.replace_all(l, "\"\"").into_owned()).collect();
    let mut out = vec![];
    for (i, l) in lines.iter().enumerate() {
        let Some(m) = start.captures(l) else { continue };
        let (mut depth, mut opened) = (0i32, false);
        for (j, body) in lines[i..].iter().enumerate() {
            if !opened && body.contains(';') && !body.contains('{') {
                break;
            }
            for ch in body.chars() {
                match ch {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                out.push((j + 1, rel.clone(), m[6].to_string()));
                break;
            }
        }
    }
    out
}

#[test]
fn functions_fit_on_a_screen_or_two() {
    let long: Vec<_> = sources()
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with("tests.rs"))
        .flat_map(|p| functions(p))
        .filter(|(n, file, name)| *n > MAX_FN_LINES && !ROUTING_TABLES.contains(&(file.as_str(), name.as_str())))
        .collect();
    assert!(long.is_empty(), "functions over {MAX_FN_LINES} lines (split them): {long:?}");
}

#[test]
fn the_checks_see_what_they_check() {
    // The scanners find the code they judge: a known circle-free pair and a known long routing table.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let refs = references(&src.join("controller/driver.rs"));
    assert!(
        refs.contains(&vec!["controller".to_string(), "context".to_string(), "Context".to_string()]),
        "{refs:?}"
    );
    assert!(
        refs.iter().any(|r| r.starts_with(&["reconcile".to_string(), "kind".to_string()])),
        "{refs:?}"
    );
    let routes = functions(&src.join("sim/pve/routes.rs"));
    assert!(routes.iter().any(|(n, _, f)| f == "dispatch" && *n > MAX_FN_LINES), "{routes:?}");
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "a".into()]));
}
