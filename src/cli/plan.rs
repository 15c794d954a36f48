//! `plan`: every resource of the files observed read-only and planned, printed
//! like `terraform plan` (or as JSON for bots).

use std::sync::Arc;

use super::{FilesArgs, PlanOutput, backups, oneshot::Engine, resources};
use crate::{
    config::Config,
    metrics::Metrics,
    reconcile::{
        Change,
        kind::{Kind, Lookup, display_name},
    },
};

/// One resource's part of a plan, as printed and as `--output json` gives it.
#[derive(serde::Serialize, Default)]
struct PlanEntry {
    kind: &'static str,
    name: String,
    /// `create`, `update`, `reboot`, `delete`, `pending`, `blocked` or `waiting`, with what.
    changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Exit 0: nothing to do; 2: changes pending; 1: error.
pub async fn run(a: FilesArgs) -> anyhow::Result<i32> {
    let config = Config::load(&a.config.config)?;
    let loaded = resources::load(&a.files)?;
    let engine = Engine::new(&config, Arc::new(Metrics::default()))?;
    // References resolve to the resources of the files, with the status they carry.
    let files = loaded.files();
    let mut entries = plan_all(&engine, &loaded.guests, &files).await;
    entries.extend(plan_all(&engine, &loaded.records(), &files).await);
    entries.extend(plan_all(&engine, &loaded.proxies(), &files).await);
    entries.extend(plan_all(&engine, &loaded.policies, &files).await);
    entries.extend(plan_all(&engine, &loaded.monitors(), &files).await);
    entries.extend(plan_all(&engine, &loaded.updates, &files).await);
    loaded.report_skipped();
    match a.output {
        PlanOutput::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        PlanOutput::Text => {
            print_plan(&entries);
            let clusters: std::collections::BTreeSet<&str> = loaded.policies.iter().map(|p| p.spec.cluster.as_str()).collect();
            for c in clusters {
                if let Some(line) = backups::unprotected_line(&engine, c).await {
                    println!("{line}");
                }
            }
        }
    }
    let failed = entries.iter().any(|e| e.error.is_some());
    // Adopting writes only the ownership marks: listed, but not a change to wait for.
    let pending = entries.iter().flat_map(|e| &e.changes).any(Change::changes_anything);
    Ok(if failed {
        1
    } else if pending {
        2
    } else {
        0
    })
}

async fn plan_all<K: Kind>(engine: &Engine, objs: &[K], lookup: &dyn Lookup) -> Vec<PlanEntry> {
    let mut entries = vec![];
    for o in objs {
        let mut e = PlanEntry {
            kind: K::KIND,
            name: display_name(o),
            ..Default::default()
        };
        match engine.plan(o, lookup).await {
            Ok(out) => e.changes = K::changes(&out),
            Err(err) => e.error = Some(err.to_string()),
        }
        entries.push(e);
    }
    entries
}

fn print_plan(entries: &[PlanEntry]) {
    for e in entries {
        match (&e.error, e.changes.is_empty()) {
            (Some(err), _) => println!("{} {}: error: {err}", e.kind, e.name),
            (None, _) if !e.changes.iter().any(Change::changes_anything) && !e.changes.is_empty() => {
                let why = match e.changes.iter().all(|c| c.op == "adopt") {
                    true => "adopted as it is",
                    false => "what its next run would do",
                };
                println!("{} {}: no changes ({why}):", e.kind, e.name);
                for c in &e.changes {
                    println!("  {} {}", c.symbol, c.what);
                }
            }
            (None, true) => println!("{} {}: no changes", e.kind, e.name),
            (None, false) => {
                println!("{} {}:", e.kind, e.name);
                for c in &e.changes {
                    println!("  {} {}", c.symbol, c.what);
                }
            }
        }
    }
    let count = |op: &str| entries.iter().flat_map(|e| &e.changes).filter(|c| c.op == op).count();
    println!(
        "\nPlan: {} to create, {} to update, {} reboots, {} to delete, {} pending, {} blocked, {} to adopt.",
        count("create"),
        count("update"),
        count("reboot"),
        count("delete"),
        count("pending"),
        count("blocked"),
        count("adopt")
    );
}
