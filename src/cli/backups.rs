//! What `plan` and the demo show of backups beyond the policies' own rows:
//! each member's newest backup, and the guests in no backup job.

use super::oneshot::{Applied, Engine, render_table};
use crate::api::BackupPolicyStatus;

/// `cluster default: 2 guests in no backup job: 102 lab-installer, 105 (unnamed)` for `plan`.
pub async fn unprotected_line(engine: &Engine, cluster: &str) -> Option<String> {
    use crate::providers::pve::PveApi;
    let list = engine.providers.pve.get(cluster)?.not_backed_up().await.ok()?;
    let each: Vec<String> = list
        .iter()
        .map(|g| format!("{} {}", g.vmid, g.name.as_deref().unwrap_or("(unnamed)")))
        .collect();
    Some(match each.is_empty() {
        true => format!("cluster {cluster}: every guest is in a backup job"),
        false => format!("cluster {cluster}: {} guests in no backup job: {}", each.len(), each.join(", ")),
    })
}

/// Per member: NAME, VMID, NEWEST, VERIFIED, FRESH.
pub fn members_table(r: &Applied<BackupPolicyStatus>) -> String {
    let mut rows = vec![["GUEST", "VMID", "NEWEST BACKUP", "VERIFIED", "FRESH"].map(String::from)];
    for m in &r.status.members {
        let newest = m.newest.as_ref();
        rows.push([
            format!("{}/{}", r.name, m.name.clone().unwrap_or_else(|| "-".into())),
            m.vmid.to_string(),
            newest.map_or("-".into(), |b| b.time.clone()),
            newest.and_then(|b| b.verified.clone()).unwrap_or_else(|| "-".into()),
            m.fresh.to_string(),
        ]);
    }
    render_table(&rows)
}
