//! What an UpdatePolicy needs of Kubernetes around the shared reconcile: its
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
    api::{ProxmoxGuest, UpdatePolicy, UpdatePolicyStatus, UpdateResult},
    reconcile::update_policy::members,
};

impl Controlled for UpdatePolicy {
    fn after_reconcile<'a>(&'a self, ctx: &'a Context, result: &'a mut Reconciled<Self>) -> BoxFuture<'a, Result<(), Error>> {
        if let Ok(out) = result {
            export_metrics(ctx, self, Some(&out.status));
        }
        Box::pin(async { Ok(()) })
    }

    fn before_cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), Error>> {
        export_metrics(ctx, self, None);
        Box::pin(async { Ok(()) })
    }
}

const RESULTS: [(UpdateResult, &str); 6] = [
    (UpdateResult::Updated, "Updated"),
    (UpdateResult::RolledBack, "RolledBack"),
    (UpdateResult::Failed, "Failed"),
    (UpdateResult::Skipped, "Skipped"),
    (UpdateResult::Checked, "Checked"),
    (UpdateResult::UpToDate, "UpToDate"),
];

/// `guest_updates_pending` per member, `update_last_run_members` per result (`None`: drop them).
fn export_metrics(ctx: &Context, p: &UpdatePolicy, status: Option<&UpdatePolicyStatus>) {
    let members = status.map_or(&[][..], |s| &s.members[..]);
    let pending: Vec<(String, Option<u32>)> = members
        .iter()
        .map(|m| (m.name.clone(), m.checked.is_some().then_some(m.pending)))
        .collect();
    let run = status.and_then(|s| s.run.as_ref()).filter(|r| r.finished.is_some());
    let counts: Vec<(&'static str, usize)> = match run {
        None => vec![],
        Some(r) => RESULTS
            .iter()
            .map(|(result, label)| {
                let n = members
                    .iter()
                    .filter(|m| m.last_run.as_ref().is_some_and(|l| l.run == r.id && l.result == Some(*result)))
                    .count();
                (*label, n)
            })
            .collect(),
    };
    ctx.metrics
        .set_updates(&p.namespace().unwrap_or_default(), &p.name_any(), &pending, &counts);
}

/// The policies a guest belongs to, by selector or by name, or that list it (for `Controller::watches`).
pub fn policies_of(store: &Store<DeserializeGuard<UpdatePolicy>>, guest: &ProxmoxGuest) -> Vec<ObjectRef<DeserializeGuard<UpdatePolicy>>> {
    let name = guest.name_any();
    super::shared::concerning(store, guest, |p: &UpdatePolicy| {
        members::selects(p, guest).unwrap_or(false) || p.status.as_ref().is_some_and(|s| s.members.iter().any(|m| m.name == name))
    })
}
