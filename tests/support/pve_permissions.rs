//! What a PVE token needs for the calls the operator made: the schema's
//! `permissions.check` of each endpoint, evaluated against a role's privileges.

use std::collections::BTreeSet;

use serde_json::Value;

/// The `permissions` of `METHOD path` in `tests/data/pve-api-subset.json`.
fn permissions<'a>(subset: &'a Value, method: &str, path: &str) -> &'a Value {
    let endpoints = subset["endpoints"].as_array().expect("endpoints");
    let e = endpoints.iter().find(|e| e["method"] == method && e["path"] == path);
    &e.unwrap_or_else(|| panic!("{method} {path} not in the schema subset"))["permissions"]
}

/// Whether `privs` satisfy a `check` expression (`perm`, `and`, `or`; `any`).
fn satisfied(check: &Value, privs: &BTreeSet<String>) -> bool {
    let items = check.as_array().map_or(&[][..], |a| a.as_slice());
    match items.first().and_then(Value::as_str) {
        Some("perm") => {
            let wanted: Vec<&str> = items[2].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            let any = items.get(3).and_then(Value::as_str) == Some("any");
            if any {
                wanted.iter().any(|p| privs.contains(*p))
            } else {
                wanted.iter().all(|p| privs.contains(*p))
            }
        }
        Some("and") => items[1..].iter().all(|c| satisfied(c, privs)),
        Some("or") => items[1..].iter().any(|c| satisfied(c, privs)),
        // userid-group, userid-param…: not used by the calls we make.
        _ => true,
    }
}

/// Privileges named in an endpoint's free-text description (creation checks
/// are code, not a `check` expression; PVE documents them this way).
fn described(description: &str) -> Vec<String> {
    let re = regex::Regex::new(r"'((?:VM|Datastore|Sys|SDN|Pool)\.[A-Za-z.]+)'").unwrap();
    re.captures_iter(description).map(|c| c[1].to_string()).collect()
}

/// The calls (`METHOD /template`) whose required privileges `privs` lack, with what is missing.
pub fn unmet(subset: &Value, calls: &[String], privs: &BTreeSet<String>) -> Vec<String> {
    let mut out = vec![];
    for call in calls {
        let (method, path) = call.split_once(' ').unwrap();
        let info = permissions(subset, method, path);
        if let Some(check) = info.get("check")
            && !satisfied(check, privs)
        {
            out.push(format!("{call}: {check}"));
        }
        // Creation checks are code; the description says what they need
        // ("You need 'VM.Allocate' … You also need 'Datastore.AllocateSpace' …").
        let text = info.get("description").and_then(Value::as_str).unwrap_or_default();
        for p in described(text).into_iter().filter(|p| text.contains(&format!("need '{p}'"))) {
            if !privs.contains(&p) {
                out.push(format!("{call}: {p}"));
            }
        }
    }
    out
}
