//! The demo's updates: the example UpdatePolicy run now over the example
//! VMs it selects, each behind a snapshot and validated by its monitors,
//! whose checks reach a stand-in of the guest's web service on loopback (as
//! the demo's monitors do). app01's update is made to break its service on
//! the simulator, so app01 is rolled back; web01 keeps its update.

use std::sync::Arc;

use super::{
    oneshot::{Engine, Files, table},
    resources::Loaded,
};
use crate::{
    api::{MonitorTarget, UpdatePolicy, UpdateResult},
    reconcile::kind::display_name,
    sim::{
        notify::NotifySim,
        pve::{PveSim, stand_in_web_server},
    },
};

/// The guest the demo breaks.
const BREAKS: &str = "app01";

/// The monitors aimed at running simulated guests, pointed at stand-ins of their services.
async fn monitors_on_loopback(loaded: &Loaded, sim: &Arc<PveSim>) -> anyhow::Result<Vec<MonitorTarget>> {
    let mut out = vec![];
    for mut m in loaded.monitors() {
        let Some(guest) = m.spec.target.as_ref().map(|t| t.name.clone()) else {
            continue;
        };
        let Some(g) = sim.guests().into_iter().find(|g| g.get("name").as_deref() == Some(&guest)) else {
            continue;
        };
        let addr = stand_in_web_server(sim.clone(), g.vmid, std::net::Ipv4Addr::LOCALHOST.into()).await?;
        if let Some(h) = m.spec.http.as_mut() {
            h.url = Some(format!("http://{addr}/"));
        }
        out.push(m);
    }
    Ok(out)
}

/// True when the run went as the demo says: app01 rolled back, the others updated, one message.
pub async fn run(engine: &Engine, loaded: &Loaded, files: &Files, sim: &Arc<PveSim>, chat: &NotifySim) -> anyhow::Result<bool> {
    let Some(policy) = loaded.updates.first() else { return Ok(true) };
    let mut p: UpdatePolicy = policy.clone();
    println!(
        "\n== {}: update now (kubectl annotate upd {} homelab.dev/update-now=demo); {BREAKS}'s update breaks its web service (on the simulator)",
        display_name(&p),
        p.metadata.name.as_deref().unwrap_or("")
    );
    p.metadata
        .annotations
        .get_or_insert_default()
        .insert(crate::api::UPDATE_NOW_ANNOTATION.into(), "demo".into());
    // The example waits five minutes for a broken guest to come back; the demo does not.
    p.spec.validation.timeout_seconds = 5;
    if let Some(g) = sim.guests().into_iter().find(|g| g.get("name").as_deref() == Some(BREAKS)) {
        sim.edit_os(g.vmid, |os| os.update_breaks_service = true);
    }
    let lookup = Files::new(&files.guests(), &loaded.proxies()).with_monitors(monitors_on_loopback(loaded, sim).await?);
    let progress = |line: &str| println!("   {line}");
    let r = engine.apply(&p, &lookup, std::time::Duration::from_secs(120), &progress).await;
    println!("\n{}\n", table::<UpdatePolicy>(std::slice::from_ref(&r)));
    for m in &r.status.members {
        let Some(run) = &m.last_run else { continue };
        println!(
            "   {:<8} {:?}: {} packages changed, snapshot {}{}",
            m.name,
            run.result.unwrap_or(UpdateResult::Skipped),
            run.packages_changed,
            run.snapshot.as_deref().unwrap_or("-"),
            run.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    for msg in chat.received() {
        println!("   telegram: {}", msg.text.replace('\n', " | "));
    }
    let result = |name: &str| {
        r.status
            .members
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.last_run.as_ref()?.result)
    };
    let others_updated = r
        .status
        .members
        .iter()
        .filter(|m| m.name != BREAKS)
        .all(|m| m.last_run.as_ref().and_then(|l| l.result) == Some(UpdateResult::Updated));
    Ok(result(BREAKS) == Some(UpdateResult::RolledBack) && others_updated && chat.received().len() == 1)
}
