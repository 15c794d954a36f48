//! Who a policy backs up: the ProxmoxGuests its selector matches, those that
//! name it in `spec.backup.policy`, and the VMIDs it lists. Pure.

use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use super::freshness::Member;
use crate::api::{BackupPolicy, ProxmoxGuest};

/// Whether `guest` belongs to `policy` (same namespace assumed).
pub fn selects(policy: &BackupPolicy, guest: &ProxmoxGuest) -> Result<bool, String> {
    let named = guest
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| Some(b.policy.as_str()) == policy.metadata.name.as_deref());
    let matched = match &policy.spec.selector {
        Some(s) => {
            let selector = Selector::try_from(s.clone()).map_err(|e| format!("spec.selector: {e}"))?;
            selector.matches(guest.labels())
        }
        None => false,
    };
    Ok(named || matched)
}

/// The members, by VMID order. Guests not created yet (no VMID) are left
/// out until they exist; a VMID listed and selected counts once.
pub fn members(policy: &BackupPolicy, guests: &[ProxmoxGuest]) -> Result<Vec<Member>, String> {
    let mut out: Vec<Member> = vec![];
    for g in guests {
        if !selects(policy, g)? {
            continue;
        }
        let Some(status) = &g.status else { continue };
        let Some(vmid) = status.vmid.filter(|_| status.state.as_deref() != Some("absent")) else {
            continue;
        };
        out.push(Member {
            name: Some(g.name_any()),
            vmid,
            node: status.node.clone(),
        });
    }
    for v in &policy.spec.vmids {
        if !out.iter().any(|m| m.vmid == *v) {
            out.push(Member {
                name: None,
                vmid: *v,
                node: None,
            });
        }
    }
    out.sort_by_key(|m| m.vmid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(name: &str, labels: &str, extra: &str, vmid: Option<u32>) -> ProxmoxGuest {
        let mut g: ProxmoxGuest = serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: ProxmoxGuest\nmetadata: {{name: {name}, namespace: homelab, labels: {labels}}}\n\
             spec:\n  type: lxc\n  memoryMiB: 512\n  source: {{osTemplate: 'local:vztmpl/x.tar.zst'}}\n{extra}"
        ))
        .unwrap();
        g.status = vmid.map(|v| crate::api::ProxmoxGuestStatus {
            vmid: Some(v),
            node: Some("pve1".into()),
            state: Some("running".into()),
            ..Default::default()
        });
        g
    }

    fn policy(spec: &str) -> BackupPolicy {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly, namespace: homelab}}\n\
             spec:\n  schedule: '02:30'\n  storage: pbs1\n  retention: {{keepLast: 3}}\n{spec}"
        ))
        .unwrap()
    }

    #[test]
    fn selector_name_and_vmids_each_bring_members_once() {
        let guests = [
            guest("web01", "{backup: nightly}", "", Some(101)),
            guest("db01", "{backup: weekly}", "  backup: {policy: nightly}\n", Some(102)),
            guest("lab", "{backup: weekly}", "", Some(103)),
            guest("new", "{backup: nightly}", "", None),
            guest("gone", "{backup: nightly, tier: x}", "", Some(104)),
        ];
        let p = policy(
            "  selector: {matchLabels: {backup: nightly}, matchExpressions: [{key: tier, operator: DoesNotExist}]}\n  vmids: [101, 250]\n",
        );
        let m = members(&p, &guests).unwrap();
        let got: Vec<(Option<&str>, u32)> = m.iter().map(|m| (m.name.as_deref(), m.vmid)).collect();
        assert_eq!(got, [(Some("web01"), 101), (Some("db01"), 102), (None, 250)]);
        assert_eq!(m[0].node.as_deref(), Some("pve1"));
    }

    #[test]
    fn without_a_selector_only_named_guests_and_vmids_count() {
        let guests = [guest("web01", "{backup: nightly}", "", Some(101))];
        assert!(members(&policy("  vmids: [300]\n"), &guests).unwrap().iter().all(|m| m.vmid == 300));
    }
}
