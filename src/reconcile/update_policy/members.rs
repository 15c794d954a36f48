//! Who a policy updates and what watches each of them. Pure.

use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use crate::{
    api::{GuestType, MonitorTarget, ProxmoxGuest, UpdateMember, UpdatePolicy},
    providers::pve::GuestKind,
};

/// A member: the guest, and the MonitorTargets aimed at it (its own `spec.monitor` included).
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub vmid: u32,
    pub kind: GuestKind,
    /// Its first address, as its status reports it.
    pub address: Option<String>,
    pub monitors: Vec<MonitorTarget>,
}

/// Whether `guest` belongs to `policy` (same namespace assumed).
pub fn selects(policy: &UpdatePolicy, guest: &ProxmoxGuest) -> Result<bool, String> {
    let named = guest
        .spec
        .updates
        .as_ref()
        .is_some_and(|u| Some(u.policy.as_str()) == policy.metadata.name.as_deref());
    let matched = match &policy.spec.selector {
        Some(s) => Selector::try_from(s.clone())
            .map_err(|e| format!("spec.selector: {e}"))?
            .matches(guest.labels()),
        None => false,
    };
    Ok(named || matched)
}

/// The members by name; guests not created yet (no VMID) join once they exist.
pub fn targets(policy: &UpdatePolicy, guests: &[ProxmoxGuest], monitors: &[MonitorTarget]) -> Result<Vec<Target>, String> {
    let mut out = vec![];
    for g in guests {
        let Some(vmid) = g.status.as_ref().and_then(|s| s.vmid) else {
            continue;
        };
        if !selects(policy, g)? {
            continue;
        }
        let name = g.name_any();
        let aimed = monitors
            .iter()
            .filter(|m| m.spec.target.as_ref().is_some_and(|t| t.kind != "ProxyHost" && t.name == name));
        out.push(Target {
            kind: match g.spec.guest_type {
                GuestType::Lxc => GuestKind::Lxc,
                GuestType::Qemu => GuestKind::Qemu,
            },
            monitors: aimed.cloned().collect(),
            address: g.status.as_ref().and_then(|s| s.ips.first().cloned()),
            name,
            vmid,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Status rows for the members: kept for those still members, added for new ones.
pub fn sync(rows: &mut Vec<UpdateMember>, targets: &[Target]) {
    let old = std::mem::take(rows);
    for t in targets {
        let row = old.iter().find(|m| m.name == t.name && m.vmid == t.vmid).cloned();
        rows.push(row.unwrap_or_else(|| UpdateMember {
            name: t.name.clone(),
            vmid: t.vmid,
            ..Default::default()
        }));
    }
}
