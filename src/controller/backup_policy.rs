//! What a BackupPolicy needs of Kubernetes around the shared reconcile: its
//! metrics, and which policies a guest's change concerns.

use futures::future::BoxFuture;
use kube::{
    ResourceExt,
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    context::Context,
    driver::{Controlled, Reconciled},
    shared::Error,
};
use crate::{
    api::{BackupPolicy, ProxmoxGuest},
    metrics::MemberBackup,
    reconcile::backup_policy::members,
};

impl Controlled for BackupPolicy {
    fn after_reconcile<'a>(&'a self, ctx: &'a Context, result: &'a mut Reconciled<Self>) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if let Ok(out) = result {
                count_unprotected(ctx, &self.spec.cluster).await;
                export_metrics(ctx, self, &out.status.members);
            }
            Ok(())
        })
    }

    fn before_cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), Error>> {
        export_metrics(ctx, self, &[]);
        Box::pin(async { Ok(()) })
    }
}

/// The cluster-wide "guests in no backup job" gauge, read at most once per
/// `--drift-interval` per cluster, whichever policy comes first.
async fn count_unprotected(ctx: &Context, cluster: &str) {
    use crate::providers::pve::PveApi;
    let key = format!("not-backed-up/{cluster}");
    let Ok(api) = ctx.providers.pve(cluster) else { return };
    if !ctx.drift.due(&key) {
        return;
    }
    match api.not_backed_up().await {
        Ok(list) => {
            let labels = crate::metrics::ClusterLabels {
                cluster: cluster.to_string(),
            };
            ctx.metrics.guests_not_backed_up.get_or_create(&labels).set(list.len() as i64);
            ctx.drift.mark_read(&key);
        }
        Err(e) => tracing::debug!(error = %e, cluster, "reading the guests in no backup job"),
    }
}

/// The per-member backup series (`…_backup_last_success_timestamp_seconds`, `…_age_seconds`, `…_fresh`).
fn export_metrics(ctx: &Context, p: &BackupPolicy, members: &[crate::api::BackupMember]) {
    let series: Vec<MemberBackup> = members
        .iter()
        .map(|m| MemberBackup {
            guest: m.name.clone().unwrap_or_else(|| format!("vmid-{}", m.vmid)),
            last_success: m
                .newest
                .as_ref()
                .and_then(|b| b.time.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second()),
            fresh: m.fresh,
        })
        .collect();
    let now = jiff::Timestamp::now().as_second();
    ctx.metrics
        .set_backups(&p.namespace().unwrap_or_default(), &p.name_any(), &series, now);
}

/// The policies a guest belongs to, by selector or by name (for `Controller::watches`):
/// a guest created, relabelled or given its VMID updates the job's VMID list.
pub fn policies_of(store: &Store<DeserializeGuard<BackupPolicy>>, guest: &ProxmoxGuest) -> Vec<ObjectRef<DeserializeGuard<BackupPolicy>>> {
    // A guest that left a policy must update it too: every policy of the
    // namespace that selects it now, or lists it in status.
    let name = guest.name_any();
    super::shared::concerning(store, guest, |p: &BackupPolicy| {
        members::selects(p, guest).unwrap_or(false)
            || p.status
                .as_ref()
                .is_some_and(|s| s.members.iter().any(|m| m.name.as_deref() == Some(name.as_str())))
    })
}

/// What makes a guest a member of a policy (backup or update): labels,
/// `spec.backup`, `spec.updates`, VMID, node and state. Other changes
/// (addresses, conditions) keep the key.
pub fn membership_key(g: &ProxmoxGuest) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    g.metadata.labels.hash(&mut h);
    g.spec.backup.as_ref().map(|b| &b.policy).hash(&mut h);
    g.spec.updates.as_ref().map(|u| &u.policy).hash(&mut h);
    let s = g.status.as_ref();
    (
        s.and_then(|s| s.vmid),
        s.and_then(|s| s.node.as_ref()),
        s.and_then(|s| s.state.as_ref()),
    )
        .hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_membership_changes_change_the_key() {
        let mut g: ProxmoxGuest = serde_yaml_ng::from_str(
            "apiVersion: homelab.dev/v1alpha1\nkind: ProxmoxGuest\nmetadata: {name: web, labels: {backup: nightly}}\n\
             spec: {type: lxc, memoryMiB: 512, source: {osTemplate: 'local:vztmpl/x.tar.zst'}}\n",
        )
        .unwrap();
        let before = membership_key(&g);
        g.status = Some(crate::api::ProxmoxGuestStatus {
            ips: vec!["10.0.0.5".into()],
            ..Default::default()
        });
        assert_eq!(membership_key(&g), before, "addresses do not matter");
        g.status.as_mut().unwrap().vmid = Some(101);
        let with_vmid = membership_key(&g);
        assert_ne!(with_vmid, before, "a VMID makes it a member");
        g.metadata.labels = Some([("backup".to_string(), "weekly".to_string())].into());
        assert_ne!(membership_key(&g), with_vmid, "relabelling moves it");
    }
}
